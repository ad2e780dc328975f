"""Anti-entropy sync between real py-libp2p hosts on loopback, over real node homes.

Every node is a :class:`~dre.node.host.HostHandle` plus a :class:`~dre.storage.registry.
LocalRegistry` in its own temporary home, wired to a :class:`~dre.node.sync.SyncService` the way
the runtime wires it. The misbehaving peers are built from the same parts: a raw stream that
writes garbage, a handler that never answers, a responder that sends wrong bytes for a record,
and an honest service serving a record with a forged signature.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from dre.node import compat
from dre.node.compat import NetworkError
from dre.node.host import HostHandle, open_host
from dre.node.sync import (
    FAULT_PENALTY,
    INTEGRITY_PENALTY,
    PENALTY_LIMIT,
    SyncFailed,
    SyncService,
)
from dre.protocol import dagcbor, varint
from dre.protocol.cid import CID, Block, cid_to_bytes
from dre.protocol.errors import IntegrityError, NotFoundError
from dre.protocol.keys import PublisherKey
from dre.protocol.sync import (
    PROTOCOL_ID,
    NeedData,
    Records,
    RecordsWanted,
    SendBytes,
    SyncSession,
    Want,
    encode_message,
)
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

NET = "synctest"
EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
ALICE = PublisherKey.from_seed(b"\x0a" * 32)
BOB = PublisherKey.from_seed(b"\x0b" * 32)
NOW = 1_790_000_000
# Short enough that a silent peer fails a test fast, long enough for a loopback round trip on a
# busy machine.
MESSAGE_TIMEOUT = 1.0


def seed(n: int) -> bytes:
    return hashlib.sha256(b"sync-%d" % n).digest()


@dataclass
class Node:
    """One test node: host, home, registry, sync service, and the CIDs ``accept`` was given."""

    host: HostHandle
    repo: Repo
    registry: LocalRegistry
    sync: SyncService
    accepted: list[CID] = field(default_factory=list)


def get_envelope(repo: Repo) -> Callable[[CID], bytes | None]:
    def get(cid: CID) -> bytes | None:
        try:
            return repo.store.get(cid)
        except NotFoundError:
            return None

    return get


@asynccontextmanager
async def node(stack: AsyncExitStack, home: Path, n: int) -> AsyncIterator[Node]:
    Repo.init(home)
    repo = stack.enter_context(Repo.open(home))
    registry = LocalRegistry(repo)
    host = await stack.enter_async_context(open_host(seed(n), network=NET))
    accepted: list[CID] = []

    def accept(block: Block) -> bool:
        accepted.append(block.cid)
        return registry.accept_record(block, now=NOW)

    service = SyncService(
        host,
        network=NET,
        catalog=registry.record_cids,
        get_record=get_envelope(repo),
        accept=accept,
        message_timeout=MESSAGE_TIMEOUT,
        session_timeout=10.0,
    )
    service.install()
    yield Node(host, repo, registry, service, accepted)


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    yield lambda name: tmp_path / name


def publish(registry: LocalRegistry, key: PublisherKey, *docs: str) -> None:
    for doc in docs:
        registry.publish((EXAMPLES / doc).read_bytes(), key, now=NOW)


def versions(repo: Repo) -> dict[str, set[str]]:
    return {name: set(repo.index.versions(name)) for name in repo.index.names()}


async def eventually(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds: it watches another node's store, so it is polled
    (the caller bounds the wait with ``fail_after``)."""
    delay = 0.01
    while not condition():
        await trio.sleep(delay)
        delay = min(delay * 2, 0.2)


ALL_VERSIONS = {
    "@acme/retry": {"1.0.0", "1.1.0"},
    "left-pad": {"1.3.0"},
    "slugify-lite": {"0.4.2"},
}


@pytest.mark.trio
async def test_two_nodes_end_with_the_union(homes: Callable[[str], Path]) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1))
        b = await stack.enter_async_context(node(stack, homes("b"), 2))
        # A: the @acme scope record and three manifests (two of them in the scope). B: one other.
        a.registry.create_scope("@acme", ALICE, now=NOW)
        publish(a.registry, ALICE, "left-pad.md", "acme-retry-1.0.0.md", "acme-retry-1.1.0.md")
        publish(b.registry, BOB, "slugify-lite.md")
        a_had, b_had = set(a.registry.record_cids()), set(b.registry.record_cids())
        assert len(a_had) == 4 and len(b_had) == 1
        await a.host.connect(b.host.addrs[0])

        with trio.fail_after(10):
            summary = await a.sync.sync_with(b.host.peer_id)
            # The responder finishes its side (accepting in a worker thread) on its own time.
            await eventually(lambda: len(b.registry.record_cids()) == 5)

        assert not summary.identical
        assert summary.received == 1 and summary.sent == 4
        assert versions(a.repo) == versions(b.repo) == ALL_VERSIONS
        assert a.registry.scope("@acme") == b.registry.scope("@acme")
        assert set(a.registry.record_cids()) == set(b.registry.record_cids()) == a_had | b_had
        # accept saw exactly what each side lacked (scoped manifests possibly twice: retried
        # once the scope record, which sorts anywhere among them, got in).
        assert set(a.accepted) == b_had
        assert set(b.accepted) == a_had
        # With these keys the two @acme manifests sort before the @acme scope record, so B first
        # refuses them (unauthorized), then retries them once the scope record is in: 6 calls,
        # and no penalty for A (checked below).
        assert len(b.accepted) == 6
        a_stats, b_stats = a.sync.stats[b.host.peer_id], b.sync.stats[a.host.peer_id]
        assert (a_stats.sessions, a_stats.failures, a_stats.penalty) == (1, 0, 0)
        assert (a_stats.records_received, a_stats.records_accepted, a_stats.records_sent) == (
            1, 1, 4)
        assert (b_stats.sessions, b_stats.failures, b_stats.penalty) == (1, 0, 0)
        assert (b_stats.records_received, b_stats.records_accepted) == (4, 4)

        # A second session finds equal catalogs after one round trip and accepts nothing.
        a.accepted.clear()
        b.accepted.clear()
        with trio.fail_after(10):
            again = await b.sync.sync_with(a.host.peer_id)
        assert again.identical and again.messages_sent == again.messages_received == 1
        assert a.accepted == b.accepted == []


@pytest.mark.trio
async def test_garbage_is_reset_and_penalized_and_node_keeps_serving(
    homes: Callable[[str], Path],
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1))
        b = await stack.enter_async_context(node(stack, homes("b"), 2))
        mallory = await stack.enter_async_context(open_host(seed(3), network=NET))
        publish(a.registry, ALICE, "left-pad.md")
        publish(b.registry, BOB, "slugify-lite.md")
        await mallory.connect(a.host.addrs[0])

        with trio.fail_after(10):
            stream = await mallory.open_stream(a.host.peer_id, [PROTOCOL_ID])
            # A well-framed body of random bytes: never valid DAG-CBOR of a sync message, so the
            # failure is a protocol error and not a wait for more data.
            body = random.Random(7).randbytes(200)
            await stream.write(varint.encode(len(body)) + body)
            with pytest.raises(NetworkError, match="reset"):
                while await compat.read_some(stream):
                    pass

        stats = a.sync.stats[mallory.peer_id]
        assert (stats.sessions, stats.failures, stats.penalty) == (1, 1, FAULT_PENALTY)
        assert "malformed sync message" in stats.reasons[0]

        # The node still runs: an honest peer syncs with it afterwards.
        await b.host.connect(a.host.addrs[0])
        with trio.fail_after(10):
            summary = await b.sync.sync_with(a.host.peer_id)
        assert summary.received == 1 and summary.sent == 1
        assert versions(b.repo) == {"left-pad": {"1.3.0"}, "slugify-lite": {"0.4.2"}}

        # A second offence reaches the limit: the peer's next stream is reset without a session.
        stream = await mallory.open_stream(a.host.peer_id, [PROTOCOL_ID])
        await stream.write(varint.encode(len(body)) + body)
        with trio.fail_after(10), pytest.raises(NetworkError):
            while await compat.read_some(stream):
                pass
        assert stats.penalty == 2 * FAULT_PENALTY >= PENALTY_LIMIT and a.sync.banned(
            mallory.peer_id)
        # (The reset may even beat multistream-select's answer: open_stream fails then.)
        with trio.fail_after(10), pytest.raises(NetworkError):
            stream = await mallory.open_stream(a.host.peer_id, [PROTOCOL_ID])
            while await compat.read_some(stream):
                pass
        assert stats.sessions == 2


@pytest.mark.trio
async def test_silent_peer_times_out(homes: Callable[[str], Path]) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1))
        silent = await stack.enter_async_context(open_host(seed(4), network=NET))
        done = trio.Event()

        async def never_answer(stream: Any) -> None:
            with trio.move_on_after(15):
                await done.wait()

        silent.set_stream_handler(PROTOCOL_ID, never_answer)
        await a.host.connect(silent.addrs[0])
        start = trio.current_time()
        try:
            with trio.fail_after(10), pytest.raises(SyncFailed, match="silent") as caught:
                await a.sync.sync_with(silent.peer_id)
        finally:
            done.set()
        elapsed = trio.current_time() - start
        assert MESSAGE_TIMEOUT <= elapsed < MESSAGE_TIMEOUT + 2
        assert caught.value.peer_id == silent.peer_id
        stats = a.sync.stats[silent.peer_id]
        # A timeout is nobody's provable fault: counted, not penalized.
        assert (stats.sessions, stats.failures, stats.penalty) == (1, 1, 0)


@pytest.mark.trio
async def test_wrong_record_bytes_are_an_integrity_error(homes: Callable[[str], Path]) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1))
        # A peer with a real record in its catalog that answers the Want with other bytes.
        evil_home = homes("evil")
        Repo.init(evil_home)
        evil_repo = stack.enter_context(Repo.open(evil_home))
        evil_registry = LocalRegistry(evil_repo)
        publish(evil_registry, BOB, "slugify-lite.md")
        evil = await stack.enter_async_context(open_host(seed(5), network=NET))

        async def lying_responder(stream: Any) -> None:
            session = SyncSession("responder", evil_registry.record_cids(), network=NET,
                                  now=trio.current_time())
            while True:
                event = session.next_event()
                if isinstance(event, SendBytes):
                    await stream.write(event.data)
                elif isinstance(event, NeedData):
                    session.receive_data(await compat.read_some(stream))
                elif isinstance(event, RecordsWanted):
                    # Well-formed records message, wrong bytes; then our own (empty) want.
                    bogus = dagcbor.encode({"not": "the record you asked for"})
                    await stream.write(encode_message(Records((bogus,)))
                                       + encode_message(Want(b"")))
                    with trio.move_on_after(10):
                        while await compat.read_some(stream):
                            pass
                    return
                else:
                    return

        evil.set_stream_handler(PROTOCOL_ID, lying_responder)
        await a.host.connect(evil.addrs[0])
        before = a.repo.store.stats().blocks
        with trio.fail_after(10), pytest.raises(IntegrityError, match="match no wanted CID"):
            await a.sync.sync_with(evil.peer_id)
        assert a.accepted == []  # nothing was handed to the node
        assert versions(a.repo) == {}
        assert a.repo.store.stats().blocks == before
        stats = a.sync.stats[evil.peer_id]
        assert (stats.failures, stats.penalty) == (1, INTEGRITY_PENALTY)
        assert a.sync.banned(evil.peer_id)
        with pytest.raises(SyncFailed, match="banned"):
            await a.sync.sync_with(evil.peer_id)


def forged(block: Block) -> Block:
    """The same envelope with one bit of its signature flipped: a new CID, hash fine, bad sig."""
    envelope = dagcbor.decode_block(block)
    signature = bytearray(envelope["signature"])
    signature[0] ^= 1
    envelope["signature"] = bytes(signature)
    return dagcbor.encode_block(envelope)


@pytest.mark.trio
async def test_record_failing_verification_is_fatal(homes: Callable[[str], Path]) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1))
        # An honest service whose catalog holds a forged envelope next to a good record: the bytes
        # match the CID (so the session passes it up) but the signature does not verify.
        b_home = homes("b")
        Repo.init(b_home)
        b_repo = stack.enter_context(Repo.open(b_home))
        publish(LocalRegistry(b_repo), BOB, "slugify-lite.md")
        good_cid = b_repo.index.manifest_cid("slugify-lite", "0.4.2")
        assert good_cid is not None
        bad = forged(Block(good_cid, b_repo.store.get(good_cid)))
        b_host = await stack.enter_async_context(open_host(seed(6), network=NET))
        b_records = {cid_to_bytes(good_cid): b_repo.store.get(good_cid),
                     cid_to_bytes(bad.cid): bad.data}
        SyncService(
            b_host, network=NET,
            catalog=lambda: [good_cid, bad.cid],
            get_record=lambda cid: b_records.get(cid_to_bytes(cid)),
            accept=lambda block: False,
            message_timeout=MESSAGE_TIMEOUT,
        ).install()
        await a.host.connect(b_host.addrs[0])
        with trio.fail_after(10), pytest.raises(IntegrityError, match="signature"):
            await a.sync.sync_with(b_host.peer_id)
        assert bad.cid in a.accepted
        assert not a.repo.store.has(bad.cid)
        assert a.sync.stats[b_host.peer_id].penalty == INTEGRITY_PENALTY


@pytest.mark.trio
async def test_sync_loop_reaches_every_peer(homes: Callable[[str], Path]) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(stack, homes("a"), 1))
        b = await stack.enter_async_context(node(stack, homes("b"), 2))
        c = await stack.enter_async_context(node(stack, homes("c"), 3))
        publish(b.registry, ALICE, "left-pad.md")
        publish(c.registry, BOB, "slugify-lite.md")
        await a.host.connect(b.host.addrs[0])
        await a.host.connect(c.host.addrs[0])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.sync.sync_loop, a.host.connected_peers, 60.0)
            with trio.fail_after(10):
                await eventually(
                    lambda: versions(a.repo) == {"left-pad": {"1.3.0"}, "slugify-lite": {"0.4.2"}}
                )
            nursery.cancel_scope.cancel()
        assert a.sync.stats[b.host.peer_id].sessions == a.sync.stats[c.host.peer_id].sessions == 1


def test_rejects_bad_settings(tmp_path: Path) -> None:
    handle: Any = object()
    with pytest.raises(ValueError, match="message_timeout"):
        SyncService(handle, network=NET, catalog=list, get_record=lambda c: None,
                    accept=lambda b: False, message_timeout=0)
