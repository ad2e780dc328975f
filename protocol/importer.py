"""UnixFS v1 importer: bytes and trees in, dag-pb/raw blocks out (sans-IO, streaming).

Byte-compatible with Kubo 0.22 ``ipfs add`` and Helia's ipfs-unixfs-importer 17.1.1:

* **Chunking**: fixed ``chunk_size`` (256 KiB) chunks; the last one may be shorter.
* **Leaves**: raw blocks (CIDv1, codec raw) with ``raw_leaves``, else dag-pb UnixFS ``File`` nodes
  carrying the chunk inline (``{Type: File, Data: chunk, filesize: len}``).
* **Layout**: balanced. Leaves are grouped ``max_links`` (174) at a time under UnixFS ``File``
  parents (``filesize`` + one ``blocksizes`` entry per child, links named ``""`` with Tsize),
  then those parents likewise, until one root remains. A single-chunk file is that leaf itself;
  an empty file is one empty leaf (v1: the empty raw block
  ``bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku``; v0:
  ``QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH``). This equals go's
  ``balanced.Layout`` (grow the root, fill recursively) and Helia's ``reduceToParents``.
* **Directories**: UnixFS ``Directory`` nodes (Data ``08 01``), links sorted by name bytes, link
  Tsize = the child's cumulative DAG size. Large directories become HAMT shards
  (:mod:`dre.protocol.hamt`), see :class:`ImportProfile` ``shard_rule`` for when.
* **Symlinks** (Kubo only; Helia follows them): ``{Type: Symlink, Data: target}``.
* CIDv0 profile: every dag-pb node gets a CIDv0; raw leaves (if asked for) are always CIDv1.

The importer holds no more than one chunk plus ``max_links`` links per tree level for a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from . import dagpb, hamt, unixfs
from .cid import CID, DAG_PB, RAW, Block, cid_for
from .dagpb import PBLink, PBNode
from .errors import LocalProtocolError, ValidationError
from .unixfs import DataType, UnixFSData

__all__ = [
    "PROFILE_V0",
    "PROFILE_V1",
    "DirectoryBuilder",
    "FileImporter",
    "ImportProfile",
    "ImportedEntry",
    "import_bytes",
    "validate_name",
]

#: Largest chunk we allow: Bitswap refuses blocks over 2 MiB, and leaves must travel over it.
MAX_CHUNK_SIZE = 1024 * 1024
#: Names longer than this cannot exist on the file systems trees come from (NAME_MAX).
MAX_NAME_BYTES = 255
#: Deepest path accepted (also bounds recursion when the tree is built).
MAX_PATH_DEPTH = 256
#: Longest symlink target (PATH_MAX).
MAX_SYMLINK_TARGET = 4096

_DIRECTORY_DATA = unixfs.encode(UnixFSData(DataType.DIRECTORY))  # b"\x08\x01"


@dataclass(frozen=True)
class ImportProfile:
    """Parameters that determine the CIDs of an import (change one, get other CIDs).

    ``shard_rule`` says when a directory becomes a HAMT. Both rules estimate a directory's size
    as the sum over its links of ``len(name in UTF-8) + len(child CID in bytes)``; they differ:

    * ``"helia"`` (ipfs-unixfs-importer ``src/dir-flat.ts`` ``estimateNodeSize`` and
      ``src/flat-to-shard.ts``: ``dir.estimateNodeSize() > threshold``): only children that
      already have a CID while the tree is being built count — files, symlinks and *empty*
      directories; a sub-directory with entries is flushed only at the end and is not counted.
      Shards when the estimate is strictly greater than the threshold.
    * ``"kubo"`` (boxo ``ipld/unixfs/io/directory.go`` ``needsToSwitchToHAMTDir`` as in Kubo
      0.22: ``estimatedSize + change >= HAMTShardingSize``, with ``linksize.LinkSizeFunction``
      = len(name) + len(cid bytes)): every child counts, sub-directories included; shards when
      the estimate is greater than *or equal to* the threshold; a threshold of 0 disables it.

    Both are evaluated on the finished tree, which equals evaluating on every insertion since an
    import only adds entries.
    """

    cid_version: int = 1
    raw_leaves: bool = True
    chunk_size: int = 262144
    max_links: int = 174
    shard_threshold_bytes: int = 262144
    hamt_fanout: int = 256
    shard_rule: Literal["helia", "kubo"] = field(default="helia")

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise ValidationError(f"cid_version must be 0 or 1, not {self.cid_version!r}")
        if not isinstance(self.chunk_size, int) or not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValidationError(f"chunk_size must be in [1, {MAX_CHUNK_SIZE}]")
        if not isinstance(self.max_links, int) or not 2 <= self.max_links <= 8192:
            raise ValidationError("max_links must be in [2, 8192]")
        if not isinstance(self.shard_threshold_bytes, int) or self.shard_threshold_bytes < 0:
            raise ValidationError("shard_threshold_bytes must be a non-negative integer")
        hamt.fanout_bits(self.hamt_fanout)
        if self.shard_rule not in ("helia", "kubo"):
            raise ValidationError(f"shard_rule must be 'helia' or 'kubo', not {self.shard_rule!r}")


#: ``ipfs add --cid-version=1`` (Kubo) = Helia's defaults with CIDv1: raw leaves, base32 CIDv1.
PROFILE_V1 = ImportProfile()
#: ``ipfs add`` (Kubo default): CIDv0, dag-pb leaves, Kubo's sharding rule.
PROFILE_V0 = ImportProfile(cid_version=0, raw_leaves=False, shard_rule="kubo")


class ImportedEntry(NamedTuple):
    """The root of an imported file or directory.

    ``tsize`` is the cumulative encoded size of the DAG (what a parent link's Tsize carries);
    ``size`` is the logical size: the file's bytes, or for a directory the sum over the files
    (and symlink targets) below it.
    """

    cid: CID
    tsize: int
    size: int


def _node_cid(block: bytes, profile: ImportProfile) -> CID:
    return cid_for(block, DAG_PB, profile.cid_version)


class FileImporter:
    """Imports one file, fed by :meth:`write` in pieces of any size.

    Leaf blocks are emitted as soon as their chunk is complete and parents as soon as a group of
    ``max_links`` is full; :meth:`finish` emits the rest and returns the root.
    """

    def __init__(self, profile: ImportProfile, emit: Callable[[Block], None]) -> None:
        self._profile = profile
        self._emit = emit
        self._chunk = profile.chunk_size
        self._buf = bytearray()
        # _levels[0] holds leaf links, _levels[i] holds parents of height i; each link is
        # (cid, tsize, logical size).
        self._levels: list[list[tuple[CID, int, int]]] = [[]]
        self._finished = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` to the file."""
        if self._finished:
            raise LocalProtocolError("write() after finish()")
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        n = len(view)
        pos = 0
        chunk = self._chunk
        buf = self._buf
        if buf:
            take = min(chunk - len(buf), n)
            buf += view[:take]
            pos = take
            if len(buf) < chunk:
                return
            self._leaf(bytes(buf))
            buf.clear()
        # Whole chunks straight from the caller's buffer: one copy each (into the block's bytes),
        # none when the caller already handed us exactly one chunk as bytes.
        if pos == 0 and n == chunk and isinstance(data, bytes):
            self._leaf(data)
            return
        while n - pos >= chunk:
            self._leaf(bytes(view[pos : pos + chunk]))
            pos += chunk
        if pos < n:
            buf += view[pos:]

    def _leaf(self, chunk: bytes) -> None:
        profile = self._profile
        if profile.raw_leaves:
            block = chunk
            cid = cid_for(block, RAW, 1)
        else:
            meta = UnixFSData(DataType.FILE, data=chunk or None, filesize=len(chunk))
            block = dagpb.encode(PBNode((), unixfs.encode(meta)))
            cid = _node_cid(block, profile)
        self._emit(Block(cid, block))
        self._push(0, (cid, len(block), len(chunk)))

    def _push(self, level: int, link: tuple[CID, int, int]) -> None:
        levels = self._levels
        while True:
            if level == len(levels):
                levels.append([])
            group = levels[level]
            if len(group) < self._profile.max_links:
                group.append(link)
                return
            # The group is full and the file goes on: close it under a parent one level up.
            parent = self._parent(group)
            levels[level] = [link]
            level, link = level + 1, parent

    def _parent(self, links: list[tuple[CID, int, int]]) -> tuple[CID, int, int]:
        sizes = tuple(size for _, _, size in links)
        filesize = sum(sizes)
        meta = UnixFSData(DataType.FILE, filesize=filesize, blocksizes=sizes)
        node = PBNode(tuple(PBLink(cid, "", tsize) for cid, tsize, _ in links), unixfs.encode(meta))
        block = dagpb.encode(node)
        cid = _node_cid(block, self._profile)
        self._emit(Block(cid, block))
        return cid, len(block) + sum(tsize for _, tsize, _ in links), filesize

    def finish(self) -> ImportedEntry:
        """Flush the last chunk and the parents; returns the file's root."""
        if self._finished:
            raise LocalProtocolError("finish() called twice")
        self._finished = True
        levels = self._levels
        if self._buf or not levels[0]:
            # An empty file is one empty leaf, as in Kubo and Helia.
            self._leaf(bytes(self._buf))
            self._buf = bytearray()
        level = 0
        while level < len(levels) - 1:
            self._push(level + 1, self._parent(levels[level]))
            levels[level] = []
            level += 1
        top = levels[-1]
        cid, tsize, size = top[0] if len(top) == 1 else self._parent(top)
        return ImportedEntry(cid, tsize, size)


def validate_name(name: str) -> bytes:
    """Check one path component; returns its UTF-8 bytes. Raises :class:`ValidationError`."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        raise ValidationError(f"invalid name {name!r}")
    if "/" in name or "\x00" in name:
        raise ValidationError(f"invalid name {name!r}: contains '/' or NUL")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"invalid name {name!r}: not valid Unicode") from None
    if len(raw) > MAX_NAME_BYTES:
        raise ValidationError(f"name {name[:40]!r}… is longer than {MAX_NAME_BYTES} bytes")
    return raw


def _split_path(path: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise ValidationError(f"invalid path {path!r}")
    parts = path.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        raise ValidationError(f"path {path[:80]!r} is deeper than {MAX_PATH_DEPTH} levels")
    for part in parts:
        try:
            validate_name(part)
        except ValidationError as exc:
            raise ValidationError(f"invalid path {path!r}: {exc}") from None
    return parts


class _Dir:
    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: dict[str, _Dir | ImportedEntry] = {}


class DirectoryBuilder:
    """Builds a directory tree from imported files, empty directories and symlinks.

    Paths are POSIX and relative to the root ("a.txt", "sub/dir/b.bin"); parents are created
    implicitly. :meth:`finish` emits every directory (and shard) block and returns the root.
    """

    def __init__(self, profile: ImportProfile, emit: Callable[[Block], None]) -> None:
        self._profile = profile
        self._emit = emit
        self._root = _Dir()
        self._finished = False

    def _parent_of(self, path: str) -> tuple[_Dir, str]:
        if self._finished:
            raise LocalProtocolError("directory builder already finished")
        parts = _split_path(path)
        node = self._root
        for i, part in enumerate(parts[:-1]):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Dir()
            elif not isinstance(child, _Dir):
                raise ValidationError(
                    f"cannot add {path!r}: {'/'.join(parts[: i + 1])!r} is not a directory"
                )
            node = child
        return node, parts[-1]

    def _put(self, path: str, entry: ImportedEntry) -> None:
        parent, name = self._parent_of(path)
        if name in parent.children:
            raise ValidationError(f"duplicate path {path!r}")
        parent.children[name] = entry

    def add_file(self, path: str, entry: ImportedEntry) -> None:
        """Add a file (the result of a :class:`FileImporter`) at ``path``."""
        if not isinstance(entry, ImportedEntry):
            raise ValidationError("add_file needs an ImportedEntry")
        self._put(path, entry)

    def add_directory(self, path: str) -> None:
        """Make sure the directory ``path`` exists (for empty directories); idempotent."""
        parent, name = self._parent_of(path)
        existing = parent.children.get(name)
        if existing is None:
            parent.children[name] = _Dir()
        elif not isinstance(existing, _Dir):
            raise ValidationError(f"duplicate path {path!r}: already a file")

    def add_symlink(self, path: str, target: str) -> None:
        """Add a UnixFS symlink at ``path`` pointing to ``target`` (stored verbatim)."""
        if not isinstance(target, str) or not target or "\x00" in target:
            raise ValidationError(f"invalid symlink target {target!r}")
        try:
            raw = target.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"invalid symlink target {target!r}") from None
        if len(raw) > MAX_SYMLINK_TARGET:
            raise ValidationError(f"symlink target longer than {MAX_SYMLINK_TARGET} bytes")
        parent, name = self._parent_of(path)
        if name in parent.children:
            raise ValidationError(f"duplicate path {path!r}")
        block = dagpb.encode(PBNode((), unixfs.encode(UnixFSData(DataType.SYMLINK, data=raw))))
        cid = _node_cid(block, self._profile)
        self._emit(Block(cid, block))
        parent.children[name] = ImportedEntry(cid, len(block), len(raw))

    def finish(self) -> ImportedEntry:
        """Emit all directory blocks (children first); returns the root directory."""
        if self._finished:
            raise LocalProtocolError("finish() called twice")
        self._finished = True
        return self._build(self._root)

    def _build(self, directory: _Dir) -> ImportedEntry:
        profile = self._profile
        entries: list[hamt.ShardEntry] = []
        estimate = 0
        size = 0
        helia = profile.shard_rule == "helia"
        threshold = profile.shard_threshold_bytes
        # Helia decides incrementally while entries arrive (each directory before its contents,
        # names in byte order) and never turns a shard back into a flat directory: a non-empty
        # sub-directory counts, as an empty directory, at the moment it is inserted, and stops
        # counting once its first child arrives. So it can tip the parent into a HAMT on its own.
        tipped = False
        for name, child in sorted(directory.children.items(), key=lambda kv: kv[0].encode()):
            link_estimate = len(name.encode("utf-8"))
            if isinstance(child, _Dir):
                built = self._build(child)
                link_estimate += len(bytes(built.cid))
                if helia and child.children:
                    tipped = tipped or estimate + link_estimate > threshold
                    link_estimate = 0
            else:
                built = child
                link_estimate += len(bytes(built.cid))
            estimate += link_estimate
            entries.append(hamt.ShardEntry(name, built.cid, built.tsize))
            size += built.size
        # Helia: `estimateNodeSize() > threshold`; Kubo: `>= HAMTShardingSize`, 0 = disabled.
        shard = (tipped or estimate > threshold) if helia else 0 < threshold <= estimate
        if shard:
            cid, tsize = hamt.build_shard(
                entries,
                fanout=profile.hamt_fanout,
                cid_version=profile.cid_version,
                emit=self._emit,
            )
            return ImportedEntry(cid, tsize, size)
        links = tuple(PBLink(e.cid, e.name, e.tsize) for e in entries)
        block = dagpb.encode(PBNode(links, _DIRECTORY_DATA))
        cid = _node_cid(block, profile)
        self._emit(Block(cid, block))
        return ImportedEntry(cid, len(block) + sum(e.tsize for e in entries), size)


def import_bytes(
    data: bytes, profile: ImportProfile = PROFILE_V1
) -> tuple[ImportedEntry, list[Block]]:
    """Import ``data`` as one file; returns its root and every block (leaves first)."""
    blocks: list[Block] = []
    importer = FileImporter(profile, blocks.append)
    importer.write(data)
    return importer.finish(), blocks
