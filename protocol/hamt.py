"""UnixFS HAMT-sharded directories (Type ``HAMTShard``), as written by go-unixfs/boxo and Helia.

Checked against the reference implementations (boxo ``ipld/unixfs/hamt``, ipfs-unixfs-importer
``src/dir-sharded.ts`` with ``hamt-sharding``) and the UnixFS spec:

* **Hash**: ``murmur3-x64-64`` (multihash code 0x22) = the first 64-bit half (h1) of
  MurmurHash3 x64-128 with seed 0, as *big-endian* bytes. Go writes ``murmur3.New64().Sum(nil)``
  (h1 big-endian); Helia takes the first 8 bytes of the little-endian 128-bit digest and reverses
  them. With ``mmh3`` that is ``mmh3.hash_bytes(name, 0, x64arch=True)[7::-1]``. Spec check:
  ``"470.txt"`` → ``00 6E …`` (root bucket ``00``, sub-shard bucket ``6E``), ``"742.txt"`` →
  ``00 FF …``.
* **Bucket index** at depth *d*: the next ``log2(fanout)`` bits of that hash, most significant
  bit first (byte *d* for fanout 256).
* **Link names**: the bucket index as upper-case hex, zero-padded to ``len(hex(fanout - 1))``
  characters ("00".."FF"), followed by the entry name for an entry, or nothing for a sub-shard.
* **Data**: UnixFS ``{Type: HAMTShard, Data: bitfield, hashType: 0x22, fanout}`` where the
  bitfield has bit *i* set iff bucket *i* is occupied, written as a minimal big-endian integer
  (go-bitfield ``Bytes()`` strips leading zero bytes; Helia reverses its trimmed little-endian
  array, which gives the same bytes).
* **Shape**: a bucket holds one entry, or a sub-shard when two or more names share the bucket;
  with only insertions this is canonical, so Kubo and Helia build the same tree.
* **Tsize** of a sub-shard link = its block size + the Tsizes of its links.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import mmh3

from . import dagpb, unixfs
from .cid import CID, DAG_PB, Block, cid_for
from .dagpb import PBLink, PBNode
from .errors import IntegrityError, ValidationError
from .unixfs import DataType, UnixFSData

__all__ = [
    "DEFAULT_FANOUT",
    "HAMT_HASH_CODE",
    "MAX_FANOUT",
    "ShardEntry",
    "build_shard",
    "fanout_bits",
    "find_in_shard",
    "hamt_hash",
    "iter_shard",
    "shard_bucket_count",
]

HAMT_HASH_CODE = 0x22  # murmur3-x64-64
DEFAULT_FANOUT = 256
#: The spec caps fanout at 1024 (CVE-2023-23625: huge fanouts exhaust memory).
MAX_FANOUT = 1024
_HASH_BITS = 64

#: Loads a shard node: CID -> (dag-pb node, its UnixFS data). Raises NotFoundError/IntegrityError.
ShardLoader = Callable[[CID], tuple[PBNode, UnixFSData]]


class ShardEntry(NamedTuple):
    """One directory entry to place in a HAMT: its name, target and cumulative size."""

    name: str
    cid: CID
    tsize: int


def hamt_hash(name: bytes) -> bytes:
    """The 8-byte murmur3-x64-64 digest of ``name`` used to place it in a UnixFS HAMT."""
    return mmh3.hash_bytes(name, 0, x64arch=True)[7::-1]


def fanout_bits(fanout: int) -> int:
    """log2(fanout); the fanout must be a power of two between 8 and 1024."""
    if not isinstance(fanout, int) or fanout < 8 or fanout > MAX_FANOUT or fanout & (fanout - 1):
        raise ValidationError(f"HAMT fanout {fanout!r} must be a power of two in [8, 1024]")
    return fanout.bit_length() - 1


def _bucket(hash_int: int, depth: int, bits: int) -> int:
    """Bucket index at ``depth``: the bits [depth*bits, (depth+1)*bits) of the hash, MSB first."""
    shift = _HASH_BITS - (depth + 1) * bits
    if shift < 0:
        # Go fails the same way ("sharded directory too deep"); it needs a 64-bit collision.
        raise ValidationError("HAMT too deep: names collide in all 64 hash bits")
    return (hash_int >> shift) & ((1 << bits) - 1)


def _prefix_width(fanout: int) -> int:
    return len(f"{fanout - 1:X}")


# --------------------------------------------------------------------------------------------
# building


# A trie node: bucket index -> (hash as int, entry) or a child trie node.
_Trie = dict[int, "tuple[int, ShardEntry] | _Trie"]


def _insert(trie: _Trie, hash_int: int, entry: ShardEntry, depth: int, bits: int) -> None:
    while True:
        idx = _bucket(hash_int, depth, bits)
        slot = trie.get(idx)
        if slot is None:
            trie[idx] = (hash_int, entry)
            return
        if isinstance(slot, dict):
            trie, depth = slot, depth + 1
            continue
        if slot[1].name == entry.name:
            raise ValidationError(f"duplicate name {entry.name!r} in directory")
        child: _Trie = {}
        _insert(child, slot[0], slot[1], depth + 1, bits)
        trie[idx] = child
        trie, depth = child, depth + 1


def shard_bucket_count(names: Iterable[str], fanout: int = DEFAULT_FANOUT) -> int:
    """How many root buckets ``names`` occupy (a cheap diagnostic, used by tests)."""
    bits = fanout_bits(fanout)
    return len({_bucket(int.from_bytes(hamt_hash(n.encode()), "big"), 0, bits) for n in names})


def build_shard(
    entries: Iterable[ShardEntry],
    *,
    fanout: int,
    cid_version: int,
    emit: Callable[[Block], None],
) -> tuple[CID, int]:
    """Build the HAMT for ``entries``; emits every shard block (children first).

    Returns the root shard's CID and its cumulative size (Tsize). Duplicate names raise
    :class:`ValidationError`.
    """
    bits = fanout_bits(fanout)
    width = _prefix_width(fanout)
    root: _Trie = {}
    for entry in entries:
        hash_int = int.from_bytes(hamt_hash(entry.name.encode("utf-8")), "big")
        _insert(root, hash_int, entry, 0, bits)
    return _encode_trie(root, fanout, width, cid_version, emit)


def _encode_trie(
    trie: _Trie, fanout: int, width: int, cid_version: int, emit: Callable[[Block], None]
) -> tuple[CID, int]:
    links: list[PBLink] = []
    bitmap = 0
    total = 0
    for idx in sorted(trie):
        slot = trie[idx]
        prefix = f"{idx:0{width}X}"
        bitmap |= 1 << idx
        if isinstance(slot, dict):
            cid, tsize = _encode_trie(slot, fanout, width, cid_version, emit)
            links.append(PBLink(cid, prefix, tsize))
        else:
            entry = slot[1]
            tsize = entry.tsize
            links.append(PBLink(entry.cid, prefix + entry.name, tsize))
        total += tsize
    meta = UnixFSData(
        DataType.HAMT_SHARD,
        data=bitmap.to_bytes((bitmap.bit_length() + 7) // 8, "big"),
        hash_type=HAMT_HASH_CODE,
        fanout=fanout,
    )
    block = dagpb.encode(PBNode(tuple(links), unixfs.encode(meta)))
    cid = cid_for(block, DAG_PB, cid_version)
    emit(Block(cid, block))
    return cid, len(block) + total


# --------------------------------------------------------------------------------------------
# reading


class _ShardLink(NamedTuple):
    bucket: int
    name: str | None  # None for a sub-shard link
    cid: CID


def _check_shard(node: PBNode, meta: UnixFSData, where: str) -> tuple[int, list[_ShardLink]]:
    """Validate a shard node; returns (bits per level, its links parsed by bucket)."""
    if meta.type is not DataType.HAMT_SHARD:
        raise IntegrityError(f"{where}: expected a HAMT shard, found UnixFS type {meta.type.name}")
    if meta.hash_type != HAMT_HASH_CODE:
        raise IntegrityError(f"{where}: unsupported HAMT hash function {meta.hash_type}")
    if meta.fanout is None:
        raise IntegrityError(f"{where}: HAMT shard without fanout")
    try:
        bits = fanout_bits(meta.fanout)
    except ValidationError as exc:
        raise IntegrityError(f"{where}: {exc}") from None
    fanout = meta.fanout
    bitfield = meta.data or b""
    if len(bitfield) > fanout // 8:
        raise IntegrityError(f"{where}: HAMT bitfield longer than fanout/8 bytes")
    width = _prefix_width(fanout)
    parsed: list[_ShardLink] = []
    seen = 0
    for link in node.links:
        name = link.name or ""
        prefix = name[:width]
        if len(prefix) != width or prefix.upper() != prefix:
            raise IntegrityError(f"{where}: bad HAMT link name {name!r}")
        try:
            idx = int(prefix, 16)
        except ValueError:
            raise IntegrityError(f"{where}: bad HAMT link name {name!r}") from None
        if idx >= fanout or (seen >> idx) & 1 or not all(c in "0123456789ABCDEF" for c in prefix):
            raise IntegrityError(f"{where}: bad or repeated HAMT bucket in link {name!r}")
        seen |= 1 << idx
        parsed.append(_ShardLink(idx, name[width:] or None, link.hash))
    if int.from_bytes(bitfield, "big") != seen:
        raise IntegrityError(f"{where}: HAMT bitfield does not match its links")
    return bits, parsed


def find_in_shard(
    load: ShardLoader, node: PBNode, meta: UnixFSData, name: str, where: str
) -> CID | None:
    """Look ``name`` up in the HAMT rooted at ``node``; ``None`` if it is not there."""
    hash_int = int.from_bytes(hamt_hash(name.encode("utf-8")), "big")
    depth = 0
    fanout = meta.fanout
    while True:
        if meta.fanout != fanout:
            raise IntegrityError(f"{where}: HAMT sub-shard with a different fanout")
        bits, links = _check_shard(node, meta, where)
        try:
            idx = _bucket(hash_int, depth, bits)
        except ValidationError:
            raise IntegrityError(f"{where}: HAMT deeper than its hash allows") from None
        for link in links:
            if link.bucket != idx:
                continue
            if link.name is None:
                node, meta = load(link.cid)
                depth += 1
                break
            return link.cid if link.name == name else None
        else:
            return None


def iter_shard(
    load: ShardLoader, node: PBNode, meta: UnixFSData, where: str
) -> Iterator[tuple[str, CID]]:
    """All (name, CID) entries of the HAMT rooted at ``node``, in bucket order.

    Every entry is checked to sit in the bucket its name hashes to, so a listing never shows a
    name that a lookup would not find.
    """
    yield from _iter_shard(load, node, meta, where, ())


def _iter_shard(
    load: ShardLoader, node: PBNode, meta: UnixFSData, where: str, path: tuple[int, ...]
) -> Iterator[tuple[str, CID]]:
    bits, links = _check_shard(node, meta, where)
    if len(path) * bits >= _HASH_BITS:
        raise IntegrityError(f"{where}: HAMT deeper than its hash allows")
    for link in links:
        here = (*path, link.bucket)
        if link.name is None:
            sub_node, sub_meta = load(link.cid)
            if sub_meta.fanout != meta.fanout:
                raise IntegrityError(f"{where}: HAMT sub-shard with a different fanout")
            yield from _iter_shard(load, sub_node, sub_meta, where, here)
        else:
            hash_int = int.from_bytes(hamt_hash(link.name.encode("utf-8")), "big")
            if any(_bucket(hash_int, d, bits) != idx for d, idx in enumerate(here)):
                raise IntegrityError(f"{where}: HAMT entry {link.name!r} is in the wrong bucket")
            yield link.name, link.cid
