"""Federated search between real py-libp2p hosts on loopback, over real node homes.

Every honest node is a :class:`~dre.node.host.HostHandle` plus a home with packages published
into its registry and the node's :class:`~dre.node.search_engine.SearchEngine` over that home
(text mode, caught up from the registry's log as the node does), wired to a
:class:`~dre.node.search_protocol.SearchService`. The misbehaving peers are built from the same
host: one that accepts the stream and never answers, one that answers garbage, one that answers
with more hits than asked for.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from dre.node import compat, search_protocol
from dre.node.compat import NetworkError
from dre.node.host import HostHandle, open_host
from dre.node.search_engine import SearchEngine
from dre.node.search_protocol import (
    FAULT_PENALTY,
    PENALTY_LIMIT,
    SearchService,
    federated_search,
    run_search_protocol,
    search_with_peers,
    serve_search,
)
from dre.protocol import dagcbor, varint
from dre.protocol.errors import DreError, ValidationError
from dre.protocol.keys import PublisherKey
from dre.protocol.search import SearchHit, SearchQuery, SearchResult
from dre.protocol.search_wire import (
    PROTOCOL_ID,
    SearchAnswer,
    SearchRefused,
    SearchRequest,
    answer_for,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    request_for,
    widened_query,
)
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

NET = "searchtest"
EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
SPEC = Path(__file__).resolve().parents[2] / "specs" / "search.md"
ALICE = PublisherKey.from_seed(b"\x0a" * 32)
NOW = 1_790_000_000
# Matches every example used below (full text ORs the terms).
QUERY = SearchQuery(text="string retry shell", mode="text")


def seed(n: int) -> bytes:
    return hashlib.sha256(b"search-%d" % n).digest()


class CountingEngine:
    """The node's real engine (text mode: no model in these tests), counting the queries."""

    def __init__(self, engine: SearchEngine) -> None:
        self.engine = engine
        self.calls = 0

    def search(self, query: SearchQuery) -> SearchResult:
        self.calls += 1
        return self.engine.search(query)


@dataclass
class Node:
    host: HostHandle
    repo: Repo
    engine: CountingEngine
    search: SearchService


@asynccontextmanager
async def node(stack: AsyncExitStack, home: Path, n: int, *docs: str,
               **options: Any) -> AsyncIterator[Node]:
    Repo.init(home)
    repo = stack.enter_context(Repo.open(home))
    registry = LocalRegistry(repo)
    if any(doc.startswith("acme") for doc in docs):
        registry.create_scope("@acme", ALICE, now=NOW)
    for doc in docs:
        registry.publish((EXAMPLES / doc).read_bytes(), ALICE, now=NOW)
    real = SearchEngine.open(repo, semantic=False)
    stack.callback(real.close)
    real.catch_up()
    engine = CountingEngine(real)
    host = await stack.enter_async_context(open_host(seed(n), network=NET))
    yield Node(host, repo, engine, serve_search(host, lambda: engine, **options))


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    yield lambda name: tmp_path / name


async def local_result(a: Node, query: SearchQuery = QUERY) -> SearchResult:
    return await trio.to_thread.run_sync(a.engine.search, widened_query(query))


def names(hits: list[SearchHit]) -> dict[str, str | None]:
    return {h.name: h.source for h in hits}


@pytest.mark.trio
async def test_peers_hits_are_merged_with_their_source(homes: Callable[[str], Path]) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1, "dotfiles-kit.md"))
        b = await stack.enter_async_context(node(stack, homes("b"), 2, "slugify-lite.md",
                                                 "left-pad.md"))
        c = await stack.enter_async_context(node(stack, homes("c"), 3, "acme-retry-1.0.0.md",
                                                 "left-pad.md"))
        await a.host.connect(b.host.addrs[0])
        await a.host.connect(c.host.addrs[0])
        with trio.fail_after(10):
            result = await federated_search(a.search, QUERY, await local_result(a),
                                            deadline=trio.current_time() + 5)
        assert result.answered == sorted([b.host.peer_id, c.host.peer_id])
        assert result.timed_out == [] and result.failed == []
        found = names(result.hits)
        assert found["dotfiles-kit"] is None  # A's own
        assert found["slugify-lite"] == b.host.peer_id
        assert found["@acme/retry"] == c.host.peer_id
        # left-pad is on B and C, published alike: one manifest, so one hit, from the peer that
        # ranked it best (ties: the smaller peer ID); it scores in both lists.
        assert list(found).count("left-pad") == 1
        assert result.total == len(result.hits) == 4
        left = next(h for h in result.hits if h.name == "left-pad")
        assert left.manifest == str(b.repo.index.manifest_cid("left-pad", "1.3.0"))
        # Each peer answered the query once; A sent nothing to itself.
        assert (b.engine.calls, c.engine.calls) == (1, 1)
        assert a.search.stats[b.host.peer_id].answers == 1
        assert b.search.stats[a.host.peer_id].answered_to == 1

        # Paging: offset and limit cut the same merged list.
        page = SearchQuery(text=QUERY.text, mode="text", limit=2, offset=1)
        with trio.fail_after(10):
            second = await federated_search(a.search, page, await local_result(a, page),
                                            deadline=trio.current_time() + 5)
        assert [h.manifest for h in second.hits] == [h.manifest for h in result.hits[1:3]]


@pytest.mark.trio
async def test_hanging_peer_is_reported_not_waited_for(homes: Callable[[str], Path]) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1, "dotfiles-kit.md"))
        b = await stack.enter_async_context(node(stack, homes("b"), 2, "slugify-lite.md"))
        hang = await stack.enter_async_context(open_host(seed(9), network=NET))
        release = trio.Event()
        accepted: list[bytes] = []

        parked: list[bool] = []  # one True per request, set False once the handler resumes

        async def never_answer(stream: Any) -> None:
            # Reads the whole request (so the requester's write completes), then says nothing
            # until the test releases it, after every search has returned.
            accepted.append(await compat.read_until_eof(stream, 10_000))
            parked.append(True)
            with trio.move_on_after(30):
                await release.wait()
            parked[len(parked) - 1] = False

        hang.set_stream_handler(PROTOCOL_ID, never_answer)
        await a.host.connect(b.host.addrs[0])
        await a.host.connect(hang.addrs[0])
        shutdown = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(run_search_protocol, a.search, shutdown)
                for _ in range(2):  # a second search: the hanging peer stays harmless
                    deadline = trio.current_time() + 1.0
                    result = await search_with_peers(a.search, a.engine, QUERY, timeout=1.0)
                    # Not before the deadline (the peer might still have answered), and not
                    # after the hanging peer: its handler is still parked, never released.
                    assert trio.current_time() >= deadline
                    assert parked and all(parked), "the search waited for the hanging peer"
                    assert result.timed_out == [hang.peer_id]
                    assert result.answered == [b.host.peer_id]
                    assert names(result.hits) == {"dotfiles-kit": None,
                                                  "slugify-lite": b.host.peer_id}
                shutdown.set()
        finally:
            release.set()
        # The request reached it; a timeout is no proof of misbehaviour: not penalized.
        assert len(accepted) == 2 and decode_request(accepted[0]).network == NET
        stats = a.search.stats[hang.peer_id]
        assert (stats.asked, stats.timeouts, stats.penalty) == (2, 2, 0)


@pytest.mark.trio
async def test_hanging_peer_without_background_tasks(homes: Callable[[str], Path]) -> None:
    # Without run_search_protocol (a tool, a test) the abandoned stream is reset inline after
    # the deadline, within a fraction of a second.
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1, "dotfiles-kit.md"))
        hang = await stack.enter_async_context(open_host(seed(9), network=NET))
        release = trio.Event()

        async def never_answer(stream: Any) -> None:
            with trio.move_on_after(30):
                await release.wait()

        hang.set_stream_handler(PROTOCOL_ID, never_answer)
        await a.host.connect(hang.addrs[0])
        started = trio.current_time()
        try:
            result = await federated_search(a.search, QUERY, await local_result(a),
                                            deadline=started + 0.5)
        finally:
            release.set()
        assert trio.current_time() - started < 0.5 + 0.5
        assert result.timed_out == [hang.peer_id] and names(result.hits) == {"dotfiles-kit": None}


def garbage_handler(reply: Callable[[SearchRequest], bytes]) -> Callable[[Any], Any]:
    async def handler(stream: Any) -> None:
        request = decode_request(await compat.read_until_eof(stream, 10_000))
        await stream.write(reply(request))
        await compat.half_close(stream)

    return handler


def too_many_hits(request: SearchRequest) -> bytes:
    hits = [SearchHit(name=f"spam-{i}", version="1.0.0",
                      manifest=str(dagcbor.encode_block({"spam": i}).cid),
                      description="", category="", keywords=[], score=1.0, trust=1.0,
                      reproducible=True, downloads=0, created=0, updated=0)
            for i in range(request.query.limit + 1)]
    answer = answer_for(SearchResult(query=QUERY, hits=hits, total=len(hits), mode="text"),
                        len(hits))
    return encode_response(answer)


def random_body(request: SearchRequest) -> bytes:
    body = hashlib.sha256(b"garbage").digest() * 4
    return varint.encode(len(body)) + body


@pytest.mark.trio
@pytest.mark.parametrize(("reply", "reason"), [(random_body, "malformed search answer"),
                                               (too_many_hits, "were asked for")])
async def test_garbage_answer_fails_is_penalized_and_dropped(
    homes: Callable[[str], Path], reply: Callable[[SearchRequest], bytes], reason: str,
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1, "dotfiles-kit.md"))
        b = await stack.enter_async_context(node(stack, homes("b"), 2, "slugify-lite.md"))
        evil = await stack.enter_async_context(open_host(seed(7), network=NET))
        evil.set_stream_handler(PROTOCOL_ID, garbage_handler(reply))
        await a.host.connect(b.host.addrs[0])
        await a.host.connect(evil.addrs[0])
        with trio.fail_after(10):
            result = await federated_search(a.search, QUERY, await local_result(a),
                                            deadline=trio.current_time() + 5)
        assert result.answered == [b.host.peer_id]
        assert [f.peer for f in result.failed] == [evil.peer_id]
        assert reason in result.failed[0].reason
        # Nothing of the bad answer is merged; the honest peer's hits are.
        assert names(result.hits) == {"dotfiles-kit": None, "slugify-lite": b.host.peer_id}
        stats = a.search.stats[evil.peer_id]
        assert (stats.failures, stats.penalty) == (1, FAULT_PENALTY)
        assert reason in stats.reasons[0]

        # A second offence reaches the limit: the peer is no longer asked at all.
        with trio.fail_after(10):
            await federated_search(a.search, QUERY, await local_result(a),
                                   deadline=trio.current_time() + 5)
        assert stats.penalty == 2 * FAULT_PENALTY >= PENALTY_LIMIT
        assert a.search.banned(evil.peer_id)
        with trio.fail_after(10):
            third = await federated_search(a.search, QUERY, await local_result(a),
                                           deadline=trio.current_time() + 5)
        assert stats.asked == 2
        assert "penalized" in third.failed[0].reason and third.answered == [b.host.peer_id]


async def raw_exchange(asker: HostHandle, peer: str, data: bytes) -> bytes:
    stream = await asker.open_stream(peer, [PROTOCOL_ID])
    await stream.write(data)
    await compat.half_close(stream)
    return await compat.read_until_eof(stream, 2_000_000)


@pytest.mark.trio
async def test_responder_refuses_politely_and_resets_garbage(
    homes: Callable[[str], Path],
) -> None:
    async with AsyncExitStack() as stack:
        b = await stack.enter_async_context(node(stack, homes("b"), 2, "slugify-lite.md"))
        asker = await stack.enter_async_context(open_host(seed(5), network=NET))
        await asker.connect(b.host.addrs[0])
        good = request_for(QUERY, network=NET, budget_ms=5000)
        with trio.fail_after(10):
            answer = decode_response(await raw_exchange(asker, b.host.peer_id,
                                                        encode_request(good)), good)
            assert isinstance(answer, SearchAnswer)
            assert [h.name for h in answer.hits] == ["slugify-lite"] and answer.mode == "text"

            other = msgspec.structs.replace(good, network="elsewhere")
            refused = decode_response(await raw_exchange(asker, b.host.peer_id,
                                                         encode_request(other)), other)
            assert isinstance(refused, SearchRefused) and "network 'searchtest'" in refused.reason
            newer = msgspec.structs.replace(good, version=2)
            refused = decode_response(await raw_exchange(asker, b.host.peer_id,
                                                         encode_request(newer)), newer)
            assert isinstance(refused, SearchRefused) and "version 1" in refused.reason
            # A query the engine rejects: its one line comes back as the reason.
            bad_query = msgspec.structs.replace(
                good, query=msgspec.structs.replace(good.query, text="\x00"))
            b.engine.search = _raising  # type: ignore[method-assign]
            refused = decode_response(await raw_exchange(asker, b.host.peer_id,
                                                         encode_request(bad_query)), bad_query)
            assert isinstance(refused, SearchRefused) and refused.reason == "no NUL, please"
        assert b.search.stats[asker.peer_id].penalty == 0

        # A malformed request: reset, and the asker pays for it.
        with trio.fail_after(10), pytest.raises(NetworkError, match="reset"):
            await raw_exchange(asker, b.host.peer_id, b"\x04" + b"\xff" * 4)
        assert b.search.stats[asker.peer_id].penalty == FAULT_PENALTY
        assert "bad request" in b.search.stats[asker.peer_id].reasons[0]


def _raising(query: SearchQuery) -> SearchResult:
    raise ValidationError("no NUL, please")


@pytest.mark.trio
async def test_refusal_reasons_reach_the_user_without_control_characters(
    homes: Callable[[str], Path],
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1, "dotfiles-kit.md"))
        rude = await stack.enter_async_context(open_host(seed(8), network=NET))
        rude.set_stream_handler(PROTOCOL_ID, garbage_handler(
            lambda request: encode_response(SearchRefused("no\x1b[2J\nway"))))
        await a.host.connect(rude.addrs[0])
        with trio.fail_after(10):
            result = await federated_search(a.search, QUERY, await local_result(a),
                                            deadline=trio.current_time() + 5)
        assert result.failed[0].reason == f"{rude.peer_id} refused: no?[2J?way"
        assert a.search.stats[rude.peer_id].penalty == 0  # a refusal is not misbehaviour


@pytest.mark.trio
async def test_engine_off_and_busy_are_refusals(homes: Callable[[str], Path]) -> None:
    async with AsyncExitStack() as stack:
        b = await stack.enter_async_context(
            node(stack, homes("b"), 2, "slugify-lite.md", max_inflight_per_peer=1))
        asker = await stack.enter_async_context(open_host(seed(5), network=NET))
        await asker.connect(b.host.addrs[0])
        good = request_for(QUERY, network=NET, budget_ms=5000)
        gate = threading.Event()
        entered = threading.Event()
        real_search = b.engine.search

        def slow_search(query: SearchQuery) -> SearchResult:
            entered.set()
            gate.wait(10)
            return real_search(query)

        b.engine.search = slow_search  # type: ignore[method-assign]
        replies: list[bytes] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                async def first() -> None:
                    replies.append(await raw_exchange(asker, b.host.peer_id,
                                                      encode_request(good)))

                nursery.start_soon(first)
                await trio.to_thread.run_sync(entered.wait, 10)
                # The same peer's second query while the first runs: over its share.
                busy = decode_response(await raw_exchange(asker, b.host.peer_id,
                                                          encode_request(good)), good)
                gate.set()
        assert isinstance(busy, SearchRefused) and busy.reason.startswith("busy")
        answer = decode_response(replies[0], good)
        assert isinstance(answer, SearchAnswer) and answer.hits[0].name == "slugify-lite"

        # A node whose engine is not running (yet) says so.
        off = SearchService(b.host, lambda: None)
        off.install()
        with trio.fail_after(10):
            refused = decode_response(await raw_exchange(asker, b.host.peer_id,
                                                         encode_request(good)), good)
        assert isinstance(refused, SearchRefused) and "not running" in refused.reason


@pytest.mark.trio
async def test_peer_without_the_protocol_and_no_peers(homes: Callable[[str], Path]) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1, "dotfiles-kit.md"))
        # Alone: the local answer, nobody asked.
        alone = await search_with_peers(a.search, a.engine, QUERY, timeout=1.0)
        assert (alone.answered, alone.timed_out, alone.failed) == ([], [], [])
        assert names(alone.hits) == {"dotfiles-kit": None}
        # A peer that does not speak /dre/search (Kubo, Helia, an old node): failed, no penalty.
        plain = await stack.enter_async_context(open_host(seed(6), network=NET))
        await a.host.connect(plain.addrs[0])
        with trio.fail_after(10):
            result = await search_with_peers(a.search, a.engine, QUERY, timeout=5.0)
        assert [f.peer for f in result.failed] == [plain.peer_id]
        assert a.search.stats[plain.peer_id].penalty == 0
        # Without libp2p: this node's index only, and the user is told.
        solo = await search_with_peers(None, a.engine, QUERY, timeout=1.0)
        assert names(solo.hits) == {"dotfiles-kit": None}
        assert solo.notice is not None and "only its own index" in solo.notice
        with pytest.raises(ValidationError, match="timeout"):
            await search_with_peers(a.search, a.engine, QUERY, timeout=11)
        with pytest.raises(DreError, match="not running") as caught:
            await search_with_peers(a.search, None, QUERY)
        assert not isinstance(caught.value, ValidationError)  # a 503, not the user's fault


def test_node_settings_match_spec() -> None:
    text = SPEC.read_text(encoding="utf-8")
    for name, value in (("fault_penalty", search_protocol.FAULT_PENALTY),
                        ("penalty_limit", search_protocol.PENALTY_LIMIT),
                        ("max_inflight_per_peer", search_protocol.MAX_INFLIGHT_PER_PEER),
                        ("max_inflight", search_protocol.MAX_INFLIGHT)):
        assert re.search(rf"`{name}` {value}\b", text), name
