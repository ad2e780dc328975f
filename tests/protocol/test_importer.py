"""UnixFS importer: reference CIDs (Kubo 0.22 / Helia), layout, streaming, validation."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from dre.protocol import dagpb, unixfs
from dre.protocol.cid import CID, DAG_PB, RAW, Block, cid_for, verify_block
from dre.protocol.errors import LocalProtocolError, ValidationError
from dre.protocol.importer import (
    PROFILE_V0,
    PROFILE_V1,
    DirectoryBuilder,
    FileImporter,
    ImportedEntry,
    ImportProfile,
    import_bytes,
)
from dre.protocol.unixfs import DataType

VECTORS_PATH = Path(__file__).resolve().parents[2] / "specs" / "vectors" / "unixfs.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text("utf-8"))
PROFILES = {"cid_v0": PROFILE_V0, "cid_v1": PROFILE_V1}


def generate(recipe: dict[str, Any]) -> bytes:
    """Bytes from a vector's machine-readable recipe."""
    if "literal_utf8" in recipe:
        return str(recipe["literal_utf8"]).encode("utf-8")
    return random.Random(recipe["random_seed"]).randbytes(recipe["size"])


def build_vector(
    vector: dict[str, Any], profile: ImportProfile
) -> tuple[ImportedEntry, list[Block]]:
    blocks: list[Block] = []
    if vector["kind"] == "file":
        importer = FileImporter(profile, blocks.append)
        importer.write(generate(vector["generate"]))
        return importer.finish(), blocks
    builder = DirectoryBuilder(profile, blocks.append)
    for entry in vector["entries"]:
        if "symlink" in entry:
            builder.add_symlink(entry["path"], entry["symlink"])
        else:
            importer = FileImporter(profile, blocks.append)
            importer.write(generate(entry["generate"]))
            builder.add_file(entry["path"], importer.finish())
    return builder.finish(), blocks


CASES = [
    pytest.param(v, key, id=f"{v['name']}-{key[4:]}")
    for v in VECTORS
    for key in ("cid_v0", "cid_v1")
    if v[key] is not None
]


@pytest.mark.parametrize(("vector", "key"), CASES)
def test_reference_cids(vector: dict[str, Any], key: str) -> None:
    root, blocks = build_vector(vector, PROFILES[key])
    assert str(root.cid) == vector[key]
    by_cid = {b.cid: b.data for b in blocks}
    assert root.cid in by_cid
    for block in blocks:
        verify_block(block.cid, block.data)
        if block.cid.codec.code == DAG_PB:
            assert block.cid.version == (0 if key == "cid_v0" else 1)
    if vector["kind"] == "file":
        assert root.size == len(generate(vector["generate"]))
    # Tsize of the root = every distinct block once (no dedup inside these vectors but leaves).
    assert root.tsize >= sum(len(d) for d in by_cid.values())


def test_vectors_file_is_well_formed() -> None:
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names))
    for v in VECTORS:
        assert {"name", "description", "how-to-generate", "cid_v0", "cid_v1"} <= set(v)


def test_empty_file_and_directory_well_known() -> None:
    assert (
        str(import_bytes(b"", PROFILE_V0)[0].cid)
        == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    )
    entry, blocks = import_bytes(b"", PROFILE_V1)
    assert str(entry.cid) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert entry == ImportedEntry(entry.cid, 0, 0) and blocks == [Block(entry.cid, b"")]
    empty = DirectoryBuilder(PROFILE_V0, lambda b: None).finish()
    assert str(empty.cid) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    assert empty.tsize == 4


def test_single_chunk_file_is_the_leaf() -> None:
    data = bytes(range(256)) * 1024  # exactly one 256 KiB chunk
    v1, blocks = import_bytes(data, PROFILE_V1)
    assert v1.cid == cid_for(data, RAW) and blocks == [Block(v1.cid, data)]
    v0, blocks = import_bytes(data, PROFILE_V0)
    assert len(blocks) == 1 and v0.cid.version == 0
    node = dagpb.decode(blocks[0].data)
    meta = unixfs.decode(node.data or b"")
    assert node.links == () and meta.type is DataType.FILE
    assert meta.data == data and meta.filesize == len(data)


def _tree_shape(root: CID, blocks: dict[CID, bytes]) -> Any:
    """Nested lists of leaf sizes: the shape of a file DAG."""
    if root.codec.code == RAW:
        return len(blocks[root])
    node = dagpb.decode(blocks[root])
    meta = unixfs.decode(node.data or b"")
    if not node.links:
        return len(meta.data or b"")
    assert [link.name for link in node.links] == [""] * len(node.links)
    children = [_tree_shape(link.hash, blocks) for link in node.links]
    assert meta.filesize == sum(_flat_size(c) for c in children)
    assert list(meta.blocksizes) == [_flat_size(c) for c in children]
    for link in node.links:
        assert link.tsize == _tsize(link.hash, blocks)
    return children


def _flat_size(shape: Any) -> int:
    return shape if isinstance(shape, int) else sum(_flat_size(s) for s in shape)


def _tsize(cid: CID, blocks: dict[CID, bytes]) -> int:
    if cid.codec.code == RAW:
        return len(blocks[cid])
    node = dagpb.decode(blocks[cid])
    return len(blocks[cid]) + sum(_tsize(link.hash, blocks) for link in node.links)


SMALL = ImportProfile(chunk_size=4, max_links=3)


@pytest.mark.parametrize(
    ("n_bytes", "shape"),
    [
        (1, 1),
        (4, 4),
        (5, [4, 1]),
        (12, [4, 4, 4]),
        (13, [[4, 4, 4], [1]]),  # one more leaf than fits: a parent with a single link
        (36, [[4, 4, 4]] * 3),
        (37, [[[4, 4, 4]] * 3, [[1]]]),
        (40, [[[4, 4, 4]] * 3, [[4]]]),
        (50, [[[4, 4, 4]] * 3, [[4, 4, 4], [2]]]),
    ],
)
def test_balanced_layout(n_bytes: int, shape: Any) -> None:
    data = bytes(range(n_bytes))
    for profile in (
        SMALL,
        ImportProfile(chunk_size=4, max_links=3, cid_version=0, raw_leaves=False),
    ):
        blocks: dict[CID, bytes] = {}
        importer = FileImporter(profile, lambda b, s=blocks: s.__setitem__(b.cid, b.data))
        importer.write(data)
        root = importer.finish()
        assert _tree_shape(root.cid, blocks) == shape
        assert root.size == n_bytes and root.tsize == _tsize(root.cid, blocks)


def test_174_links_boundary() -> None:
    profile = ImportProfile(chunk_size=1)  # 174 links per node, tiny chunks
    for n, top in ((174, 174), (175, 2), (348, 2), (349, 3)):
        blocks: dict[CID, bytes] = {}
        importer = FileImporter(profile, lambda b, s=blocks: s.__setitem__(b.cid, b.data))
        importer.write(random.Random(n).randbytes(n))
        root = importer.finish()
        assert len(dagpb.decode(blocks[root.cid]).links) == top


@pytest.mark.parametrize("profile", [PROFILE_V0, PROFILE_V1], ids=["v0", "v1"])
def test_streaming_any_write_sizes(profile: ImportProfile) -> None:
    data = random.Random(1).randbytes(3 * 262144 + 12345)
    expected, expected_blocks = import_bytes(data, profile)
    rng = random.Random(2)
    for _ in range(5):
        got: list[Block] = []
        importer = FileImporter(profile, got.append)
        pos = 0
        while pos < len(data):
            step = rng.choice([0, 1, 7, 4096, 262143, 262144, 262145, 600000])
            importer.write(memoryview(data)[pos : pos + step])
            pos += step
        assert importer.finish() == expected
        assert got == expected_blocks


def test_leaves_are_emitted_as_soon_as_complete() -> None:
    emitted: list[Block] = []
    importer = FileImporter(PROFILE_V1, emitted.append)
    importer.write(b"x" * 262143)
    assert emitted == []
    importer.write(b"x")
    assert len(emitted) == 1 and len(emitted[0].data) == 262144
    importer.write(b"y" * (262144 * 3 + 5))
    assert len(emitted) == 4
    importer.finish()
    assert len(emitted) == 6  # the 5-byte leaf and the root


def test_importer_state_errors() -> None:
    importer = FileImporter(PROFILE_V1, lambda b: None)
    importer.finish()
    with pytest.raises(LocalProtocolError):
        importer.write(b"x")
    with pytest.raises(LocalProtocolError):
        importer.finish()
    builder = DirectoryBuilder(PROFILE_V1, lambda b: None)
    builder.finish()
    with pytest.raises(LocalProtocolError):
        builder.add_directory("a")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cid_version": 2},
        {"chunk_size": 0},
        {"chunk_size": 2 * 1024 * 1024},
        {"max_links": 1},
        {"shard_threshold_bytes": -1},
        {"hamt_fanout": 100},
        {"hamt_fanout": 2048},
        {"shard_rule": "go"},
    ],
)
def test_profile_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ImportProfile(**kwargs)


def _file(data: bytes, profile: ImportProfile = PROFILE_V1) -> ImportedEntry:
    return import_bytes(data, profile)[0]


@pytest.mark.parametrize(
    "path",
    ["", "/a", "a/", "a//b", ".", "..", "a/../b", "./a", "a\x00b", "x" * 256, "a/" * 300 + "b"],
)
def test_invalid_paths(path: str) -> None:
    builder = DirectoryBuilder(PROFILE_V1, lambda b: None)
    with pytest.raises(ValidationError):
        builder.add_file(path, _file(b"x"))


def test_duplicates_and_conflicts() -> None:
    builder = DirectoryBuilder(PROFILE_V1, lambda b: None)
    builder.add_file("a/b.txt", _file(b"1"))
    with pytest.raises(ValidationError):
        builder.add_file("a/b.txt", _file(b"2"))
    with pytest.raises(ValidationError):
        builder.add_file("a", _file(b"2"))  # a directory is there
    with pytest.raises(ValidationError):
        builder.add_file("a/b.txt/c", _file(b"2"))  # a file is in the way
    with pytest.raises(ValidationError):
        builder.add_directory("a/b.txt")
    with pytest.raises(ValidationError):
        builder.add_symlink("a/b.txt", "x")
    with pytest.raises(ValidationError):
        builder.add_symlink("a/l", "")
    with pytest.raises(ValidationError):
        builder.add_file("c", "not an entry")  # type: ignore[arg-type]
    builder.add_directory("a")  # idempotent for directories
    builder.add_directory("a/empty")
    builder.finish()


def test_directory_links_sorted_with_tsizes() -> None:
    blocks: dict[CID, bytes] = {}
    builder = DirectoryBuilder(PROFILE_V1, lambda b: blocks.__setitem__(b.cid, b.data))
    files = {"b": b"2", "a": b"1", "Z": b"3", "é": b"4", "sub/x": b"55"}
    for path, data in files.items():
        entry, file_blocks = import_bytes(data)
        blocks.update((b.cid, b.data) for b in file_blocks)
        builder.add_file(path, entry)
    builder.add_directory("empty")
    root = builder.finish()
    node = dagpb.decode(blocks[root.cid])
    assert unixfs.decode(node.data or b"").type is DataType.DIRECTORY
    assert [link.name for link in node.links] == ["Z", "a", "b", "empty", "sub", "é"]
    for link in node.links:
        assert link.tsize == _tsize(link.hash, blocks)
    assert root.tsize == _tsize(root.cid, blocks)
    assert root.size == 6


def test_nested_directory_matches_manual_construction() -> None:
    """A nested tree equals building the sub-directory on its own and linking it."""
    inner_blocks: list[Block] = []
    inner = DirectoryBuilder(PROFILE_V0, inner_blocks.append)
    inner.add_file("x.txt", _file(b"x", PROFILE_V0))
    inner_root = inner.finish()
    outer = DirectoryBuilder(PROFILE_V0, lambda b: None)
    outer.add_file("sub/x.txt", _file(b"x", PROFILE_V0))
    outer.add_file("y.txt", _file(b"y", PROFILE_V0))
    root = outer.finish()
    manual = dagpb.encode(
        dagpb.PBNode(
            (
                dagpb.PBLink(inner_root.cid, "sub", inner_root.tsize),
                dagpb.PBLink(_file(b"y", PROFILE_V0).cid, "y.txt", _file(b"y", PROFILE_V0).tsize),
            ),
            b"\x08\x01",
        )
    )
    assert root.cid == cid_for(manual, DAG_PB, 0)


def test_symlink_node() -> None:
    blocks: list[Block] = []
    builder = DirectoryBuilder(PROFILE_V1, blocks.append)
    builder.add_symlink("link", "../some/where")
    builder.finish()
    node = dagpb.decode(blocks[0].data)
    meta = unixfs.decode(node.data or b"")
    assert meta.type is DataType.SYMLINK and meta.data == b"../some/where"
    assert meta.filesize is None and node.links == ()


def test_throughput_is_close_to_sha256() -> None:
    data = random.Random(5).randbytes(32 * 1024 * 1024)
    start = time.perf_counter()
    importer = FileImporter(PROFILE_V1, lambda b: None)
    for pos in range(0, len(data), 1_000_000):
        importer.write(data[pos : pos + 1_000_000])
    importer.finish()
    elapsed = time.perf_counter() - start
    # sha256 alone runs ~1.8 GB/s here (~20 ms for 32 MiB); allow a wide margin for busy CI.
    assert elapsed < 2.0
