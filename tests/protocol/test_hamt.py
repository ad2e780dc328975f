"""UnixFS HAMT shards: hash function, layout, bitfield, lookups, and the sharding thresholds."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dre.protocol import dagpb, exporter, hamt, unixfs
from dre.protocol.cid import CID, DAG_PB, RAW, Block, cid_for
from dre.protocol.errors import IntegrityError, ValidationError
from dre.protocol.hamt import ShardEntry, build_shard, find_in_shard, hamt_hash, iter_shard
from dre.protocol.importer import (
    PROFILE_V0,
    PROFILE_V1,
    DirectoryBuilder,
    ImportedEntry,
    ImportProfile,
    import_bytes,
)
from dre.protocol.unixfs import DataType, UnixFSData


def test_hash_matches_spec_example() -> None:
    # UnixFS spec, HAMT path resolution example (Kubo-made fixture): "470.txt" is in root
    # bucket 00, sub-shard bucket 6E; "742.txt" in 00 then FF.
    assert hamt_hash(b"470.txt")[:2] == b"\x00\x6e"
    assert hamt_hash(b"742.txt")[:2] == b"\x00\xff"
    assert len(hamt_hash(b"")) == 8


@pytest.mark.parametrize("fanout", [0, 1, 4, 100, 2048, 3])
def test_fanout_validation(fanout: int) -> None:
    with pytest.raises(ValidationError):
        hamt.fanout_bits(fanout)


def test_fanout_bits() -> None:
    assert [hamt.fanout_bits(f) for f in (8, 16, 256, 1024)] == [3, 4, 8, 10]


def _store() -> tuple[dict[CID, bytes], Callable[[Block], None]]:
    blocks: dict[CID, bytes] = {}
    return blocks, lambda b: blocks.__setitem__(b.cid, b.data)


def _loader(blocks: dict[CID, bytes]) -> hamt.ShardLoader:
    def load(cid: CID) -> tuple[dagpb.PBNode, UnixFSData]:
        node = dagpb.decode(blocks[cid])
        return node, unixfs.decode(node.data or b"")

    return load


def _entries(n: int) -> list[ShardEntry]:
    return [ShardEntry(f"file-{i}.txt", cid_for(str(i).encode(), RAW), i + 1) for i in range(n)]


@pytest.mark.parametrize("fanout", [256, 16])
def test_build_lookup_and_iterate(fanout: int) -> None:
    blocks, emit = _store()
    entries = _entries(1500)
    root, tsize = build_shard(entries, fanout=fanout, cid_version=1, emit=emit)
    load = _loader(blocks)
    node, meta = load(root)
    assert meta.type is DataType.HAMT_SHARD and meta.hash_type == 0x22 and meta.fanout == fanout
    width = len(f"{fanout - 1:X}")
    subshards = [link for link in node.links if len(link.name or "") == width]
    assert subshards, "1500 names in 256 buckets must collide somewhere"
    for link in node.links:
        prefix = (link.name or "")[:width]
        assert prefix == prefix.upper() and int(prefix, 16) < fanout
    # cumulative size: every shard block plus the entries' Tsizes
    assert tsize == sum(len(b) for b in blocks.values()) + sum(e.tsize for e in entries)
    for entry in entries:
        assert find_in_shard(load, node, meta, entry.name, "root") == entry.cid
    assert find_in_shard(load, node, meta, "missing.txt", "root") is None
    listed = list(iter_shard(load, node, meta, "root"))
    assert sorted(listed) == sorted((e.name, e.cid) for e in entries)


def test_bitfield_is_minimal_big_endian() -> None:
    by_bucket: dict[int, str] = {}
    i = 0
    while 0 not in by_bucket or 255 not in by_bucket or 1 not in by_bucket:
        name = f"n{i}"
        by_bucket.setdefault(hamt_hash(name.encode())[0], name)
        i += 1
    blocks, emit = _store()
    cid = cid_for(b"x", RAW)
    root, _ = build_shard(
        [ShardEntry(by_bucket[b], cid, 1) for b in (0, 255)], fanout=256, cid_version=1, emit=emit
    )
    node = dagpb.decode(blocks[root])
    meta = unixfs.decode(node.data or b"")
    assert meta.data == b"\x80" + b"\x00" * 30 + b"\x01"
    assert [link.name for link in node.links] == ["00" + by_bucket[0], "FF" + by_bucket[255]]
    blocks, emit = _store()
    root, _ = build_shard(
        [ShardEntry(by_bucket[b], cid, 1) for b in (0, 1)], fanout=256, cid_version=0, emit=emit
    )
    assert root.version == 0
    assert unixfs.decode(dagpb.decode(blocks[root]).data or b"").data == b"\x03"


def test_collision_makes_subshard() -> None:
    first: dict[int, str] = {}
    pair: tuple[str, str] | None = None
    i = 0
    while pair is None:
        name = f"c{i}"
        bucket = hamt_hash(name.encode())[0]
        if bucket in first:
            pair = (first[bucket], name)
        first[bucket] = name
        i += 1
    blocks, emit = _store()
    cid = cid_for(b"x", RAW)
    root, _ = build_shard(
        [ShardEntry(n, cid, 1) for n in pair], fanout=256, cid_version=1, emit=emit
    )
    node = dagpb.decode(blocks[root])
    assert len(node.links) == 1 and node.links[0].name == f"{hamt_hash(pair[0].encode())[0]:02X}"
    sub = dagpb.decode(blocks[node.links[0].hash])
    assert {(link.name or "")[2:] for link in sub.links} == set(pair)
    assert node.links[0].tsize == len(blocks[node.links[0].hash]) + 2


def test_duplicate_names_rejected() -> None:
    cid = cid_for(b"x", RAW)
    with pytest.raises(ValidationError):
        build_shard([ShardEntry("a", cid, 1)] * 2, fanout=256, cid_version=1, emit=lambda b: None)


def test_reader_rejects_inconsistent_shards() -> None:
    blocks, emit = _store()
    root, _ = build_shard(_entries(20), fanout=256, cid_version=1, emit=emit)
    node = dagpb.decode(blocks[root])
    meta = unixfs.decode(node.data or b"")
    bad_meta = [
        UnixFSData(DataType.HAMT_SHARD, data=meta.data, hash_type=0x23, fanout=256),
        UnixFSData(DataType.HAMT_SHARD, data=meta.data, hash_type=0x22, fanout=100),
        UnixFSData(
            DataType.HAMT_SHARD, data=b"\x01" + (meta.data or b""), hash_type=0x22, fanout=256
        ),
        UnixFSData(DataType.HAMT_SHARD, data=b"\x01" * 33, hash_type=0x22, fanout=256),
        UnixFSData(DataType.DIRECTORY),
    ]
    load = _loader(blocks)
    for bad in bad_meta:
        with pytest.raises(IntegrityError):
            list(iter_shard(load, node, bad, "x"))
        with pytest.raises(IntegrityError):
            find_in_shard(load, node, bad, "file-1.txt", "x")
    # an entry moved into a bucket its name does not hash to
    link = node.links[0]
    moved = dagpb.PBLink(link.hash, f"{(int(link.name[:2], 16) + 1) % 256:02X}" + link.name[2:], 1)  # type: ignore[index]
    wrong = dagpb.PBNode((moved, *node.links[1:]), node.data)
    wrong_meta = UnixFSData(
        DataType.HAMT_SHARD,
        data=_bitmap([int((lk.name or "")[:2], 16) for lk in wrong.links]),
        hash_type=0x22,
        fanout=256,
    )
    with pytest.raises(IntegrityError):
        list(iter_shard(load, wrong, wrong_meta, "x"))


def _bitmap(buckets: list[int]) -> bytes:
    value = sum(1 << b for b in set(buckets))
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


# -------------------------------------------------------------------------------------------
# when directories become shards


def _is_shard(blocks: dict[CID, bytes], cid: CID) -> bool:
    meta = unixfs.decode(dagpb.decode(blocks[cid]).data or b"")
    return meta.type is DataType.HAMT_SHARD


def _dir(
    profile: ImportProfile,
    names: list[str],
    extra: Callable[[DirectoryBuilder], None] | None = None,
) -> tuple[dict[CID, bytes], ImportedEntry]:
    blocks, emit = _store()
    file_entry, file_blocks = import_bytes(b"x", profile)
    for b in file_blocks:
        emit(b)
    builder = DirectoryBuilder(profile, emit)
    for name in names:
        builder.add_file(name, file_entry)
    if extra is not None:
        extra(builder)
    return blocks, builder.finish()


def _names(count: int, length: int, last_length: int | None = None) -> list[str]:
    names = [f"{i:0{length}d}" for i in range(count)]
    if last_length is not None:
        names[-1] = f"{count - 1:0{last_length}d}"
    return names


def test_helia_threshold_is_strictly_greater() -> None:
    # CIDv1 links are 36 bytes: 4096 * (28 + 36) = 262144 = threshold exactly -> stays flat.
    blocks, root = _dir(PROFILE_V1, _names(4096, 28))
    assert not _is_shard(blocks, root.cid)
    # one byte more -> shard
    blocks, root = _dir(PROFILE_V1, _names(4096, 28, last_length=29))
    assert _is_shard(blocks, root.cid)
    assert root.cid.version == 1
    got = dict(exporter.list_directory(blocks.__getitem__, root.cid))
    assert len(got) == 4096


def test_kubo_threshold_is_greater_or_equal() -> None:
    # Kubo 0.22 (boxo `>=`), CIDv0 links are 34 bytes: 4096 * (30 + 34) = 262144 -> shard
    # (the 4096-file vector of Kubo's own profile tests).
    blocks, root = _dir(PROFILE_V0, _names(4096, 30))
    assert _is_shard(blocks, root.cid) and root.cid.version == 0
    # one byte less -> flat
    blocks, root = _dir(PROFILE_V0, _names(4096, 30, last_length=29))
    assert not _is_shard(blocks, root.cid)


def test_kubo_threshold_zero_disables_sharding() -> None:
    profile = ImportProfile(
        cid_version=0, raw_leaves=False, shard_rule="kubo", shard_threshold_bytes=0
    )
    blocks, root = _dir(profile, ["a", "b"])
    assert not _is_shard(blocks, root.cid)


def test_helia_counts_files_and_empty_dirs_not_filled_subdirs() -> None:
    at_threshold = _names(4096, 28)

    def filled_subdir(builder: DirectoryBuilder) -> None:
        builder.add_file("s/inner", import_bytes(b"y")[0])

    def filled_subdir_first(builder: DirectoryBuilder) -> None:
        builder.add_file("+/inner", import_bytes(b"y")[0])  # "+" sorts before the digits

    # A filled sub-directory stops counting once its first child arrives...
    blocks, root = _dir(PROFILE_V1, at_threshold, filled_subdir_first)
    assert not _is_shard(blocks, root.cid)
    # ...but Helia checks at its insertion, when it is still an empty directory: inserted
    # last ("s" sorts after the digits), it pushes the estimate over, and a HAMT never goes back.
    blocks, root = _dir(PROFILE_V1, at_threshold, filled_subdir)
    assert _is_shard(blocks, root.cid)

    blocks, root = _dir(PROFILE_V1, at_threshold, lambda b: b.add_directory("e"))
    assert _is_shard(blocks, root.cid)  # an empty directory entry has one

    kubo_v1 = ImportProfile(shard_rule="kubo")
    blocks, root = _dir(kubo_v1, _names(4095, 28), filled_subdir)
    # kubo counts everything: 4095*64 + len("s") + 36 = 262117 < 262144 -> flat
    assert not _is_shard(blocks, root.cid)
    blocks, root = _dir(kubo_v1, _names(4096, 28), filled_subdir)
    assert _is_shard(blocks, root.cid)


def test_sharded_tree_through_exporter() -> None:
    small = ImportProfile(shard_threshold_bytes=1000)
    blocks, emit = _store()
    builder = DirectoryBuilder(small, emit)
    expected: dict[str, bytes] = {}
    for i in range(300):
        path = f"d{i % 3}/f{i}.bin" if i % 2 else f"f{i}.txt"
        data = str(i).encode() * (i + 1)
        entry, file_blocks = import_bytes(data, small)
        for b in file_blocks:
            emit(b)
        builder.add_file(path, entry)
        expected[path] = data
    root = builder.finish()
    get = blocks.__getitem__
    assert _is_shard(blocks, root.cid)
    for path, data in expected.items():
        cid = exporter.resolve_path(get, root.cid, path)
        assert b"".join(exporter.read_file(get, cid)) == data
    walked = {p: info for p, info in exporter.walk(get, root.cid)}
    assert {p for p, info in walked.items() if info.kind == "file"} == set(expected)
    assert {p for p, info in walked.items() if info.kind == "directory"} == {"", "d0", "d1", "d2"}
    assert cid_for(blocks[root.cid], DAG_PB) == root.cid
