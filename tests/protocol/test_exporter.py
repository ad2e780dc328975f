"""Exporter: import -> export round trips, stat, paths, walks, and refusal of bad DAGs."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from dre.protocol import dagpb, unixfs
from dre.protocol.cid import CID, DAG_CBOR, DAG_PB, RAW, Block, cid_for
from dre.protocol.errors import IntegrityError, NotFoundError, ValidationError
from dre.protocol.exporter import (
    NodeInfo,
    list_directory,
    read_file,
    read_symlink,
    resolve_path,
    stat,
    walk,
)
from dre.protocol.importer import (
    PROFILE_V0,
    PROFILE_V1,
    DirectoryBuilder,
    FileImporter,
    ImportProfile,
    import_bytes,
)
from dre.protocol.unixfs import DataType, UnixFSData

PROFILES = [
    pytest.param(PROFILE_V0, id="v0"),
    pytest.param(PROFILE_V1, id="v1"),
    pytest.param(ImportProfile(chunk_size=5, max_links=3), id="tiny-v1"),
    pytest.param(
        ImportProfile(chunk_size=5, max_links=3, cid_version=0, raw_leaves=False), id="tiny-v0"
    ),
]


class Store:
    def __init__(self) -> None:
        self.blocks: dict[CID, bytes] = {}

    def put(self, block: Block) -> None:
        self.blocks[block.cid] = block.data

    def get(self, cid: CID) -> bytes:
        try:
            return self.blocks[cid]
        except KeyError:
            raise NotFoundError(f"block {cid} not found") from None

    def add_raw(self, data: bytes, codec: int = DAG_PB, version: int = 1) -> CID:
        cid = cid_for(data, codec, version)
        self.blocks[cid] = data
        return cid


def _import(store: Store, data: bytes, profile: ImportProfile) -> CID:
    importer = FileImporter(profile, store.put)
    importer.write(data)
    return importer.finish().cid


SIZES = [0, 1, 4, 5, 6, 15, 16, 46, 100, 262144, 262145, 700001]


@pytest.mark.parametrize(
    ("profile", "size"),
    [
        pytest.param(p.values[0], size, id=f"{p.id}-{size}")
        for p in PROFILES
        for size in SIZES
        if size < 1000 or p.values[0].chunk_size > 5  # tiny chunks: keep block counts small
    ],
)
def test_file_round_trip(profile: ImportProfile, size: int) -> None:
    store = Store()
    data = random.Random(size).randbytes(size)
    cid = _import(store, data, profile)
    assert b"".join(read_file(store.get, cid)) == data
    assert stat(store.get, cid) == NodeInfo("file", size, cid)
    assert list(walk(store.get, cid)) == [("", NodeInfo("file", size, cid))]


@pytest.mark.parametrize("profile", [PROFILE_V0, PROFILE_V1], ids=["v0", "v1"])
def test_tree_round_trip(profile: ImportProfile) -> None:
    store = Store()
    builder = DirectoryBuilder(profile, store.put)
    files = {
        "README.md": b"# hi\n",
        "src/pkg/__init__.py": b"",
        "src/pkg/core.py": random.Random(3).randbytes(300000),
        "src/z.txt": b"z",
        "ünïcode/名前.txt": b"utf8",
    }
    for path, data in files.items():
        builder.add_file(path, import_bytes(data, profile)[0])
        for block in import_bytes(data, profile)[1]:
            store.put(block)
    builder.add_directory("empty")
    builder.add_symlink("src/link", "pkg/core.py")
    root = builder.finish()

    walked = list(walk(store.get, root.cid))
    assert [p for p, _ in walked] == [
        "",
        "README.md",
        "empty",
        "src",
        "src/link",
        "src/pkg",
        "src/pkg/__init__.py",
        "src/pkg/core.py",
        "src/z.txt",
        "ünïcode",
        "ünïcode/名前.txt",
    ]
    kinds = {p: info.kind for p, info in walked}
    assert kinds["src/link"] == "symlink" and kinds["empty"] == "directory"
    assert dict(walked)["src/link"].size == len("pkg/core.py")
    for path, data in files.items():
        cid = resolve_path(store.get, root.cid, path)
        assert b"".join(read_file(store.get, cid)) == data
        assert dict(walked)[path] == NodeInfo("file", len(data), cid)
    assert resolve_path(store.get, root.cid, "") == root.cid
    assert resolve_path(store.get, root.cid, "/src//./pkg/") == resolve_path(
        store.get, root.cid, "src/pkg"
    )
    assert [name for name, _ in list_directory(store.get, root.cid)] == [
        "README.md",
        "empty",
        "src",
        "ünïcode",
    ]
    assert stat(store.get, root.cid) == NodeInfo("directory", 0, root.cid)


def test_resolve_errors() -> None:
    store = Store()
    builder = DirectoryBuilder(PROFILE_V1, store.put)
    entry, blocks = import_bytes(b"hello")
    for b in blocks:
        store.put(b)
    builder.add_file("a/b.txt", entry)
    root = builder.finish()
    with pytest.raises(NotFoundError, match=rf"no link named 'c.txt' under {root.cid}/a$"):
        resolve_path(store.get, root.cid, "a/c.txt")
    with pytest.raises(NotFoundError, match="not a directory"):
        resolve_path(store.get, root.cid, "a/b.txt/x")
    with pytest.raises(ValidationError):
        resolve_path(store.get, root.cid, "a/../b.txt")
    with pytest.raises(ValidationError):
        b"".join(read_file(store.get, root.cid))
    with pytest.raises(ValidationError):
        list(list_directory(store.get, entry.cid))
    missing = cid_for(b"nope", RAW)
    with pytest.raises(NotFoundError):
        stat(store.get, missing)


def test_non_unixfs_is_refused() -> None:
    store = Store()
    cbor = store.add_raw(b"\xa0", DAG_CBOR)
    for call in (stat, lambda g, c: list(read_file(g, c)), lambda g, c: list(walk(g, c))):
        with pytest.raises(ValidationError, match="not a UnixFS node"):
            call(store.get, cbor)
    # dag-pb without UnixFS data, or with garbage in it
    for raw in (b"", b"\x0a\x00", b"\x0a\x05\x00\x01\x02\x03\x04"):
        with pytest.raises(IntegrityError):
            stat(store.get, store.add_raw(raw))
    metadata = store.add_raw(
        dagpb.encode(dagpb.PBNode((), unixfs.encode(UnixFSData(DataType.METADATA))))
    )
    with pytest.raises(ValidationError):
        stat(store.get, metadata)


def test_block_not_matching_its_cid() -> None:
    store = Store()
    cid = _import(store, b"x" * 1000, PROFILE_V1)
    store.blocks[cid] = b"y" * 1000
    with pytest.raises(IntegrityError):
        b"".join(read_file(store.get, cid))


def _file_node(store: Store, links: list[tuple[CID, int]], meta: UnixFSData) -> CID:
    node = dagpb.PBNode(tuple(dagpb.PBLink(c, "", t) for c, t in links), unixfs.encode(meta))
    return store.add_raw(dagpb.encode(node), DAG_PB, 1)


def test_inconsistent_sizes_are_integrity_errors() -> None:
    store = Store()
    leaf = store.add_raw(b"abc", RAW)
    # blocksizes disagree with the leaf
    bad = _file_node(store, [(leaf, 3)], UnixFSData(DataType.FILE, filesize=4, blocksizes=(4,)))
    with pytest.raises(IntegrityError):
        b"".join(read_file(store.get, bad))
    # filesize disagrees with blocksizes
    bad = _file_node(store, [(leaf, 3)], UnixFSData(DataType.FILE, filesize=5, blocksizes=(3,)))
    with pytest.raises(IntegrityError):
        stat(store.get, bad)
    # more links than blocksizes
    bad = _file_node(
        store, [(leaf, 3), (leaf, 3)], UnixFSData(DataType.FILE, filesize=3, blocksizes=(3,))
    )
    with pytest.raises(IntegrityError):
        b"".join(read_file(store.get, bad))
    # a file linking to a directory
    empty_dir = store.add_raw(dagpb.encode(dagpb.PBNode((), b"\x08\x01")))
    bad = _file_node(
        store, [(empty_dir, 4)], UnixFSData(DataType.FILE, filesize=0, blocksizes=(0,))
    )
    with pytest.raises(IntegrityError):
        b"".join(read_file(store.get, bad))
    # inline data plus children is fine when consistent (old go-ipfs did this)
    ok = _file_node(
        store, [(leaf, 3)], UnixFSData(DataType.FILE, data=b"12", filesize=5, blocksizes=(3,))
    )
    assert b"".join(read_file(store.get, ok)) == b"12abc"
    # legacy Raw-typed leaves read as files
    legacy = store.add_raw(
        dagpb.encode(
            dagpb.PBNode((), unixfs.encode(UnixFSData(DataType.RAW, data=b"r", filesize=1)))
        ),
        DAG_PB,
        0,
    )
    assert b"".join(read_file(store.get, legacy)) == b"r"


def _dir_node(store: Store, names: list[str]) -> CID:
    leaf = store.add_raw(b"x", RAW)
    node = dagpb.PBNode(tuple(dagpb.PBLink(leaf, n, 1) for n in names), b"\x08\x01")
    return store.add_raw(dagpb.encode(node))


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "a\x00"])
def test_unsafe_names_refused(name: str) -> None:
    store = Store()
    bad = _dir_node(store, ["ok", name])
    with pytest.raises(IntegrityError):
        list(walk(store.get, bad))
    with pytest.raises(IntegrityError):
        list(list_directory(store.get, bad))


def test_directory_link_without_name() -> None:
    store = Store()
    leaf = store.add_raw(b"x", RAW)
    bad = store.add_raw(dagpb.encode(dagpb.PBNode((dagpb.PBLink(leaf, None, 1),), b"\x08\x01")))
    with pytest.raises(IntegrityError):
        stat(store.get, bad)


def test_walk_bounds() -> None:
    store = Store()
    # A directory that links the same sub-directory 10 times, 6 levels deep: 10**6 paths.
    current = _dir_node(store, ["leaf"])
    for _ in range(6):
        leaf = current
        node = dagpb.PBNode(tuple(dagpb.PBLink(leaf, f"d{i}", 1) for i in range(10)), b"\x08\x01")
        current = store.add_raw(dagpb.encode(node))
    with pytest.raises(IntegrityError, match="exceeds"):
        for _ in walk(store.get, current, max_entries=1000):
            pass


def test_deep_file_dag_is_bounded() -> None:
    store = Store()
    cid = store.add_raw(b"z", RAW)
    size = 1
    for _ in range(40):
        cid = _file_node(
            store, [(cid, size)], UnixFSData(DataType.FILE, filesize=size, blocksizes=(size,))
        )
    with pytest.raises(IntegrityError, match="deeper"):
        b"".join(read_file(store.get, cid))


def test_missing_child_is_not_found() -> None:
    store = Store()
    cid = _import(store, random.Random(0).randbytes(600000), PROFILE_V1)
    leaf = dagpb.decode(store.blocks[cid]).links[1].hash
    del store.blocks[leaf]
    with pytest.raises(NotFoundError):
        b"".join(read_file(store.get, cid))


def test_read_is_streaming() -> None:
    store = Store()
    cid = _import(store, random.Random(9).randbytes(5 * 262144), PROFILE_V1)
    fetched: list[CID] = []
    get: Callable[[CID], bytes] = lambda c: (fetched.append(c), store.get(c))[1]  # noqa: E731
    it = read_file(get, cid)
    first = next(it)
    assert len(first) == 262144 and len(fetched) == 2  # root and first leaf only


def test_read_symlink_returns_target_and_refuses_other_kinds() -> None:
    blocks: dict[bytes, bytes] = {}
    builder = DirectoryBuilder(PROFILE_V1, lambda b: blocks.__setitem__(bytes(b.cid), b.data))
    builder.add_symlink("link", "../target/é.txt")
    file_entry, file_blocks = import_bytes(b"data")
    for block in file_blocks:
        blocks[bytes(block.cid)] = block.data
    builder.add_file("file", file_entry)
    root = builder.finish()

    def get(cid: CID) -> bytes:
        return blocks[bytes(cid)]

    assert read_symlink(get, resolve_path(get, root.cid, "link")) == "../target/é.txt"
    with pytest.raises(ValidationError, match="not a symlink"):
        read_symlink(get, file_entry.cid)
    with pytest.raises(ValidationError, match="not a symlink"):
        read_symlink(get, root.cid)
