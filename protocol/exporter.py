"""Reading UnixFS DAGs back: stat, path resolution, file contents, directory listings, walks.

Sans-IO: blocks come from a caller-supplied ``get(cid) -> bytes`` (which raises
:class:`~dre.protocol.errors.NotFoundError` when it lacks a block). Every block is checked
against its CID before it is used, and every node is checked for UnixFS consistency (blocksizes
against children, filesize against the sum), so a corrupt or malicious DAG raises
:class:`~dre.protocol.errors.IntegrityError` instead of returning wrong bytes. Only raw and dag-pb
UnixFS are accepted; anything else raises :class:`~dre.protocol.errors.ValidationError`.

:func:`read_file_range` and :func:`file_range_blocks` read (or list) only the blocks on the way to
a byte range, with the same checks, so an HTTP ``Range`` or a CAR's ``entity-bytes`` costs a few
blocks whatever the file's size.

Directory names coming out of :func:`list_directory` and :func:`walk` are checked to be safe
path components (no ``/``, NUL, ``.``, ``..`` or empty names), so materializing a walk on disk
cannot escape the target directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from . import dagpb, hamt, unixfs
from .cid import CID, DAG_PB, RAW, verify_block
from .dagpb import PBNode
from .errors import IntegrityError, NotFoundError, ValidationError
from .unixfs import DataType, UnixFSData

__all__ = [
    "BlockGetter",
    "NodeInfo",
    "file_range_blocks",
    "list_directory",
    "read_file",
    "read_file_range",
    "read_symlink",
    "resolve_path",
    "stat",
    "walk",
]

#: Fetches a block's bytes by CID; raises NotFoundError when it is not available.
BlockGetter = Callable[[CID], bytes]

#: Height of a file DAG we follow. 174-wide trees of 256 KiB leaves reach exabytes at height 8.
MAX_FILE_DEPTH = 32
#: Directory nesting we follow in :func:`walk` (the importer accepts 256-component paths).
MAX_WALK_DEPTH = 256
#: Entries :func:`walk` yields before giving up: a DAG can reuse one sub-directory many times,
#: so a tiny DAG may describe an astronomically large tree.
MAX_WALK_ENTRIES = 10_000_000

_FILE_TYPES = (DataType.FILE, DataType.RAW)
_DIR_TYPES = (DataType.DIRECTORY, DataType.HAMT_SHARD)


class NodeInfo(NamedTuple):
    """What a CID is: ``kind`` is "file", "directory" or "symlink"; ``size`` is the file's
    length in bytes, the symlink target's length, or 0 for a directory (its logical size
    would need a full walk)."""

    kind: str
    size: int
    cid: CID


def _fetch(get: BlockGetter, cid: CID) -> tuple[int, bytes]:
    codec = cid.codec.code
    if codec not in (RAW, DAG_PB):
        raise ValidationError(f"{cid} is not a UnixFS node (codec {cid.codec.name})")
    data = get(cid)
    verify_block(cid, data)
    return codec, data


def _decode(cid: CID, data: bytes) -> tuple[PBNode, UnixFSData]:
    try:
        node = dagpb.decode(data)
        if node.data is None:
            raise IntegrityError("dag-pb node has no UnixFS data")
        meta = unixfs.decode(node.data)
    except IntegrityError as exc:
        raise IntegrityError(f"block {cid}: {exc}") from None
    _check_node(cid, node, meta)
    return node, meta


def _check_node(cid: CID, node: PBNode, meta: UnixFSData) -> None:
    """Semantic checks per UnixFS type (the codec checked the bytes)."""
    t = meta.type
    if t in _FILE_TYPES:
        if meta.hash_type is not None or meta.fanout is not None:
            raise IntegrityError(f"block {cid}: file node with HAMT fields")
        if len(meta.blocksizes) != len(node.links):
            raise IntegrityError(
                f"block {cid}: {len(meta.blocksizes)} blocksizes for {len(node.links)} links"
            )
        expected = len(meta.data or b"") + sum(meta.blocksizes)
        if meta.filesize is not None and meta.filesize != expected:
            raise IntegrityError(
                f"block {cid}: filesize {meta.filesize} but data and blocksizes sum to {expected}"
            )
    elif t is DataType.DIRECTORY:
        for link in node.links:
            if link.name is None:
                raise IntegrityError(f"block {cid}: directory link without a name")
    elif t is DataType.SYMLINK:
        if node.links:
            raise IntegrityError(f"block {cid}: symlink with links")
    elif t is DataType.METADATA:
        raise ValidationError(f"{cid}: UnixFS Metadata nodes are not supported")


def _load(get: BlockGetter, cid: CID) -> tuple[PBNode, UnixFSData] | bytes:
    """A raw block's bytes, or a dag-pb node with its UnixFS data."""
    codec, data = _fetch(get, cid)
    if codec == RAW:
        return data
    return _decode(cid, data)


def _file_size(meta: UnixFSData) -> int:
    if meta.filesize is not None:
        return meta.filesize
    return len(meta.data or b"") + sum(meta.blocksizes)


def _info(cid: CID, loaded: tuple[PBNode, UnixFSData] | bytes) -> NodeInfo:
    if isinstance(loaded, bytes):
        return NodeInfo("file", len(loaded), cid)
    _node, meta = loaded
    if meta.type in _FILE_TYPES:
        return NodeInfo("file", _file_size(meta), cid)
    if meta.type in _DIR_TYPES:
        return NodeInfo("directory", 0, cid)
    return NodeInfo("symlink", len(meta.data or b""), cid)


def stat(get: BlockGetter, cid: CID) -> NodeInfo:
    """Kind and size of the UnixFS node ``cid`` (reads one block)."""
    return _info(cid, _load(get, cid))


def read_symlink(get: BlockGetter, cid: CID) -> str:
    """The target of the UnixFS symlink ``cid``; ValidationError if it is something else."""
    loaded = _load(get, cid)
    if isinstance(loaded, bytes) or loaded[1].type is not DataType.SYMLINK:
        raise ValidationError(f"{cid} is a {_info(cid, loaded).kind}, not a symlink")
    try:
        return (loaded[1].data or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError(f"block {cid}: symlink target is not UTF-8") from None


def _shard_loader(get: BlockGetter) -> hamt.ShardLoader:
    def load(cid: CID) -> tuple[PBNode, UnixFSData]:
        loaded = _load(get, cid)
        if isinstance(loaded, bytes):
            raise IntegrityError(f"HAMT link {cid} points to a raw block")
        return loaded

    return load


def _entries(
    get: BlockGetter, cid: CID, node: PBNode, meta: UnixFSData
) -> Iterator[tuple[str, CID]]:
    if meta.type is DataType.HAMT_SHARD:
        items = hamt.iter_shard(_shard_loader(get), node, meta, str(cid))
    else:
        items = ((link.name or "", link.hash) for link in node.links)
    for name, child in items:
        if name in ("", ".", "..") or "/" in name or "\x00" in name:
            raise IntegrityError(f"directory {cid} has an unsafe entry name {name!r}")
        yield name, child


def list_directory(get: BlockGetter, cid: CID) -> Iterator[tuple[str, CID]]:
    """(name, CID) of each entry of a directory, flat or HAMT-sharded, in link order."""
    loaded = _load(get, cid)
    if isinstance(loaded, bytes) or loaded[1].type not in _DIR_TYPES:
        raise ValidationError(f"{cid} is not a directory")
    node, meta = loaded
    yield from _entries(get, cid, node, meta)


def resolve_path(get: BlockGetter, root: CID, path: str) -> CID:
    """The CID at ``path`` ("a/b.txt") below the directory ``root``; "" is ``root`` itself.

    Empty and "." components are skipped; ".." is refused. Symlinks are not followed.
    """
    if not isinstance(path, str):
        raise ValidationError(f"invalid path {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValidationError(f"invalid path {path!r}: '..' is not allowed")
    current = root
    walked = str(root)
    for part in parts:
        loaded = _load(get, current)
        if isinstance(loaded, bytes) or loaded[1].type not in _DIR_TYPES:
            raise NotFoundError(f"no link named {part!r} under {walked}: not a directory")
        node, meta = loaded
        found: CID | None = None
        if meta.type is DataType.HAMT_SHARD:
            found = hamt.find_in_shard(_shard_loader(get), node, meta, part, walked)
        else:
            for link in node.links:
                if link.name == part:
                    found = link.hash
                    break
        if found is None:
            raise NotFoundError(f"no link named {part!r} under {walked}")
        current = found
        walked = f"{walked}/{part}"
    return current


def _load_file(get: BlockGetter, cid: CID) -> tuple[PBNode, UnixFSData] | bytes:
    """The root of the file ``cid``: a raw block's bytes or a file node; ValidationError if
    ``cid`` is a directory or a symlink."""
    loaded = _load(get, cid)
    if not isinstance(loaded, bytes) and loaded[1].type not in _FILE_TYPES:
        meta = loaded[1]
        kind = "a directory" if meta.type in _DIR_TYPES else f"a {meta.type.name.lower()}"
        raise ValidationError(f"{cid} is {kind}, not a file")
    return loaded


def _load_child(
    get: BlockGetter, parent: CID, cid: CID, expected: int
) -> tuple[PBNode, UnixFSData] | bytes:
    """A child of the file node ``parent``, checked to be a file of the ``expected`` size that
    the parent's blocksizes give it (so a reader never returns more or fewer bytes than the
    root promised)."""
    child = _load(get, cid)
    if isinstance(child, bytes):
        if len(child) != expected:
            raise IntegrityError(
                f"block {cid}: {len(child)} bytes, parent {parent} says {expected}"
            )
        return child
    meta = child[1]
    if meta.type not in _FILE_TYPES:
        raise IntegrityError(f"file {parent} links to a {meta.type.name} node")
    if _file_size(meta) != expected:
        raise IntegrityError(
            f"block {cid}: size {_file_size(meta)}, parent {parent} says {expected}"
        )
    return child


def read_file(get: BlockGetter, cid: CID) -> Iterator[bytes]:
    """The bytes of the file ``cid``, one piece per leaf, checked against the file's sizes."""
    loaded = _load_file(get, cid)
    if isinstance(loaded, bytes):
        yield loaded
        return
    node, meta = loaded
    yield from _read_node(get, cid, node, meta, 0)


def _read_node(
    get: BlockGetter, cid: CID, node: PBNode, meta: UnixFSData, depth: int
) -> Iterator[bytes]:
    if depth > MAX_FILE_DEPTH:
        raise IntegrityError(f"file DAG deeper than {MAX_FILE_DEPTH} levels at {cid}")
    if meta.data:
        yield meta.data
    for link, expected in zip(node.links, meta.blocksizes, strict=True):
        child = _load_child(get, cid, link.hash, expected)
        if isinstance(child, bytes):
            yield child
        else:
            yield from _read_node(get, link.hash, child[0], child[1], depth + 1)


def read_file_range(get: BlockGetter, cid: CID, start: int, end: int) -> Iterator[bytes]:
    """Bytes ``start``..``end`` (inclusive) of the file ``cid``, reading only the blocks on the
    way to them; every block is verified and checked like :func:`read_file` checks it.

    Bytes past the end of the file are simply not there (a range beyond it yields nothing);
    ``end < start`` is an empty range. ValidationError if ``start`` is negative.
    """
    for _block, piece in _range_walk(get, cid, start, end):
        if piece:
            yield piece


def file_range_blocks(get: BlockGetter, cid: CID, start: int, end: int) -> Iterator[CID]:
    """The CIDs of the blocks that prove bytes ``start``..``end`` (inclusive) of the file
    ``cid``, depth-first: what a client needs to verify that range (a CAR's ``entity-bytes``)."""
    for block, _piece in _range_walk(get, cid, start, end):
        yield block


def _range_walk(
    get: BlockGetter, cid: CID, start: int, end: int
) -> Iterator[tuple[CID, bytes | None]]:
    if start < 0:
        raise ValidationError(f"a file range cannot start before byte 0 (got {start})")
    loaded = _load_file(get, cid)
    if end < start:  # an empty range: its proof is the root alone
        yield cid, None
        return
    yield from _range_node(get, cid, loaded, start, end, 0)


def _range_node(
    get: BlockGetter,
    cid: CID,
    loaded: tuple[PBNode, UnixFSData] | bytes,
    start: int,
    end: int,
    depth: int,
) -> Iterator[tuple[CID, bytes | None]]:
    """(block, its bytes in the range or None) for every block read, depth-first, for bytes
    ``start``..``end`` relative to the (already loaded and checked) node ``cid``."""
    if isinstance(loaded, bytes):
        yield cid, loaded[start : end + 1]
        return
    if depth > MAX_FILE_DEPTH:
        raise IntegrityError(f"file DAG deeper than {MAX_FILE_DEPTH} levels at {cid}")
    node, meta = loaded
    inline = meta.data or b""
    yield cid, inline[start : end + 1] if start < len(inline) else None
    position = len(inline)
    for link, child_size in zip(node.links, meta.blocksizes, strict=True):
        child_start, child_end = position, position + child_size - 1
        position += child_size
        # A zero-length child holds none of the bytes: not reading it is what makes this a
        # ranged read (read_file still reads and checks it).
        if child_size == 0 or child_end < start:
            continue
        if child_start > end:
            break
        child = _load_child(get, cid, link.hash, child_size)
        yield from _range_node(get, link.hash, child, max(start - child_start, 0),
                               min(end, child_end) - child_start, depth + 1)


def walk(
    get: BlockGetter, cid: CID, *, max_entries: int = MAX_WALK_ENTRIES
) -> Iterator[tuple[str, NodeInfo]]:
    """Depth-first (pre-order) walk: ("", root), then ("a", …), ("a/b.txt", …), ….

    Paths are relative POSIX paths; a file or symlink root yields just ("", info).
    """
    count = 0
    # Explicit stack instead of recursion: deep trees must not hit Python's recursion limit.
    stack: list[tuple[str, CID, int]] = [("", cid, 0)]
    while stack:
        path, current, depth = stack.pop()
        count += 1
        if count > max_entries:
            raise IntegrityError(f"walk of {cid} exceeds {max_entries} entries")
        loaded = _load(get, current)
        info = _info(current, loaded)
        yield path, info
        if info.kind != "directory" or isinstance(loaded, bytes):
            continue
        if depth >= MAX_WALK_DEPTH:
            raise IntegrityError(f"walk of {cid} nests deeper than {MAX_WALK_DEPTH} levels")
        node, meta = loaded
        children = list(_entries(get, current, node, meta))
        for name, child in reversed(children):
            stack.append((f"{path}/{name}" if path else name, child, depth + 1))
