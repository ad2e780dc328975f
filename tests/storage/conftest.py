"""Fixtures for the block store tests: both implementations, and a test-only DAG codec.

The store does not care how blocks encode their links, so the tests build DAGs with a tiny format
of their own (``encode_node``) under the dag-json codec number, and give the store a ``links_of``
that decodes it. Raw blocks have no links.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dre.protocol.cid import CID, RAW, Block, cid_for
from dre.storage.blockstore import BlockStore, MemoryBlockStore
from dre.storage.lmdb_store import LmdbBlockStore

TEST_NODE = 0x0129  # dag-json's code; the bytes are our own test format, never real dag-json
_MAGIC = b"TESTNODE"


def raw_block(data: bytes) -> Block:
    return Block(cid_for(data, RAW), data)


def encode_node(links: list[CID], payload: bytes = b"") -> Block:
    parts = [_MAGIC, struct.pack(">H", len(links))]
    for link in links:
        b = bytes(link)
        parts += [bytes([len(b)]), b]
    data = b"".join(parts) + payload
    return Block(cid_for(data, TEST_NODE), data)


def links_of(cid: CID, data: bytes) -> list[CID]:
    if cid.codec.code == RAW:
        return []
    assert cid.codec.code == TEST_NODE and data.startswith(_MAGIC)
    (n,) = struct.unpack_from(">H", data, len(_MAGIC))
    pos = len(_MAGIC) + 2
    out = []
    for _ in range(n):
        length = data[pos]
        out.append(CID.decode(bytes(data[pos + 1 : pos + 1 + length])))
        pos += 1 + length
    return out


def make_dag(seed: int, leaves: int = 3, size: int = 100) -> tuple[Block, list[Block]]:
    """A two-level DAG: (root, all blocks including root). Leaves are raw and unique per seed."""
    leaf_blocks = [raw_block(os.urandom(size) + bytes([seed, i])) for i in range(leaves)]
    root = encode_node([b.cid for b in leaf_blocks], payload=bytes([seed]))
    return root, [root, *leaf_blocks]


StoreFactory = Callable[..., BlockStore]


@pytest.fixture(params=["memory", "lmdb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of stores of one kind; every store it made is closed at teardown."""
    made: list[BlockStore] = []
    counter = iter(range(1000))

    def factory(**kwargs: object) -> BlockStore:
        if request.param == "memory":
            store: BlockStore = MemoryBlockStore(**kwargs)  # type: ignore[arg-type]
        else:
            kwargs.setdefault("sync", False)
            store = LmdbBlockStore(tmp_path / f"db{next(counter)}", **kwargs)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> BlockStore:
    return make_store()
