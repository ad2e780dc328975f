"""Gossip of signed records between real py-libp2p hosts on loopback (one process).

Topology for the forwarding tests is a line A - B - C: C is connected to B only, so whatever
reaches C was forwarded by B, and whatever B's validator rejects never reaches C.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from dre.node import compat
from dre.node.gossip import (
    ANNOUNCE,
    MAX_MESSAGE_BYTES,
    Accepted,
    Gossip,
    GossipRejected,
    RecordValidator,
    open_gossip,
    topic_name,
)
from dre.node.host import HostHandle, open_host
from dre.protocol import dagcbor
from dre.protocol.cid import DAG_PB, RAW, Block, cid_for
from dre.protocol.keys import PublisherKey
from dre.protocol.records import (
    ATTESTATION,
    MANIFEST,
    SCOPE,
    Attestation,
    Manifest,
    Record,
    ScopeRecord,
    sign_record,
)

NETWORK = "gtest"
ALICE = PublisherKey.from_seed(b"\x01" * 32)
MALLORY = PublisherKey.from_seed(b"\x02" * 32)
# Loopback: every peer has the same IP, which gossipsub's eclipse protection dislikes.
SETTINGS = compat.LOOPBACK_GOSSIP


def manifest(key: PublisherKey, i: int = 0, name: str = "hello") -> Block:
    record = Manifest(
        name=name,
        version=f"1.0.{i}",
        description="Says hello.",
        license="Apache-2.0",
        keywords=[],
        category="tools",
        dependencies={},
        package=cid_for(b"package %d" % i, DAG_PB),
        doc=cid_for(b"doc %d" % i, RAW),
        generator="dre-generator/1",
        publisher=key.peer_id,
        previous=None,
        time=1_700_000_000 + i,
        reproducible=True,
    )
    return sign_record(MANIFEST, record, key)


def forged(block: Block) -> Block:
    """The same envelope with one bit of its signature flipped (hash and encoding still fine)."""
    envelope = dagcbor.decode_block(block)
    signature = bytearray(envelope["signature"])
    signature[0] ^= 1
    envelope["signature"] = bytes(signature)
    return dagcbor.encode_block(envelope)


def not_mallory(record: Record, signer: str) -> bool:
    return signer != MALLORY.peer_id


def allow_all(record: Record, signer: str) -> bool:
    return True


@asynccontextmanager
async def gossip_line(
    authorizers: Sequence[Callable[[Record, str], bool]],
) -> AsyncIterator[list[tuple[HostHandle, Gossip]]]:
    """Hosts with gossip, node i connected to node i+1 only; meshes formed on return."""
    async with AsyncExitStack() as stack:
        nodes: list[tuple[HostHandle, Gossip]] = []
        for i, authorize in enumerate(authorizers):
            host = await stack.enter_async_context(
                open_host(bytes([100 + i]) * 32, network=NETWORK)
            )
            gossip = await stack.enter_async_context(
                open_gossip(host.host, NETWORK, authorize=authorize, settings=SETTINGS)
            )
            nodes.append((host, gossip))
        for (left, _), (right, _) in itertools.pairwise(nodes):
            await left.connect(right.addrs[0])
        with trio.fail_after(10):
            topic = topic_name(NETWORK, ANNOUNCE)
            for (left, gl), (right, gr) in itertools.pairwise(nodes):
                await gl.wait_for_subscriber(right.peer_id)
                await gr.wait_for_subscriber(left.peer_id)
                # A message goes to mesh peers: wait for both directions of each link.
                await gl.pubsub.wait_for_mesh(right.host.get_id(), topic, timeout=10)
                await gr.pubsub.wait_for_mesh(left.host.get_id(), topic, timeout=10)
        yield nodes


async def receive(gossip: Gossip, n: int, within: float) -> list[Accepted]:
    """Up to ``n`` accepted records, whatever arrived within ``within`` seconds."""
    items: list[Accepted] = []
    with trio.move_on_after(within):
        while len(items) < n:
            items.append(await gossip.accepted.receive())
    return items


def drain_now(gossip: Gossip) -> list[Accepted]:
    items = []
    while True:
        try:
            items.append(gossip.accepted.receive_nowait())
        except trio.WouldBlock:
            return items


@pytest.mark.trio
async def test_manifest_published_on_a_reaches_c_through_b() -> None:
    async with gossip_line([not_mallory] * 3) as nodes:
        (_, ga), (_, gb), (_, gc) = nodes
        block = manifest(ALICE)
        start = time.perf_counter()
        opened = await ga.publish(block)
        assert opened.kind == MANIFEST
        [at_c] = await receive(gc, 1, within=5)
        elapsed = time.perf_counter() - start
        assert at_c.block == block
        assert at_c.kind == MANIFEST
        assert at_c.signer == ALICE.peer_id
        assert isinstance(at_c.record, Manifest) and at_c.record.version == "1.0.0"
        assert at_c.origin == nodes[0][0].peer_id
        [at_b] = await receive(gb, 1, within=1)
        assert at_b.block == block
        assert drain_now(ga) == []  # own publishes are not echoed back
        print(f"A->B->C propagation: {elapsed * 1000:.1f} ms")
        assert elapsed < 2


@pytest.mark.trio
async def test_forged_and_unauthorized_are_neither_delivered_nor_forwarded() -> None:
    # A is a bad node: it authorizes everything and, below, even removes its own validator.
    async with gossip_line([allow_all, not_mallory, not_mallory]) as nodes:
        (_, ga), (_, gb), (_, gc) = nodes
        bad_signature = forged(manifest(ALICE, 1))
        by_mallory = manifest(MALLORY, 2)

        # Our own node refuses to publish them, loudly (pubsub alone would drop silently).
        with pytest.raises(GossipRejected) as info:
            await gb.publish(bad_signature)
        assert info.value.reason == "invalid"
        with pytest.raises(GossipRejected) as info:
            await gb.publish(by_mallory)
        assert info.value.reason == "unauthorized"
        gb.stats.rejected.clear()

        topic = topic_name(NETWORK, ANNOUNCE)
        ga.pubsub.remove_topic_validator(topic)
        await ga.pubsub.publish(topic, bad_signature.data)
        await ga.pubsub.publish(topic, by_mallory.data)
        # A valid record after them: once it has reached C, the bad ones had their chance.
        good = manifest(ALICE, 3)
        await ga.publish(good)
        [at_c] = await receive(gc, 1, within=5)
        assert at_c.block == good
        await trio.sleep(0.3)

        assert [item.block for item in drain_now(gb)] == [good]
        assert drain_now(gc) == []
        assert gb.stats.rejected == {"invalid": 1, "unauthorized": 1}
        # C never even saw them: its validator would have counted a rejection.
        assert gc.stats.rejected == {}


@pytest.mark.trio
async def test_burst_of_1000_announcements_all_arrive() -> None:
    n = 1000
    blocks = [manifest(ALICE, i) for i in range(n)]
    async with gossip_line([not_mallory] * 2) as nodes:
        (_, ga), (_, gb) = nodes
        start = time.perf_counter()
        for block in blocks:
            await ga.publish(block)
        with trio.fail_after(15):
            await ga.announcer.wait_idle()
        assert ga.stats.published == n
        got = await receive(gb, n, within=15)
        elapsed = time.perf_counter() - start
        assert ga.stats.dropped_own == 0
        assert {item.block.cid for item in got} == {block.cid for block in blocks}
        assert len(got) == n
        print(f"burst: {len(got)}/{n} delivered in {elapsed:.2f} s ({n / elapsed:.0f}/s)")


@pytest.mark.trio
async def test_attestations_travel_on_their_own_topic() -> None:
    async with gossip_line([not_mallory] * 2) as nodes:
        (_, ga), (_, gb) = nodes
        # wait_for_subscriber defaults to the announce topic; the attest mesh forms alongside.
        await ga.wait_for_subscriber(nodes[1][0].peer_id, "attest")
        attest_topic = topic_name(NETWORK, "attest")
        await ga.pubsub.wait_for_mesh(nodes[1][0].host.get_id(), attest_topic, timeout=10)
        block = sign_record(ATTESTATION, attestation(ALICE), ALICE)
        await ga.publish(block)
        [item] = await receive(gb, 1, within=5)
        assert (item.channel, item.topic, item.kind) == ("attest", attest_topic, ATTESTATION)


def attestation(key: PublisherKey) -> Attestation:
    return Attestation(
        manifest=manifest(key).cid,
        reproduced=True,
        regenerated=cid_for(b"package 0", DAG_PB),
        attester=key.peer_id,
        time=1_700_000_100,
    )


# ----------------------------------------------------------------- validator without network


def test_validator_rules() -> None:
    calls: list[tuple[str, str]] = []

    def authorize(record: Record, signer: str) -> bool:
        calls.append((type(record).__name__, signer))
        return signer == ALICE.peer_id

    validator = RecordValidator(NETWORK, authorize)
    good = manifest(ALICE)
    assert validator.check(ANNOUNCE, good.data).record.publisher == ALICE.peer_id  # type: ignore[union-attr]

    cases: list[tuple[str, bytes, str]] = [
        (ANNOUNCE, b"\x00" * (MAX_MESSAGE_BYTES + 1), "oversized"),
        (ANNOUNCE, b"not cbor at all", "invalid"),
        (ANNOUNCE, forged(good).data, "invalid"),
        (ANNOUNCE, manifest(MALLORY).data, "unauthorized"),
        ("attest", good.data, "wrong-topic"),
        (ANNOUNCE, sign_record(ATTESTATION, attestation(ALICE), ALICE).data, "wrong-topic"),
        ("log", good.data, "unknown-topic"),
    ]
    for channel, data, reason in cases:
        with pytest.raises(GossipRejected) as info:
            validator.check(channel, data)
        assert info.value.reason == reason, (channel, reason)

    scope = ScopeRecord(scope="@acme", owners=[ALICE.peer_id], version=1, expires=None)
    assert validator.check(ANNOUNCE, sign_record(SCOPE, scope, ALICE).data).kind == SCOPE
    # authorize() saw manifests and the scope record, never the rejected-earlier messages.
    assert ("ScopeRecord", ALICE.peer_id) in calls
    assert all(name != "Attestation" for name, _ in calls)


def test_authorize_that_raises_rejects() -> None:
    def broken(record: Record, signer: str) -> bool:
        raise RuntimeError("policy store unavailable")

    validator = RecordValidator(NETWORK, broken)
    validate = validator.for_topic(ANNOUNCE)

    class Msg:
        data = manifest(ALICE).data

    forwarder: Any = None
    assert validate(forwarder, Msg()) is False
    assert validator.stats.rejected == {"unauthorized": 1}
