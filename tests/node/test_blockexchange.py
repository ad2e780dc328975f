"""Block exchange between our own hosts over loopback: fetching, resuming, and bad peers.

Every test runs real py-libp2p hosts (Noise + Yamux over TCP) in one ``trio.run``. The bad peers
are built from the same parts: a store that returns wrong bytes, a Bitswap handler that never
answers, a peer that pushes blocks nobody asked for.
"""

from __future__ import annotations

import hashlib
import random
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
import varint
from dre.node import compat
from dre.node.blockexchange import (
    INVALID_BLOCK_PENALTY,
    BlockExchange,
    FetchTimeoutError,
    StoreAdapter,
    cid_prefix,
    open_block_exchange,
    to_bitswap_cid,
    to_dre_cid,
)
from dre.node.host import HostHandle, open_host
from dre.protocol.cid import RAW, Block, cid_for, parse_cid
from dre.protocol.errors import IntegrityError, NotFoundError
from dre.protocol.exporter import read_file
from dre.protocol.importer import PROFILE_V0, PROFILE_V1
from dre.protocol.packages import BuiltTree, build_tree
from dre.storage.blockstore import BlockStore, MemoryBlockStore
from dre.storage.lmdb_store import LmdbBlockStore
from libp2p.bitswap.config import BITSWAP_PROTOCOLS
from libp2p.bitswap.messages import create_message

NET = "bxtest"


def seed(n: int) -> bytes:
    return hashlib.sha256(b"bx-%d" % n).digest()


def package_tree(profile: Any = PROFILE_V1) -> tuple[BuiltTree, dict[str, bytes]]:
    """A small package: a few small files and two multi-chunk ones (about 20 blocks)."""
    rnd = random.Random(11)
    files = {
        "README.md": b"# demo\n",
        "src/lib.py": b"def f():\n    return 1\n" * 50,
        "src/data.bin": rnd.randbytes(1_200_000),
        "assets/big.bin": rnd.randbytes(700_000),
    }
    return build_tree(files, profile), files


def filled(tree: BuiltTree) -> MemoryBlockStore:
    store = MemoryBlockStore()
    store.put_many(tree.blocks)
    return store


class CorruptingStore(MemoryBlockStore):
    """A provider's store that claims every block and returns it with one byte flipped."""

    def get(self, cid: Any) -> bytes:
        data = bytearray(super().get(cid))
        data[len(data) // 2] ^= 0xFF
        return bytes(data)


async def node(
    stack: AsyncExitStack, n: int, store: BlockStore, **options: Any
) -> tuple[HostHandle, BlockExchange]:
    """A host with a block exchange serving ``store``, both closed when ``stack`` exits."""
    host = await stack.enter_async_context(open_host(seed(n), network=NET))
    exchange = await stack.enter_async_context(open_block_exchange(host.host, store, **options))
    return host, exchange


async def silent_host(stack: AsyncExitStack, n: int) -> HostHandle:
    """A peer that accepts Bitswap streams, reads every wantlist and never answers."""
    host = await stack.enter_async_context(open_host(seed(n), network=NET))

    async def swallow(stream: Any) -> None:
        while await compat.read_some(stream):
            pass

    for protocol in BITSWAP_PROTOCOLS:
        host.set_stream_handler(str(protocol), swallow)
    return host


def read_back(store: BlockStore, tree: BuiltTree, files: dict[str, bytes]) -> dict[str, bytes]:
    return {path: b"".join(read_file(store.get, tree.paths[path])) for path in files}


# ------------------------------------------------------------------------------------- adapter


@pytest.mark.trio
async def test_adapter_converts_cids_and_verifies_writes() -> None:
    tree, _ = package_tree(PROFILE_V0)
    store = MemoryBlockStore()
    adapter = StoreAdapter(store)
    block = tree.blocks[0]
    bs_cid = to_bitswap_cid(block.cid)
    assert to_dre_cid(bs_cid) == block.cid
    assert to_dre_cid(bytes(block.cid)) == block.cid
    assert not await adapter.has_block(bs_cid)
    assert await adapter.get_block(bs_cid) is None
    with pytest.raises(IntegrityError):
        await adapter.put_block(bs_cid, block.data + b"x")
    assert not store.has(block.cid)
    await adapter.put_block(bs_cid, block.data)
    assert await adapter.has_block(bs_cid)
    assert await adapter.get_block(str(block.cid)) == block.data
    # CIDv1 raw under the same multihash: the store keys by multihash, one entry.
    assert await adapter.has_block(to_bitswap_cid(cid_for(block.data, RAW)))


def test_cid_prefix_matches_go_cid_also_for_v0() -> None:
    # go-cid Prefix.Bytes(): version, codec, multihash code, length. py-libp2p sends b"" for v0.
    v0 = parse_cid("QmaxtiD78ZJ6ZcoweeNCf6zDR1FD262n5DxtNiCUA42a2C")
    v1 = parse_cid("bafkreifecoayx32gyqjxzuhzhy7duxyhnsjsanle4mpa7whwna4fjpsxlm")
    assert cid_prefix(v0) == bytes([0x00, 0x70, 0x12, 0x20])
    assert cid_prefix(v1) == bytes([0x01, 0x55, 0x12, 0x20])


# ------------------------------------------------------------------------------------ fetching


@pytest.mark.trio
@pytest.mark.parametrize("profile", [PROFILE_V0, PROFILE_V1], ids=["cidv0", "cidv1"])
async def test_fetch_multi_block_dag_into_lmdb(tmp_path: Path, profile: Any) -> None:
    tree, files = package_tree(profile)
    with LmdbBlockStore(tmp_path / "blocks", sync=False) as dst:
        async with AsyncExitStack() as stack:
            a, _ = await node(stack, 1, filled(tree))
            b, ex = await node(stack, 2, dst)
            await b.connect(a.addrs[0])
            seen: list[int] = []
            fetched = await ex.fetch_dag(tree.root, [a.peer_id], timeout=5, progress=seen.append)
            assert fetched == len(tree.blocks) >= 15
            assert sum(seen) == sum(len(blk.data) for blk in tree.blocks)
            assert read_back(dst, tree, files) == files
            assert dst.verify_all() == []
            assert ex.stats(a.peer_id).blocks == len(tree.blocks)
            # Everything is local now: nothing goes to the network.
            assert await ex.fetch_dag(tree.root, [a.peer_id], timeout=5) == 0


@pytest.mark.trio
async def test_fetch_resumes_with_only_the_missing_blocks() -> None:
    tree, files = package_tree()
    dst = MemoryBlockStore()
    # An interrupted earlier fetch: the root and the first half of the blocks arrived.
    root_block = [blk for blk in tree.blocks if blk.cid == tree.root]
    dst.put_many(tree.blocks[: len(tree.blocks) // 2] + root_block)
    already = dst.stats().blocks
    async with AsyncExitStack() as stack:
        a, _ = await node(stack, 1, filled(tree))
        b, ex = await node(stack, 2, dst)
        await b.connect(a.addrs[0])
        fetched = await ex.fetch_dag(tree.root, [a.peer_id], timeout=5)
        assert fetched == len({bytes(blk.cid) for blk in tree.blocks}) - already > 0
        assert read_back(dst, tree, files) == files


@pytest.mark.trio
async def test_fetch_spreads_wants_over_several_providers() -> None:
    tree, files = package_tree()
    dst = MemoryBlockStore()
    async with AsyncExitStack() as stack:
        a, _ = await node(stack, 1, filled(tree))
        c, _ = await node(stack, 3, filled(tree))
        b, ex = await node(stack, 2, dst, max_inflight_per_peer=2)
        await b.connect(a.addrs[0])
        await b.connect(c.addrs[0])
        await ex.fetch_dag(tree.root, [a.peer_id, c.peer_id], timeout=5)
        assert read_back(dst, tree, files) == files
        assert ex.stats(a.peer_id).blocks > 0
        assert ex.stats(c.peer_id).blocks > 0


@pytest.mark.trio
async def test_concurrent_fetches_of_one_dag_share_wants() -> None:
    tree, files = package_tree()
    dst = MemoryBlockStore()
    async with AsyncExitStack() as stack:
        a, _ = await node(stack, 1, filled(tree))
        b, ex = await node(stack, 2, dst)
        await b.connect(a.addrs[0])
        counts: list[int] = []

        async def fetch() -> None:
            counts.append(await ex.fetch_dag(tree.root, [a.peer_id], timeout=5))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                nursery.start_soon(fetch)
        assert len(counts) == 2
        assert read_back(dst, tree, files) == files
        assert ex.penalty(a.peer_id) == 0


# ----------------------------------------------------------------------------------- bad peers


@pytest.mark.trio
async def test_wrong_bytes_never_stored_peer_penalized_fetch_completes_elsewhere() -> None:
    tree, files = package_tree()
    evil_store = CorruptingStore()
    evil_store.put_many(tree.blocks)
    dst = MemoryBlockStore()
    async with AsyncExitStack() as stack:
        evil, _ = await node(stack, 1, evil_store)
        honest, _ = await node(stack, 3, filled(tree))
        b, ex = await node(stack, 2, dst)
        await b.connect(evil.addrs[0])
        await b.connect(honest.addrs[0])
        # The corrupting peer is the first choice: it is asked for the root first.
        await ex.fetch_dag(tree.root, [evil.peer_id, honest.peer_id], timeout=5)
        assert ex.stats(evil.peer_id).invalid >= 1
        assert ex.penalty(evil.peer_id) >= INVALID_BLOCK_PENALTY
        assert ex.banned(evil.peer_id)
        assert ex.stats(evil.peer_id).blocks == 0
        assert ex.stats(honest.peer_id).blocks == len(tree.blocks)
        assert ex.penalty(honest.peer_id) == 0
    # Only the right blocks are in the store: nothing under the corrupt bytes' hash.
    assert dst.stats().blocks == len({bytes(blk.cid) for blk in tree.blocks})
    assert dst.verify_all() == []
    assert read_back(dst, tree, files) == files


@pytest.mark.trio
async def test_banned_peer_is_not_asked_again() -> None:
    tree, _ = package_tree()
    evil_store = CorruptingStore()
    evil_store.put_many(tree.blocks)
    async with AsyncExitStack() as stack:
        evil, _ = await node(stack, 1, evil_store)
        b, ex = await node(stack, 2, MemoryBlockStore())
        await b.connect(evil.addrs[0])
        with pytest.raises(NotFoundError, match="banned"):
            await ex.fetch_dag(tree.root, [evil.peer_id], timeout=5)
        invalid = ex.stats(evil.peer_id).invalid
        # Refused at once: the banned peer is not even asked.
        with trio.fail_after(1), pytest.raises(NotFoundError, match="banned"):
            await ex.fetch_dag(tree.root, [evil.peer_id], timeout=5)
        assert ex.stats(evil.peer_id).invalid == invalid


@pytest.mark.trio
async def test_silent_provider_times_out_then_next_provider_serves() -> None:
    tree, files = package_tree()
    dst = MemoryBlockStore()
    async with AsyncExitStack() as stack:
        silent = await silent_host(stack, 4)
        honest, _ = await node(stack, 3, filled(tree))
        # No staggering: the silent peer alone holds each want until the timeout.
        b, ex = await node(stack, 2, dst, stagger=float("inf"))
        await b.connect(silent.addrs[0])
        await b.connect(honest.addrs[0])
        start = trio.current_time()
        await ex.fetch_dag(tree.root, [silent.peer_id, honest.peer_id], timeout=0.8)
        assert trio.current_time() - start >= 0.8
        assert ex.stats(silent.peer_id).timeouts >= 1
        assert ex.penalty(silent.peer_id) > 0
        assert read_back(dst, tree, files) == files


@pytest.mark.trio
async def test_staggered_second_provider_is_asked_before_the_timeout() -> None:
    tree, files = package_tree()
    dst = MemoryBlockStore()
    async with AsyncExitStack() as stack:
        silent = await silent_host(stack, 4)
        honest, _ = await node(stack, 3, filled(tree))
        b, ex = await node(stack, 2, dst, stagger=0.2)
        await b.connect(silent.addrs[0])
        await b.connect(honest.addrs[0])
        with trio.fail_after(5):  # far less than one 10 s timeout per silent want
            await ex.fetch_dag(tree.root, [silent.peer_id, honest.peer_id], timeout=10)
        assert read_back(dst, tree, files) == files
        assert ex.stats(silent.peer_id).timeouts == 0


@pytest.mark.trio
async def test_only_silent_providers_raise_fetch_timeout() -> None:
    tree, _ = package_tree()
    async with AsyncExitStack() as stack:
        silent = await silent_host(stack, 4)
        b, ex = await node(stack, 2, MemoryBlockStore())
        await b.connect(silent.addrs[0])
        start = trio.current_time()
        with pytest.raises(FetchTimeoutError, match="timeout"):
            await ex.fetch_dag(tree.root, [silent.peer_id], timeout=0.5)
        assert 0.5 <= trio.current_time() - start < 3


@pytest.mark.trio
async def test_provider_without_the_block_says_dont_have() -> None:
    tree, _ = package_tree()
    async with AsyncExitStack() as stack:
        a, _ = await node(stack, 1, MemoryBlockStore())
        b, ex = await node(stack, 2, MemoryBlockStore())
        await b.connect(a.addrs[0])
        # DONT_HAVE fails over at once, long before the 30 s timeout.
        with trio.fail_after(3), pytest.raises(NotFoundError, match="dont-have"):
            await ex.fetch_dag(tree.root, [a.peer_id], timeout=30)
        assert ex.penalty(a.peer_id) == 0


@pytest.mark.trio
async def test_unsolicited_blocks_are_not_stored_and_penalized() -> None:
    junk = Block(cid_for(b"unasked for", RAW), b"unasked for")
    dst = MemoryBlockStore()
    async with AsyncExitStack() as stack:
        b, ex = await node(stack, 2, dst)
        pusher = await stack.enter_async_context(open_host(seed(5), network=NET))
        await pusher.connect(b.addrs[0])
        stream = await pusher.open_stream(b.peer_id, [str(BITSWAP_PROTOCOLS[0])])
        msg = create_message(blocks_v110=[(cid_prefix(junk.cid), junk.data)])
        body = msg.SerializeToString()
        await stream.write(varint.encode(len(body)) + body)
        with trio.fail_after(5):
            while not ex.banned(pusher.peer_id):  # noqa: ASYNC110  (no event to wait on)
                await trio.sleep(0.02)
        await compat.half_close(stream)
    assert not dst.has(junk.cid)
