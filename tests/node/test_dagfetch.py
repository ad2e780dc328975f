"""DAG-at-once between two real hosts: whole DAGs verified on arrival, liars caught."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from dre.node import compat
from dre.node.dagfetch import DAG_PROTOCOL, DagFetcher
from dre.node.host import HostHandle, open_host
from dre.protocol.car import encode_block, encode_header
from dre.protocol.cid import RAW, cid_for, cid_to_bytes
from dre.protocol.errors import IntegrityError, NotFoundError
from dre.protocol.exporter import read_file
from dre.protocol.links import iter_dag
from dre.protocol.packages import BuiltTree, build_tree
from dre.storage.blockstore import MemoryBlockStore

NETWORK = "dagtest"


def tree() -> BuiltTree:
    rng = random.Random(11)
    return build_tree({"big.bin": rng.randbytes(3 * 1024 * 1024 + 17), "small.txt": b"hi\n",
                       "src/x.py": b"x = 1\n" * 500})


def store_with(built: BuiltTree) -> MemoryBlockStore:
    store = MemoryBlockStore()
    store.put_many(built.blocks)
    return store


@asynccontextmanager
async def two_hosts() -> AsyncIterator[tuple[HostHandle, HostHandle]]:
    async with open_host(bytes([1]) * 32, network=NETWORK) as a, \
            open_host(bytes([2]) * 32, network=NETWORK) as b:
        await b.connect(a.addrs[0])
        yield a, b


@pytest.mark.trio
async def test_fetch_whole_dag_and_resume() -> None:
    built = tree()
    async with two_hosts() as (a, b):
        DagFetcher(a, store_with(built)).install()
        local = MemoryBlockStore()
        local.put_many(built.blocks[:3])  # some blocks are already here
        fetched = await DagFetcher(b, local).fetch(a.peer_id, built.root)
        assert fetched == len({cid_to_bytes(blk.cid) for blk in built.blocks}) - 3
        assert sum(1 for _ in iter_dag(local.get, built.root)) == fetched + 3
        expected = random.Random(11).randbytes(3 * 1024 * 1024 + 17)
        assert b"".join(read_file(local.get, built.paths["big.bin"])) == expected


@pytest.mark.trio
async def test_partial_holder_gives_not_found_and_stores_what_came() -> None:
    built = tree()
    async with two_hosts() as (a, b):
        partial = MemoryBlockStore()
        partial.put_many(built.blocks[:-2])  # lacks the last blocks (the directory node is last)
        DagFetcher(a, partial).install()
        with pytest.raises(NotFoundError):
            await DagFetcher(b, MemoryBlockStore()).fetch(a.peer_id, built.root)


async def _lying_server(stream: Any, send: bytes) -> None:
    await compat.read_until_eof(stream, 128)
    await stream.write(send)
    await stream.close()


@pytest.mark.trio
async def test_wrong_or_unexpected_blocks_are_refused_and_penalized() -> None:
    built = tree()
    root_data = next(blk.data for blk in built.blocks if blk.cid == built.root)
    stranger = cid_for(b"not in this DAG", RAW)
    cases = {
        # the root's CID with other bytes
        "wrong bytes": encode_header([built.root])
        + encode_block(built.root, root_data[:-1] + b"!"),
        # a block that is valid in itself but was never asked for
        "unexpected": encode_header([built.root]) + encode_block(built.root, root_data)
        + encode_block(stranger, b"not in this DAG"),
        # an answer about another root
        "other root": encode_header([stranger]) + encode_block(stranger, b"not in this DAG"),
    }
    async with two_hosts() as (a, b):
        for why, payload in cases.items():
            a.set_stream_handler(DAG_PROTOCOL, lambda s, p=payload: _lying_server(s, p))
            penalties: list[tuple[str, str]] = []
            local = MemoryBlockStore()
            fetcher = DagFetcher(b, local, penalize=lambda peer, r, log=penalties: log.append(
                (peer, r)))
            with pytest.raises(IntegrityError):
                await fetcher.fetch(a.peer_id, built.root)
            assert penalties and penalties[0][0] == a.peer_id, why
            assert not local.has(stranger), why


@pytest.mark.trio
async def test_garbage_request_resets_and_server_keeps_serving() -> None:
    built = tree()
    async with two_hosts() as (a, b):
        DagFetcher(a, store_with(built)).install()
        stream = await b.open_stream(a.peer_id, [DAG_PROTOCOL])
        await stream.write(b"\xff" * 40)
        await compat.half_close(stream)
        with trio.fail_after(5), pytest.raises(compat.NetworkError):
            while await compat.read_some(stream):
                pass
        assert await DagFetcher(b, MemoryBlockStore()).fetch(a.peer_id, built.root) > 0
