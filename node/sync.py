"""Anti-entropy sync (``/dre/sync/1.0.0``): the thin trio adapter around :mod:`dre.protocol.sync`.

::

    service = SyncService(handle, network="main", catalog=registry.record_cids,
                          get_record=get_envelope, accept=accept_at_now)
    service.install()                      # answer peers' sessions
    summary = await service.sync_with(peer_id)   # or: nursery.start_soon(service.sync_loop, ...)

All protocol logic (reconciliation, limits, timeouts, which messages are legal) lives in the
sans-IO :class:`~dre.protocol.sync.SyncSession`; this module only moves bytes and time:

* **Reading.** A helper task reads the stream into an unbuffered memory channel and the driver
  receives from it under a short timeout, then calls ``tick``. The reader is never cancelled
  mid-read while the session still runs: py-libp2p's Yamux ``read`` awaits *after* taking bytes
  out of its buffer (window updates), so cancelling it can lose data; cancelling a channel
  ``receive`` cannot.
* **Time.** ``now`` is ``trio.current_time()`` minus the time spent on our own work (accepting,
  reading the store), so only the peer's delays count against it. The session enforces the
  per-message and whole-session timeouts (a silent peer ends in
  :class:`~dre.protocol.sync.ProtocolFailure`); a hard cancel scope slightly longer than the
  session timeout, in real time, also bounds what the session cannot see (a peer that stops
  reading so our ``write`` blocks, a slow store).
* **Faults.** ``next_event`` raising :class:`RemoteProtocolError` or :class:`IntegrityError` means
  the peer misbehaved: the stream is reset, the peer penalized, the session ends with that error.
  A record the node refuses (``accept`` raising :class:`AuthorizationError` or another
  :class:`DreError` that is not an integrity failure) costs a small penalty once per record and
  the session goes on; one that fails verification (``IntegrityError``: bad signature or
  encoding) is an integrity failure and fatal, as in the protocol.
* **Order of records.** Records arrive in digest order, so a scoped manifest can come before the
  scope record that authorizes it. A refused record is therefore retried whenever a later one is
  accepted in the same session, and only penalized if it is still refused at the end.
* **Store access.** ``catalog`` and ``get_record`` run inline: LMDB reads take microseconds, less
  than a thread hop (as in :class:`dre.node.blockexchange.StoreAdapter`). ``accept`` writes LMDB
  transactions that may fsync, so it runs in a worker thread, one batch at a time under a service-
  wide lock: :class:`~dre.storage.registry.LocalRegistry` checks and then writes, which is only
  correct if no other accept runs in between.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from dre.protocol.cid import CID, Block, cid_to_bytes, verify_block
from dre.protocol.errors import DreError, IntegrityError, RemoteProtocolError
from dre.protocol.records import MAX_RECORD_BYTES
from dre.protocol.sync import (
    MESSAGE_TIMEOUT,
    PROTOCOL_ID,
    SESSION_TIMEOUT,
    Done,
    NeedData,
    ProtocolFailure,
    RecordsReceived,
    RecordsWanted,
    SendBytes,
    SyncSession,
    SyncSummary,
)
from libp2p.network.stream.exceptions import StreamError

from . import compat
from .compat import NetworkError
from .host import HostHandle

__all__ = [
    "FAULT_PENALTY",
    "INTEGRITY_PENALTY",
    "MAX_INBOUND_SESSIONS",
    "PENALTY_LIMIT",
    "REFUSED_RECORD_PENALTY",
    "SyncFailed",
    "SyncPeerStats",
    "SyncService",
]

_log = logging.getLogger("dre.node.sync")

#: A peer whose score reaches this is no longer synced with, in either direction.
PENALTY_LIMIT: Final = 100
#: Bytes that do not hash to what was asked for, or a record that fails verification: one is enough.
INTEGRITY_PENALTY: Final = 100
#: A protocol violation (malformed or out-of-turn message, over a limit, early end of stream).
FAULT_PENALTY: Final = 50
#: A well-formed record the node refuses (not authorized, conflicts with what it holds). Small,
#: and counted once per record: a stale but honest peer offers the same refused record each time.
REFUSED_RECORD_PENALTY: Final = 5
#: Sessions answered at once; more are reset (no penalty: the peer may simply try again later).
MAX_INBOUND_SESSIONS: Final = 8
#: Refused record CIDs remembered per peer, so each is penalized once (bounded memory).
_MAX_REFUSED_REMEMBERED: Final = 4096
# Refused records retried after progress in a batch (the oldest refusals first).
_MAX_RETRY: Final = 256
# Extra time past the session timeout before the hard cap cancels a session the state machine
# cannot see stuck (a blocked write, a slow store).
_HARD_CAP_GRACE: Final = 5.0
# Bound of one write: a peer that does not read fills the Yamux window and blocks us.
_WRITE_TIMEOUT: Final = MESSAGE_TIMEOUT


class SyncFailed(DreError):
    """A session ended without a result through no provable fault of the peer.

    A silent peer (per-message timeout), a session over its time, a polite ``abort`` (another
    network or version), a full responder, or a broken stream. ``reason`` says which.
    """

    def __init__(self, peer_id: str, reason: str) -> None:
        super().__init__(f"sync with {peer_id} failed: {reason}")
        self.peer_id = peer_id
        self.reason = reason


@dataclass
class SyncPeerStats:
    """What sessions with one peer did, for penalties, status output and tests."""

    #: Sessions started with this peer, as initiator or responder.
    sessions: int = 0
    #: Sessions that did not end in ``Done`` (timeouts, faults, broken streams).
    failures: int = 0
    #: Record blocks received whose bytes matched their CIDs.
    records_received: int = 0
    #: ... of which the node stored as new (``accept`` returned True).
    records_accepted: int = 0
    #: Records sent to this peer.
    records_sent: int = 0
    penalty: int = 0
    reasons: list[str] = field(default_factory=list)
    #: Binary CIDs of refused records already penalized once.
    refused: set[bytes] = field(default_factory=set)


class _PeerFault(DreError):
    """Internal: the peer misbehaved; carries the error to re-raise and the penalty."""

    def __init__(self, error: DreError, points: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.points = points


class SyncService:
    """Catalog exchange with peers over ``/dre/sync/1.0.0``; see the module docstring.

    ``catalog()`` returns our record envelope CIDs (any order: the session sorts them);
    ``get_record(cid)`` the envelope bytes of one of them, or None if it is gone; ``accept(block)``
    stores a received record and returns whether it was new, raising :class:`IntegrityError` for
    a record that fails verification and another :class:`DreError` (typically
    ``AuthorizationError``) for one the node refuses. ``accept`` runs in a worker thread.
    """

    def __init__(
        self,
        handle: HostHandle,
        *,
        network: str,
        catalog: Callable[[], Sequence[CID]],
        get_record: Callable[[CID], bytes | None],
        accept: Callable[[Block], bool],
        message_timeout: float = MESSAGE_TIMEOUT,
        session_timeout: float = SESSION_TIMEOUT,
        max_inbound: int = MAX_INBOUND_SESSIONS,
    ) -> None:
        for label, value in (("message_timeout", message_timeout),
                             ("session_timeout", session_timeout)):
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{label} must be a positive number of seconds")
        self.handle = handle
        self.network = compat.validate_network_name(network)
        self._catalog = catalog
        self._get_record = get_record
        self._accept = accept
        self.message_timeout = message_timeout
        self.session_timeout = session_timeout
        #: Per peer ID.
        self.stats: dict[str, SyncPeerStats] = {}
        # How often a waiting session is told the time: often enough that a timeout fires within
        # a small fraction of it, rarely enough to cost nothing.
        self._tick = min(1.0, message_timeout / 4)
        self._accept_lock = trio.Lock()
        self._inbound = trio.CapacityLimiter(max_inbound)
        self._inbound_peers: set[str] = set()

    # -- peer scores ---------------------------------------------------------------------------

    def peer_stats(self, peer_id: str) -> SyncPeerStats:
        """Counters for ``peer_id`` (created empty on first use)."""
        return self.stats.setdefault(peer_id, SyncPeerStats())

    def banned(self, peer_id: str) -> bool:
        """Whether ``peer_id`` scored :data:`PENALTY_LIMIT` or more (no more sessions)."""
        stats = self.stats.get(peer_id)
        return stats is not None and stats.penalty >= PENALTY_LIMIT

    def _penalize(self, peer_id: str, points: int, reason: str) -> None:
        stats = self.peer_stats(peer_id)
        was_banned = stats.penalty >= PENALTY_LIMIT
        stats.penalty += points
        if len(stats.reasons) < 100:  # bounded: a hostile peer could otherwise grow it forever
            stats.reasons.append(reason)
        if not was_banned and stats.penalty >= PENALTY_LIMIT:
            _log.warning("peer %s banned from sync: %s", peer_id, reason)
        else:
            _log.info("peer %s penalized %d by sync: %s", peer_id, points, reason)

    # -- entry points --------------------------------------------------------------------------

    def install(self) -> None:
        """Answer other peers' sync sessions (register the responder stream handler)."""
        self.handle.set_stream_handler(PROTOCOL_ID, self._handle_inbound)

    async def sync_with(self, peer_id: str) -> SyncSummary:
        """Run one session with ``peer_id`` as initiator; both sides end with the union.

        Raises :class:`RemoteProtocolError` / :class:`IntegrityError` if the peer misbehaved (it
        is penalized), :class:`SyncFailed` for a session without a result that is nobody's
        provable fault (timeout, abort, broken stream, a banned peer), and
        :class:`NetworkError` if no stream could be opened.
        """
        if self.banned(peer_id):
            raise SyncFailed(peer_id, "peer is banned from sync after misbehaving")
        stream = await self.handle.open_stream(peer_id, [PROTOCOL_ID])
        return await self._run("initiator", peer_id, stream)

    async def sync_loop(self, peers: Callable[[], list[str]], interval: float) -> None:
        """Sync with every peer ``peers()`` returns, one at a time, then wait ``interval`` s.

        Runs until cancelled. Each session is bounded by the session timeout; a failing peer is
        logged and skipped (its penalty stays), banned peers are not asked. The first round starts
        at once, so a node that was offline catches up when it comes back.
        """
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError("interval must be a positive number of seconds")
        while True:
            for peer_id in list(dict.fromkeys(peers())):
                if self.banned(peer_id):
                    continue
                try:
                    summary = await self.sync_with(peer_id)
                except DreError as error:
                    _log.info("anti-entropy with %s: %s", peer_id, error)
                    continue
                if summary.received or summary.sent:
                    _log.info("anti-entropy with %s: received %d, sent %d records", peer_id,
                              summary.received, summary.sent)
            await trio.sleep(interval)

    async def _handle_inbound(self, stream: Any) -> None:
        peer_id = _remote_peer(stream)
        # A banned peer, a second session from a peer already in one, or one over the cap: reset
        # at once. Only the first costs the peer anything (it was penalized before).
        if self.banned(peer_id) or peer_id in self._inbound_peers:
            await _reset(stream)
            return
        try:
            self._inbound.acquire_on_behalf_of_nowait(stream)
        except trio.WouldBlock:
            await _reset(stream)
            return
        self._inbound_peers.add(peer_id)
        try:
            await self._run("responder", peer_id, stream)
        except DreError as error:
            # Already handled (stream reset, peer penalized, counted): the node keeps running,
            # so return normally instead of letting the host log a traceback.
            _log.debug("sync session from %s ended: %s", peer_id, error)
        finally:
            self._inbound_peers.discard(peer_id)
            self._inbound.release_on_behalf_of(stream)

    # -- one session ---------------------------------------------------------------------------

    async def _run(self, role: str, peer_id: str, stream: Any) -> SyncSummary:
        """Drive one session on ``stream``; own it (closed or reset on return)."""
        stats = self.peer_stats(peer_id)
        stats.sessions += 1
        try:
            session = SyncSession(
                "initiator" if role == "initiator" else "responder",
                self._catalog(),
                network=self.network,
                now=trio.current_time(),
                message_timeout=self.message_timeout,
                session_timeout=self.session_timeout,
            )
        except BaseException:
            await _reset(stream)
            raise
        try:
            with trio.move_on_after(self.session_timeout + _HARD_CAP_GRACE) as cap:
                summary = await self._drive(session, peer_id, stream)
            if cap.cancelled_caught:
                raise SyncFailed(peer_id, "session exceeded its time limit")
        except _PeerFault as fault:
            stats.failures += 1
            self._penalize(peer_id, fault.points, str(fault.error))
            await _reset(stream)
            raise fault.error from None
        except BaseException:
            stats.failures += 1
            await _reset(stream)
            raise
        stats.records_sent += summary.sent
        # Both sides are done: a half-close lets the peer read our last bytes, then EOF.
        with trio.move_on_after(self.message_timeout):
            # NetworkError: the peer closed first; nothing of ours was left to deliver.
            with contextlib.suppress(NetworkError):
                await compat.half_close(stream)
        await _close(stream)
        return summary

    async def _drive(self, session: SyncSession, peer_id: str, stream: Any) -> SyncSummary:
        """Run the session with a reader task beside it; errors leave unwrapped."""
        refused: dict[bytes, tuple[Block, DreError]] = {}
        send, receive = trio.open_memory_channel[bytes | NetworkError](0)
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_reader, stream, send)
            try:
                summary = await self._loop(session, peer_id, stream, receive, refused)
            except Exception as error:
                # Raised after the nursery: from inside, trio would wrap it in an ExceptionGroup.
                failure = error
            finally:
                self._penalize_refused(peer_id, refused)
                # The reader may be blocked in a read: the session is over, losing bytes is fine.
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return summary

    async def _loop(
        self,
        session: SyncSession,
        peer_id: str,
        stream: Any,
        receive: trio.MemoryReceiveChannel[bytes | NetworkError],
        refused: dict[bytes, tuple[Block, DreError]],
    ) -> SyncSummary:
        # The session's clock leaves out the time we spend on our own work (accepting records,
        # reading the store): a deadline for the peer's next message must not run out because
        # our disk was slow. The hard cap in _run still bounds the session in real time.
        own_work = 0.0

        def now() -> float:
            return trio.current_time() - own_work

        while True:
            try:
                event = session.next_event()
            except IntegrityError as error:
                raise _PeerFault(
                    IntegrityError(f"sync with {peer_id}: {error}"), INTEGRITY_PENALTY
                ) from None
            except RemoteProtocolError as error:
                raise _PeerFault(
                    RemoteProtocolError(f"sync with {peer_id}: {error}"), FAULT_PENALTY
                ) from None
            if isinstance(event, NeedData):
                with trio.move_on_after(self._tick):
                    try:
                        item = await receive.receive()
                    except trio.EndOfChannel:  # the session always fails at EOF first
                        raise SyncFailed(peer_id, "stream ended") from None
                    if isinstance(item, NetworkError):
                        raise SyncFailed(peer_id, str(item))
                    # The time first: the next deadline counts from when this data arrived.
                    session.tick(now())
                    session.receive_data(item)
                    continue
                session.tick(now())
            elif isinstance(event, SendBytes):
                await _write(stream, event.data, peer_id)
            elif isinstance(event, RecordsWanted):
                started = trio.current_time()
                session.send_records(self._records_for(event.cids))
                own_work += trio.current_time() - started
            elif isinstance(event, RecordsReceived):
                started = trio.current_time()
                await self._take(peer_id, event.blocks, refused)
                own_work += trio.current_time() - started
            elif isinstance(event, Done):
                return event.summary
            else:
                assert isinstance(event, ProtocolFailure)
                raise SyncFailed(peer_id, event.reason)

    def _records_for(self, cids: Sequence[CID]) -> list[Block]:
        """Our envelope blocks for a peer's want; gone or corrupt ones are left out (the peer
        counts them missing): a bad block in our own store is not the peer's problem."""
        blocks: list[Block] = []
        for cid in cids:
            data = self._get_record(cid)
            if data is None or len(data) > MAX_RECORD_BYTES:
                continue
            try:
                verify_block(cid, data)
            except IntegrityError:
                _log.error("record %s in our store does not match its CID; not sent", cid)
                continue
            blocks.append(Block(cid, data))
        return blocks

    async def _take(
        self, peer_id: str, blocks: Sequence[Block], refused: dict[bytes, tuple[Block, DreError]]
    ) -> None:
        """Hand received blocks to ``accept``; retry refused ones while others get in."""
        stats = self.peer_stats(peer_id)
        stats.records_received += len(blocks)
        todo = list(blocks)
        while todo:
            async with self._accept_lock:
                results = await trio.to_thread.run_sync(_accept_all, self._accept, todo)
            progress = False
            for block, outcome in results:
                key = cid_to_bytes(block.cid)
                if isinstance(outcome, IntegrityError):
                    raise _PeerFault(
                        IntegrityError(f"sync with {peer_id}: record {block.cid}: {outcome}"),
                        INTEGRITY_PENALTY,
                    )
                if isinstance(outcome, DreError):
                    refused[key] = (block, outcome)
                    continue
                refused.pop(key, None)
                progress = True
                if outcome:
                    stats.records_accepted += 1
            # A newly accepted record (a scope record, say) may authorize one refused before.
            # Bounded: a peer must not make us re-verify thousands of refused records per batch.
            todo = [block for block, _ in refused.values()][:_MAX_RETRY] if progress else []

    def _penalize_refused(self, peer_id: str, refused: dict[bytes, tuple[Block, DreError]]) -> None:
        stats = self.peer_stats(peer_id)
        for key, (block, error) in refused.items():
            if key in stats.refused:
                continue
            if len(stats.refused) < _MAX_REFUSED_REMEMBERED:
                stats.refused.add(key)
            self._penalize(peer_id, REFUSED_RECORD_PENALTY, f"record {block.cid} refused: {error}")


def _accept_all(
    accept: Callable[[Block], bool], blocks: list[Block]
) -> list[tuple[Block, bool | DreError]]:
    """Run ``accept`` on each block (in a worker thread); stop at an integrity failure."""
    results: list[tuple[Block, bool | DreError]] = []
    for block in blocks:
        try:
            results.append((block, accept(block)))
        except IntegrityError as error:
            results.append((block, error))
            break
        except DreError as error:
            results.append((block, error))
    return results


async def _reader(stream: Any, send: trio.MemorySendChannel[bytes | NetworkError]) -> None:
    """Copy the stream into ``send`` until EOF (``b""``) or a broken stream (the error)."""
    async with send:
        while True:
            try:
                data = await compat.read_some(stream)
            except NetworkError as error:
                await send.send(error)
                return
            except Exception as error:  # anything else py-libp2p raises: still a broken stream
                await send.send(NetworkError(f"stream broken: {type(error).__name__} {error}"))
                return
            await send.send(data)
            if not data:
                return


async def _write(stream: Any, data: bytes, peer_id: str) -> None:
    # FINDINGS 10: chunks of 256 KiB keep Noise+Yamux throughput up for a large Records message.
    with trio.move_on_after(_WRITE_TIMEOUT) as scope:
        try:
            for start in range(0, len(data), compat.PREFERRED_WRITE_SIZE):
                await stream.write(data[start : start + compat.PREFERRED_WRITE_SIZE])
        except StreamError as error:
            raise SyncFailed(peer_id, f"stream broken: {type(error).__name__}") from error
    if scope.cancelled_caught:
        raise SyncFailed(peer_id, f"peer did not read for {_WRITE_TIMEOUT:g} s")


def _remote_peer(stream: Any) -> str:
    try:
        return str(stream.muxed_conn.peer_id)
    except Exception:  # a stream without a connection is not one py-libp2p gives handlers
        return "?"


async def _reset(stream: Any) -> None:
    """Best-effort reset, shielded and bounded: it runs on the way out of cancelled sessions."""
    with trio.CancelScope(shield=True), trio.move_on_after(5):
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
