"""Ranged file reads: :func:`read_file_range` and :func:`file_range_blocks` read only the blocks
on the way to the bytes asked for, and return exactly ``data[start:end + 1]``."""

from __future__ import annotations

import hashlib
import random

import pytest
from dre.protocol import dagpb, unixfs
from dre.protocol.cid import CID, DAG_PB, RAW, Block, cid_for
from dre.protocol.errors import IntegrityError, ValidationError
from dre.protocol.exporter import BlockGetter, file_range_blocks, read_file, read_file_range
from dre.protocol.importer import ImportProfile, import_bytes
from dre.protocol.unixfs import DataType, UnixFSData
from dre.storage.blockstore import MemoryBlockStore
from hypothesis import given, settings
from hypothesis import strategies as st

#: Small chunks and a narrow tree: a 20 KB file is three levels deep.
DEEP = ImportProfile(chunk_size=1000, max_links=4)
#: dag-pb leaves carry their bytes as UnixFS data (CIDv0, as `ipfs add`).
PB_LEAVES = ImportProfile(cid_version=0, raw_leaves=False, chunk_size=1000, max_links=4,
                          shard_rule="kubo")
DEEP_BYTES = random.Random(8).randbytes(20_123)


def stored(data: bytes, profile: ImportProfile) -> tuple[MemoryBlockStore, CID]:
    entry, blocks = import_bytes(data, profile)
    store = MemoryBlockStore()
    store.put_many(blocks)
    return store, entry.cid


def recording(store: MemoryBlockStore, into: list[CID]) -> BlockGetter:
    def get(cid: CID) -> bytes:
        into.append(cid)
        return store.get(cid)

    return get


def blocks_covering(store: MemoryBlockStore, root: CID, start: int, end: int) -> list[CID]:
    """The oracle, written from the DAG's layout alone: depth-first, the root and every block
    whose bytes (its own and its children's) overlap ``start..end``."""
    found: list[CID] = []

    def visit(cid: CID, offset: int) -> None:
        data = store.get(cid)
        if cid.codec.code == RAW:
            return
        node = dagpb.decode(data)
        meta = unixfs.decode(node.data or b"")
        position = offset + len(meta.data or b"")
        for link, size in zip(node.links, meta.blocksizes, strict=True):
            if size and position <= end and start < position + size:
                found.append(link.hash)
                visit(link.hash, position)
            position += size

    found.append(root)
    visit(root, 0)
    return found


_profiles = st.builds(
    ImportProfile,
    cid_version=st.sampled_from([0, 1]),
    chunk_size=st.integers(1, 700),
    max_links=st.integers(2, 6),
).map(lambda p: p if p.cid_version == 1 else ImportProfile(
    cid_version=0, raw_leaves=False, chunk_size=p.chunk_size, max_links=p.max_links))


@settings(max_examples=150, deadline=None)
@given(_profiles, st.integers(0, 6000), st.integers(0, 2**32 - 1), st.data())
def test_range_is_the_slice_and_reads_only_the_path(
    profile: ImportProfile, size: int, seed: int, draw: st.DataObject
) -> None:
    data = random.Random(seed).randbytes(size)  # random bytes: no two leaves share a CID
    store, root = stored(data, profile)
    a = draw.draw(st.integers(0, size + 10), label="a")
    b = draw.draw(st.integers(a, size + 20), label="b")
    read: list[CID] = []
    assert b"".join(read_file_range(recording(store, read), root, a, b)) == data[a:b + 1]
    expected = blocks_covering(store, root, a, b)
    assert read == expected
    assert list(file_range_blocks(store.get, root, a, b)) == expected


def test_ranged_reads_touch_only_the_blocks_they_need() -> None:
    for profile in (DEEP, PB_LEAVES):
        store, cid = stored(DEEP_BYTES, profile)
        read: list[CID] = []
        got = b"".join(read_file_range(recording(store, read), cid, 2500, 2600))
        assert got == DEEP_BYTES[2500:2601]
        total = len(blocks_covering(store, cid, 0, len(DEEP_BYTES) - 1))
        assert len(read) <= 4 < total, (profile, len(read), total)  # root, inner, leaf
        for start, end in ((0, 0), (0, len(DEEP_BYTES) - 1), (999, 1000), (20_000, 20_122)):
            got = b"".join(read_file_range(store.get, cid, start, end))
            assert got == DEEP_BYTES[start:end + 1], (profile, start, end)


def test_whole_file_range_matches_read_file() -> None:
    data = random.Random(7).randbytes(3 * 262144 + 12345)
    store, cid = stored(data, ImportProfile())
    digest = hashlib.sha256()
    for piece in read_file_range(store.get, cid, 0, len(data) - 1):
        digest.update(piece)
    assert digest.digest() == hashlib.sha256(data).digest() == \
        hashlib.sha256(b"".join(read_file(store.get, cid))).digest()


def test_empty_and_outside_ranges_read_only_the_root() -> None:
    store, cid = stored(DEEP_BYTES, DEEP)
    for start, end in ((50_000, 60_000), (10, 9)):
        read: list[CID] = []
        assert b"".join(read_file_range(recording(store, read), cid, start, end)) == b""
        assert read == [cid]
    with pytest.raises(ValidationError, match="before byte 0"):
        list(read_file_range(store.get, cid, -1, 5))


def _file_node(store: MemoryBlockStore, links: list[tuple[CID, int]], meta: UnixFSData) -> CID:
    node = dagpb.PBNode(tuple(dagpb.PBLink(c, "", t) for c, t in links), unixfs.encode(meta))
    data = dagpb.encode(node)
    cid = cid_for(data, DAG_PB)
    store.put(Block(cid, data))
    return cid


def _raw(store: MemoryBlockStore, data: bytes, codec: int = RAW) -> CID:
    cid = cid_for(data, codec)
    store.put(Block(cid, data))
    return cid


def test_ranges_refuse_what_read_file_refuses() -> None:
    store = MemoryBlockStore()
    leaf = _raw(store, b"abc")
    bad_children = [
        # the parent says 4 bytes, the leaf has 3
        _file_node(store, [(leaf, 4)], UnixFSData(DataType.FILE, filesize=4, blocksizes=(4,))),
        # a file whose child is a directory
        _file_node(store, [(_raw(store, dagpb.encode(dagpb.PBNode((), b"\x08\x01")), DAG_PB), 4)],
                   UnixFSData(DataType.FILE, filesize=4, blocksizes=(4,))),
    ]
    for bad in bad_children:
        with pytest.raises(IntegrityError):
            list(read_file_range(store.get, bad, 0, 3))
    # filesize disagrees with blocksizes; HAMT fields on a file (the exporter's node checks)
    for meta in (UnixFSData(DataType.FILE, filesize=5, blocksizes=(3,)),
                 UnixFSData(DataType.FILE, filesize=3, blocksizes=(3,), fanout=16)):
        with pytest.raises(IntegrityError):
            list(file_range_blocks(store.get, _file_node(store, [(leaf, 3)], meta), 0, 2))
    # a corrupt block: bytes that do not hash to the CID
    corrupt = cid_for(b"xyz", RAW)
    with pytest.raises(IntegrityError):
        list(read_file_range(lambda c: b"XYZ", corrupt, 0, 1))
    # not a file at all
    directory = _raw(store, dagpb.encode(dagpb.PBNode((), b"\x08\x01")), DAG_PB)
    with pytest.raises(ValidationError, match="is a directory, not a file"):
        list(read_file_range(store.get, directory, 0, 1))
    with pytest.raises(ValidationError, match="not a UnixFS node"):
        list(read_file_range(store.get, _raw(store, b"\xa0", 0x71), 0, 1))


def test_deep_file_dag_is_bounded() -> None:
    store = MemoryBlockStore()
    cid = _raw(store, b"z")
    for _ in range(40):
        cid = _file_node(store, [(cid, 1)], UnixFSData(DataType.FILE, filesize=1, blocksizes=(1,)))
    with pytest.raises(IntegrityError, match="deeper"):
        list(read_file_range(store.get, cid, 0, 0))
