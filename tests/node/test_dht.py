"""Provider records on the private DHT between real py-libp2p hosts on loopback (one process)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
from dre.node import compat
from dre.node.dht import NAME_KEY_PREFIX, Dht, name_key, open_dht
from dre.node.host import HostHandle, open_host
from dre.protocol.cid import DAG_PB, RAW, cid_for, multihash_of

NETWORK = "gtest"


@asynccontextmanager
async def dht_nodes(n: int) -> AsyncIterator[list[tuple[HostHandle, Dht]]]:
    """``n`` hosts with DHTs, not connected."""
    async with AsyncExitStack() as stack:
        nodes: list[tuple[HostHandle, Dht]] = []
        for i in range(n):
            host = await stack.enter_async_context(
                open_host(bytes([200 + i]) * 32, network=NETWORK)
            )
            nodes.append((host, await stack.enter_async_context(open_dht(host.host, NETWORK))))
        yield nodes


async def link(left: tuple[HostHandle, Dht], right: tuple[HostHandle, Dht]) -> None:
    """Connect two nodes and wait until each is in the other's routing table.

    Connecting alone adds nobody to a routing table (FINDINGS 4): the DHT's upkeep task does it
    once identify has finished on each side.
    """
    (hl, dl), (hr, dr) = left, right
    await hl.connect(hr.addrs[0])
    await eventually(lambda: hr.peer_id in dl.routing_table_peers())
    await eventually(lambda: hl.peer_id in dr.routing_table_peers())


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``within`` seconds."""
    step = 0.02
    for _ in range(int(within / step)):
        if predicate():
            return
        await trio.sleep(step)
    raise AssertionError(f"condition not met within {within} s")


def providers_held(dht: Dht, cid: object) -> set[str]:
    """Peer IDs ``dht``'s own provider store lists for ``cid``."""
    return {str(p.peer_id) for p in dht.kad.provider_store.get_providers(multihash_of(cid))}


def test_name_key_is_documented_derivation() -> None:
    key = name_key("@acme/retry")
    assert key == cid_for(b"dre-name-v1\x00@acme/retry", RAW)
    assert NAME_KEY_PREFIX == b"dre-name-v1\x00"
    assert key.version == 1 and key.codec.code == RAW
    assert name_key("@acme/retry") != name_key("@acme/retrY")
    # Never the CID of the name's own bytes (a file containing just the name).
    assert key != cid_for(b"@acme/retry", RAW)
    with pytest.raises(ValueError):
        name_key("")


@pytest.mark.trio
async def test_c_finds_a_as_provider_through_b() -> None:
    package = cid_for(b"package root", DAG_PB)
    async with dht_nodes(3) as nodes:
        (ha, da), (hb, db), (hc, dc) = nodes
        await link(nodes[0], nodes[1])

        assert await da.provide(package)
        assert await da.provide_name("@acme/retry")
        assert da.provided == {package, name_key("@acme/retry")}
        # The records live on B (ADD_PROVIDER is fire-and-forget: B stores it a moment after
        # A's provide() returned).
        for cid in (package, name_key("@acme/retry")):
            await eventually(lambda: ha.peer_id in providers_held(db, cid), 5)  # noqa: B023

        # C joins through B only: it has never met A and holds no record of its own.
        await link(nodes[1], nodes[2])
        assert dc.routing_table_peers() == {hb.peer_id}
        assert ha.peer_id not in hc.connected_peers()
        assert providers_held(dc, package) == set()

        start = time.perf_counter()
        providers = await dc.find_providers(package)
        elapsed = time.perf_counter() - start
        assert [p.peer_id for p in providers] == [ha.peer_id]
        assert providers[0].addrs  # with an address to dial
        by_name = await dc.find_name_providers("@acme/retry")
        assert [p.peer_id for p in by_name] == [ha.peer_id]
        print(f"find_providers A<-C via B: {elapsed * 1000:.1f} ms")

        # Nobody provides this one: an empty answer, quickly, not a hang.
        start = time.perf_counter()
        assert await dc.find_providers(cid_for(b"nobody has this", RAW)) == []
        assert time.perf_counter() - start < 5

        # C can dial A from the addresses the lookup gave.
        assert await hc.connect(f"{providers[0].addrs[0]}/p2p/{ha.peer_id}") == ha.peer_id


@pytest.mark.trio
async def test_reprovide_and_unprovide() -> None:
    doc = cid_for(b"doc", RAW)
    async with dht_nodes(2) as nodes:
        (ha, da), (_, db) = nodes
        await link(nodes[0], nodes[1])
        # B forgets the record (as if it expired); re-providing puts it back.
        assert await da.provide(doc)
        db.kad.provider_store.providers.clear()
        assert await da.reprovide_all() == 1
        await eventually(lambda: ha.peer_id in providers_held(db, doc), 5)
        da.unprovide(doc)
        assert da.provided == frozenset()
        assert await da.reprovide_all() == 0
        assert da.kad.provider_store.get_providers(multihash_of(doc)) == []


@pytest.mark.trio
async def test_open_dht_refuses_another_networks_protocol() -> None:
    async with open_host(b"\x09" * 32, network=NETWORK) as host:
        assert compat.current_dht_protocol() == compat.dht_protocol_id(NETWORK)
        with pytest.raises(ValueError, match="DHT protocol"):
            async with open_dht(host.host, "othernet"):
                pass
