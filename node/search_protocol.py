"""Federated search (``/dre/search/1.0.0``): the trio side of :mod:`dre.protocol.search_wire`.

::

    service = serve_search(handle, lambda: state.search)        # answer peers' queries
    result = await federated_search(service, query, local, deadline=trio.current_time() + 2)
    # or, for the HTTP route: both searches at once, one deadline
    result = await search_with_peers(service, state.search, query, timeout=2.0)

Wire format, limits and merge rules are in ``specs/search.md``; this module moves bytes and time:

* **Answering.** One stream per query: read the request (bounded in size and time), run the
  local engine in a worker thread (it may touch SQLite or the model) under the request's time
  budget, write one answer, close. At most :data:`MAX_INFLIGHT_PER_PEER` queries per peer and
  :data:`MAX_INFLIGHT` in all run at once; more get a polite ``refused`` ("busy").
* **Asking.** Every connected peer is asked at once, each under the same absolute deadline
  (``trio.move_on_at``). A peer without an answer by then is reported in ``timed_out`` and its
  stream is reset in the background: the result is never held for it. A peer that answers
  garbage (malformed, oversized, more hits than asked, a manifest twice) has its stream reset,
  is penalized :data:`FAULT_PENALTY`, its hits are dropped and it is reported in ``failed``; at
  :data:`PENALTY_LIMIT` it is neither asked nor answered any more. Refusals, unreachable peers
  and timeouts cost nothing: none proves misbehaviour.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
from dre.protocol.errors import DreError, RemoteProtocolError, ValidationError
from dre.protocol.search import SearchHit, SearchQuery, SearchResult, validate_query
from dre.protocol.search_wire import (
    DEFAULT_DEADLINE,
    MAX_BUDGET_MS,
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    PROTOCOL_ID,
    REQUEST_TIMEOUT,
    VERSION,
    FederatedResult,
    PeerFailure,
    SearchAnswer,
    SearchRefused,
    SearchRequest,
    answer_for,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    fuse_hits,
    hits_from_answer,
    query_of,
    request_for,
    widened_query,
)
from libp2p.network.stream.exceptions import StreamError

from . import compat
from .compat import NetworkError
from .host import HostHandle

if TYPE_CHECKING:
    from trio_typing import TaskStatus
else:
    TaskStatus = trio.TaskStatus

__all__ = [
    "FAULT_PENALTY",
    "MAX_INFLIGHT",
    "MAX_INFLIGHT_PER_PEER",
    "PENALTY_LIMIT",
    "PeerAnswers",
    "SearchEngineLike",
    "SearchPeerStats",
    "SearchService",
    "federated_search",
    "run_search_protocol",
    "search_with_peers",
    "serve_search",
]

_log = logging.getLogger("dre.node.search")

#: A malformed answer or request (bad frame, out of bounds, more hits than asked).
FAULT_PENALTY: Final = 50
#: A peer at this score is neither asked nor answered.
PENALTY_LIMIT: Final = 100
#: Queries from one peer answered at once; one more gets ``refused`` ("busy").
MAX_INFLIGHT_PER_PEER: Final = 2
#: Queries answered at once in all (worker threads running the engine).
MAX_INFLIGHT: Final = 8
# Bound of cleaning up a stream inline when no background nursery runs (tests, tools).
_INLINE_CLEANUP: Final = 0.25
# Bound of a background reset: short, so a stopping node is not held by a wedged peer.
_BACKGROUND_CLEANUP: Final = 1.0
# Extra time a responder gives its write past the request's budget (the answer is on its way).
_WRITE_GRACE: Final = 1.0


class SearchEngineLike(Protocol):
    """What serving needs of :class:`dre.node.search_engine.SearchEngine`."""

    def search(self, query: SearchQuery) -> SearchResult: ...


@dataclass
class SearchPeerStats:
    """What federated search did with one peer, for penalties, status output and tests."""

    #: Queries this peer sent us, and how many we answered with hits.
    served: int = 0
    answered_to: int = 0
    #: Queries we sent this peer, and their fates.
    asked: int = 0
    answers: int = 0
    timeouts: int = 0
    failures: int = 0
    penalty: int = 0
    reasons: list[str] = field(default_factory=list)


@dataclass
class PeerAnswers:
    """The peers' side of one federated search, before the merge."""

    #: Peer -> its hits (``source`` set to the peer), best first.
    answers: dict[str, list[SearchHit]] = field(default_factory=dict)
    timed_out: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class _Refused(DreError):
    """Internal: the peer said no politely."""


class SearchService:
    """Answers peers' queries and asks peers; see the module docstring.

    ``engine()`` returns the node's search engine, or None while none runs (queries are then
    refused). ``network`` defaults to the host's: a query from another network is refused.
    """

    def __init__(
        self,
        handle: HostHandle,
        engine: Callable[[], SearchEngineLike | None],
        *,
        network: str | None = None,
        max_inflight_per_peer: int = MAX_INFLIGHT_PER_PEER,
        max_inflight: int = MAX_INFLIGHT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        if not math.isfinite(request_timeout) or request_timeout <= 0:
            raise ValueError("request_timeout must be a positive number of seconds")
        if max_inflight_per_peer < 1 or max_inflight < 1:
            raise ValueError("concurrency limits must be at least 1")
        self.handle = handle
        self.network = compat.validate_network_name(network or handle.network)
        self._engine = engine
        self.request_timeout = request_timeout
        self.max_inflight_per_peer = max_inflight_per_peer
        self._threads = trio.CapacityLimiter(max_inflight)
        self._inflight: collections.Counter[str] = collections.Counter()
        #: Per peer ID.
        self.stats: dict[str, SearchPeerStats] = {}
        # Set while run() runs: resets of abandoned streams go there instead of delaying anyone.
        self._background: trio.Nursery | None = None
        # Without it, streams to reset once the fan-out is over (bounded, after the deadline).
        self._inline_resets: list[Any] = []

    # -- peer scores ---------------------------------------------------------------------------

    def peer_stats(self, peer_id: str) -> SearchPeerStats:
        """Counters for ``peer_id`` (created empty on first use)."""
        return self.stats.setdefault(peer_id, SearchPeerStats())

    def banned(self, peer_id: str) -> bool:
        """Whether ``peer_id`` scored :data:`PENALTY_LIMIT` or more."""
        stats = self.stats.get(peer_id)
        return stats is not None and stats.penalty >= PENALTY_LIMIT

    def _penalize(self, peer_id: str, reason: str) -> None:
        stats = self.peer_stats(peer_id)
        stats.penalty += FAULT_PENALTY
        if len(stats.reasons) < 100:  # bounded: a hostile peer could otherwise grow it forever
            stats.reasons.append(reason)
        _log.info("peer %s penalized %d by search: %s", peer_id, FAULT_PENALTY, reason)

    # -- lifecycle -----------------------------------------------------------------------------

    def install(self) -> None:
        """Answer peers' queries (register the stream handler)."""
        self.handle.set_stream_handler(PROTOCOL_ID, self._handle_inbound)

    def uninstall(self) -> None:
        """Stop answering (new query streams are refused by multistream-select)."""
        self.handle.remove_stream_handler(PROTOCOL_ID)

    async def run(self, shutdown: trio.Event, *,
                  task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``shutdown`` is set; meanwhile streams abandoned at a deadline are reset
        in this task's nursery, off every caller's path."""
        async with trio.open_nursery() as nursery:
            self._background = nursery
            self.install()
            task_status.started()
            try:
                await shutdown.wait()
            finally:
                self._background = None
                self.uninstall()
                nursery.cancel_scope.cancel()

    # -- answering -------------------------------------------------------------------------------

    async def _handle_inbound(self, stream: Any) -> None:
        peer = _remote_peer(stream)
        if self.banned(peer):
            await _reset(stream)
            return
        if self._inflight[peer] >= self.max_inflight_per_peer:
            await self._refuse(stream, "busy: too many queries from you at once")
            return
        self._inflight[peer] += 1
        try:
            await self._answer(peer, stream)
        finally:
            self._inflight[peer] -= 1
            if not self._inflight[peer]:
                del self._inflight[peer]

    async def _answer(self, peer: str, stream: Any) -> None:
        stats = self.peer_stats(peer)
        stats.served += 1
        with trio.move_on_after(self.request_timeout) as waited:
            try:
                data = await compat.read_until_eof(
                    stream, MAX_REQUEST_BYTES + 2)  # + the varint of the length
                request = decode_request(data)
            except RemoteProtocolError as exc:
                self._penalize(peer, f"bad request: {exc}")
                await _reset(stream)
                return
            except NetworkError as exc:
                _log.debug("search request from %s broke: %s", peer, exc)
                await _reset(stream)
                return
        if waited.cancelled_caught:  # slow or silent: nobody's provable fault
            await _reset(stream)
            return
        if request.version != VERSION:
            await self._refuse(stream, f"this node speaks search version {VERSION}")
            return
        if request.network != self.network:
            await self._refuse(stream, f"this node is on network {self.network!r}")
            return
        engine = self._engine()
        if engine is None:
            await self._refuse(stream, "search is not running on this node")
            return
        budget = request.budget_ms / 1000
        with trio.move_on_after(budget) as timer:
            try:
                result = await trio.to_thread.run_sync(
                    # trio-typing's stubs predate the name (trio >= 0.23 has it).
                    engine.search, query_of(request), limiter=self._threads,
                    abandon_on_cancel=True)  # type: ignore[call-arg]
            except DreError as exc:  # e.g. a query this engine rejects: the peer hears why
                await self._refuse(stream, str(exc))
                return
        if timer.cancelled_caught:
            # The requester has stopped waiting; an answer now would only be read and dropped.
            await _reset(stream)
            return
        frame = encode_response(answer_for(result, request.query.limit))
        if await _write_all(stream, frame, budget + _WRITE_GRACE):
            stats.answered_to += 1
            with trio.move_on_after(_WRITE_GRACE):
                # NetworkError: the peer reset first; it had what it wanted or gave up.
                with contextlib.suppress(NetworkError):
                    await compat.half_close(stream)
        else:
            await _reset(stream)

    async def _refuse(self, stream: Any, reason: str) -> None:
        if await _write_all(stream, encode_response(SearchRefused(reason)), _WRITE_GRACE):
            with trio.move_on_after(_WRITE_GRACE):
                with contextlib.suppress(NetworkError):
                    await compat.half_close(stream)
        else:
            await _reset(stream)

    # -- asking ----------------------------------------------------------------------------------

    async def ask_peers(self, query: SearchQuery, *, deadline: float) -> PeerAnswers:
        """Ask every connected peer for ``query`` at once; return at ``deadline`` (absolute
        ``trio.current_time()``) at the latest, with whoever answered by then."""
        validate_query(query)
        out = PeerAnswers()
        remaining_ms = math.floor((deadline - trio.current_time()) * 1000)
        peers = sorted(set(self.handle.connected_peers()) - {self.handle.peer_id})
        if not peers:
            return out
        if remaining_ms < 1:
            out.timed_out = peers
            return out
        request = request_for(query, network=self.network,
                              budget_ms=min(remaining_ms, MAX_BUDGET_MS))
        frame = encode_request(request)

        async def ask(peer: str) -> None:
            if self.banned(peer):
                out.failed[peer] = "not asked: penalized for earlier bad answers"
                return
            stats = self.peer_stats(peer)
            stats.asked += 1
            with trio.move_on_at(deadline):
                try:
                    out.answers[peer] = await self._ask(peer, request, frame)
                    stats.answers += 1
                except DreError as exc:
                    stats.failures += 1
                    out.failed[peer] = str(exc)
                except Exception as exc:
                    # A py-libp2p surprise on one stream must not fail the user's search.
                    _log.warning("federated search: asking %s failed", peer, exc_info=True)
                    stats.failures += 1
                    out.failed[peer] = f"stream to {peer} failed: {type(exc).__name__}"
                return
            stats.timeouts += 1
            out.timed_out.append(peer)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer)
        out.timed_out.sort()
        return out

    async def _ask(self, peer: str, request: SearchRequest, frame: bytes) -> list[SearchHit]:
        stream = await self.handle.open_stream(peer, [PROTOCOL_ID])
        try:
            try:
                await stream.write(frame)
                await compat.half_close(stream)
            except StreamError as exc:
                raise NetworkError(f"stream to {peer} broke: {type(exc).__name__}") from exc
            data = await compat.read_until_eof(stream, MAX_RESPONSE_BYTES + 3)
            response = decode_response(data, request)
        except RemoteProtocolError as exc:
            self._penalize(peer, str(exc))
            self._discard(stream)
            raise RemoteProtocolError(f"bad answer from {peer}: {exc}") from None
        except BaseException:
            # Timed out (cancelled at the deadline) or broken: reset, but off our path.
            self._discard(stream)
            raise
        await _close_soon(self, stream)
        if isinstance(response, SearchRefused):
            # The peer's words reach a terminal: no control characters.
            raise _Refused(f"{peer} refused: {_printable(response.reason)}")
        assert isinstance(response, SearchAnswer)
        return hits_from_answer(response, peer)

    def _discard(self, stream: Any) -> None:
        if self._background is not None:
            self._background.start_soon(_reset, stream, _BACKGROUND_CLEANUP)
        else:
            self._inline_resets.append(stream)

    async def _flush_inline(self) -> None:
        pending, self._inline_resets = self._inline_resets, []
        for stream in pending:
            await _reset(stream, bound=_INLINE_CLEANUP)

    async def search(
        self, query: SearchQuery, local: SearchResult, *, deadline: float
    ) -> FederatedResult:
        """Ask the peers (see :meth:`ask_peers`) and merge their hits with ``local``, this
        node's result for :func:`~dre.protocol.search_wire.widened_query` of ``query``."""
        peers = await self.ask_peers(query, deadline=deadline)
        await self._flush_inline()
        return merge_result(query, local, peers)


def merge_result(query: SearchQuery, local: SearchResult, peers: PeerAnswers) -> FederatedResult:
    """The :class:`FederatedResult` of ``local`` and the peers' answers for ``query``."""
    merged = fuse_hits(local.hits, peers.answers, sort=query.sort)
    return FederatedResult(
        query=query,
        hits=merged[query.offset : query.offset + query.limit],
        total=len(merged),
        mode=local.mode,
        answered=sorted(peers.answers),
        timed_out=sorted(peers.timed_out),
        failed=[PeerFailure(peer, reason) for peer, reason in sorted(peers.failed.items())],
        notice=local.notice,
    )


# -- entry points ----------------------------------------------------------------------------------


def serve_search(
    handle: HostHandle, engine: Callable[[], SearchEngineLike | None], **options: Any
) -> SearchService:
    """A :class:`SearchService` on ``handle`` that already answers peers' queries."""
    service = SearchService(handle, engine, **options)
    service.install()
    return service


async def federated_search(
    service: SearchService, query: SearchQuery, local: SearchResult, *, deadline: float
) -> FederatedResult:
    """``local`` merged with every connected peer's answer by ``deadline`` (absolute trio
    time); see :meth:`SearchService.search`."""
    return await service.search(query, local, deadline=deadline)


async def run_search_protocol(
    service: SearchService, shutdown: trio.Event, *,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The node service: answer peers' queries until ``shutdown`` is set."""
    await service.run(shutdown, task_status=task_status)


async def search_with_peers(
    service: SearchService | None,
    engine: SearchEngineLike | None,
    query: SearchQuery,
    *,
    timeout: float = DEFAULT_DEADLINE,  # noqa: ASYNC109 (a budget handed to peers, not a wait)
) -> FederatedResult:
    """What ``GET /api/v1/search?federated=1`` answers: this node's search and the peers'
    at once, merged, within ``timeout`` seconds (peers late by then are reported, not awaited).

    ``service`` None (no libp2p host) searches this node only and says so in ``notice``.
    Raises :class:`ValidationError` for a bad query or timeout (HTTP 400), :class:`DreError`
    when no engine runs (HTTP 503), and whatever the engine raises for a query it rejects.
    """
    validate_query(query)
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_BUDGET_MS / 1000):
        raise ValidationError(f"timeout must be more than 0 and at most {MAX_BUDGET_MS // 1000} s")
    if engine is None:
        raise DreError("search is not running on this node")
    deadline = trio.current_time() + timeout
    local_query = widened_query(query)
    results: dict[str, Any] = {}

    async def run_local() -> None:
        results["local"] = await trio.to_thread.run_sync(engine.search, local_query)

    async def run_peers() -> None:
        if service is not None:
            results["peers"] = await service.ask_peers(query, deadline=deadline)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_local)
            nursery.start_soon(run_peers)
    except BaseExceptionGroup as group:
        # Only the local search can raise here (ask_peers reports per peer): its error, plain.
        errors = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
        if len(errors) == 1:
            raise errors[0] from None
        raise
    if service is not None:
        await service._flush_inline()
    local: SearchResult = results["local"]
    peers: PeerAnswers = results.get("peers", PeerAnswers())
    result = merge_result(query, local, peers)
    if service is None:
        note = "libp2p is off on this node: only its own index was searched"
        result.notice = f"{result.notice}; {note}" if result.notice else note
    return result


# -- stream helpers --------------------------------------------------------------------------------


async def _write_all(stream: Any, data: bytes, seconds: float) -> bool:
    """Write ``data`` within ``seconds``; False if the peer stopped reading or the stream broke."""
    with trio.move_on_after(seconds):
        try:
            for start in range(0, len(data), compat.PREFERRED_WRITE_SIZE):
                await stream.write(data[start : start + compat.PREFERRED_WRITE_SIZE])
        except StreamError:
            return False
        return True
    return False


async def _close_soon(service: SearchService, stream: Any) -> None:
    # The answer is complete (EOF seen): closing frees the stream; off the path when possible.
    if service._background is not None:
        service._background.start_soon(_close, stream)
    else:
        await _close(stream)


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _remote_peer(stream: Any) -> str:
    try:
        return str(stream.muxed_conn.peer_id)
    except Exception:  # a stream without a connection is not one py-libp2p gives handlers
        return "?"


async def _reset(stream: Any, bound: float = 5.0) -> None:
    """Best-effort reset, shielded and bounded: it runs on the way out of cancelled work."""
    with trio.CancelScope(shield=True), trio.move_on_after(bound):
        try:
            await stream.reset()
        except Exception:
            _log.debug("stream reset failed", exc_info=True)


async def _close(stream: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        try:
            await stream.close()
        except Exception:
            _log.debug("stream close failed", exc_info=True)
