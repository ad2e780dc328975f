"""Import files and directories from the filesystem into the block store.

The filesystem is scanned and validated *before* anything is written, so a bad path (missing,
unreadable, an unsupported file type, a name that is not UTF-8) is refused with the store unchanged.
Blocks then stream from the importer into the store in batches of one write transaction each, inside
an import session so that a concurrent garbage collection never removes them before they are pinned.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dre.protocol.cid import Block
from dre.protocol.errors import ValidationError
from dre.protocol.importer import (
    PROFILE_V1,
    DirectoryBuilder,
    FileImporter,
    ImportedEntry,
    ImportProfile,
)
from dre.protocol.links import links_of

from .blockstore import BlockStore

__all__ = ["ImportResult", "ScannedEntry", "import_path", "scan_path"]

#: Bytes read from a file per call: a few chunks at a time keeps syscalls few and memory flat.
_READ_SIZE = 1 << 20
#: Blocks are committed once this many bytes are pending (one LMDB write transaction per batch).
_BATCH_BYTES = 16 << 20
#: Batches handed to the writer thread but not yet committed.
_MAX_PENDING_BATCHES = 2

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ScannedEntry:
    """One filesystem entry to import, with its path relative to the imported root (POSIX)."""

    relpath: str
    path: Path
    kind: str  # "file" | "directory" | "symlink"
    size: int
    symlink_target: str = ""


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import produced: the root and every entry below it (files and directories)."""

    name: str
    root: ImportedEntry
    kind: str
    entries: list[tuple[str, ImportedEntry]]
    total_bytes: int


def _check_name(name: str, where: Path) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{where}: file name is not valid UTF-8") from None


def _scan_one(path: Path, relpath: str) -> ScannedEntry:
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise ValidationError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise ValidationError(f"{path}: {exc.strerror}") from None
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return ScannedEntry(relpath, path, "symlink", 0, os.readlink(path))
    if stat.S_ISDIR(mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise ValidationError(f"{path}: permission denied")
        return ScannedEntry(relpath, path, "directory", 0)
    if stat.S_ISREG(mode):
        if not os.access(path, os.R_OK):
            raise ValidationError(f"{path}: permission denied")
        return ScannedEntry(relpath, path, "file", st.st_size)
    raise ValidationError(f"{path}: not a regular file, directory or symlink")


def scan_path(path: Path, *, hidden: bool = False) -> list[ScannedEntry]:
    """Walk ``path`` (a file or a directory) and validate every entry; nothing is read yet.

    Symlinks are recorded as UnixFS symlinks, never followed (as ``ipfs add -r`` does). Names
    starting with ``.`` below the root are skipped unless ``hidden`` (as ``ipfs add -r`` without
    ``--hidden``). The root comes first with relpath ``""``.
    """
    _check_name(path.name, path)
    root = _scan_one(path, "")
    entries = [root]
    if root.kind != "directory":
        return entries
    stack = [root]
    while stack:
        parent = stack.pop()
        try:
            children = sorted(os.scandir(parent.path), key=lambda e: e.name)
        except OSError as exc:
            raise ValidationError(f"{parent.path}: {exc.strerror}") from None
        for child in children:
            if not hidden and child.name.startswith("."):
                continue
            child_path = parent.path / child.name
            _check_name(child.name, child_path)
            relpath = f"{parent.relpath}/{child.name}" if parent.relpath else child.name
            entry = _scan_one(child_path, relpath)
            entries.append(entry)
            if entry.kind == "directory":
                stack.append(entry)
    return entries


class _BatchingSink:
    """Collects emitted blocks and commits them in large write transactions on a writer thread.

    Hashing (the importer, on this thread) and committing (LMDB copying pages and fsyncing, which
    releases the GIL) overlap, so an import runs at the speed of the slower of the two rather
    than of their sum. At most ``_MAX_PENDING_BATCHES`` batches wait, so memory stays bounded.
    """

    def __init__(self, put_many: Callable[[list[Block]], object] | None) -> None:
        self._put_many = put_many
        self._pending: list[Block] = []
        self._pending_bytes = 0
        self._queue: queue.Queue[list[Block] | None] = queue.Queue(_MAX_PENDING_BATCHES)
        self._error: BaseException | None = None
        self._writer: threading.Thread | None = None
        if put_many is not None:
            self._writer = threading.Thread(target=self._write_loop, name="dre-import-writer",
                                            daemon=True)
            self._writer.start()

    def _write_loop(self) -> None:
        assert self._put_many is not None
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._put_many(batch)
                except BaseException as exc:  # handed to the importing thread, raised there
                    self._error = exc

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __call__(self, block: Block) -> None:
        if self._writer is None:
            return
        self._pending.append(block)
        self._pending_bytes += len(block.data)
        if self._pending_bytes >= _BATCH_BYTES:
            self._raise_writer_error()
            self._queue.put(self._pending)
            self._pending = []
            self._pending_bytes = 0

    def close(self) -> None:
        """Commit what is pending and wait for the writer; re-raises a failed commit."""
        if self._writer is None:
            return
        if self._pending:
            self._queue.put(self._pending)
            self._pending = []
        self._queue.put(None)
        self._writer.join()
        self._writer = None
        self._raise_writer_error()


def _read_chunks(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb", buffering=0) as fh:
            while chunk := fh.read(_READ_SIZE):
                yield chunk
    except OSError as exc:
        raise ValidationError(f"{path}: {exc.strerror}") from None


def _import_scanned(
    entries: list[ScannedEntry],
    profile: ImportProfile,
    sink: _BatchingSink,
    progress: ProgressCallback | None,
) -> tuple[ImportedEntry, list[tuple[str, ImportedEntry]]]:
    imported: list[tuple[str, ImportedEntry]] = []

    def import_file(entry: ScannedEntry) -> ImportedEntry:
        importer = FileImporter(profile, sink)
        for chunk in _read_chunks(entry.path):
            importer.write(chunk)
            if progress is not None:
                progress(len(chunk))
        return importer.finish()

    root = entries[0]
    if root.kind == "file":
        file_entry = import_file(root)
        imported.append(("", file_entry))
        return file_entry, imported
    if root.kind == "symlink":
        raise ValidationError(
            f"{root.path}: is a symlink; add its target or the directory holding it"
        )
    builder = DirectoryBuilder(profile, sink)
    for entry in entries[1:]:
        if entry.kind == "file":
            file_entry = import_file(entry)
            builder.add_file(entry.relpath, file_entry)
            imported.append((entry.relpath, file_entry))
        elif entry.kind == "directory":
            builder.add_directory(entry.relpath)
        else:
            builder.add_symlink(entry.relpath, entry.symlink_target)
    dir_entry = builder.finish()
    imported.append(("", dir_entry))
    return dir_entry, imported


def import_path(
    store: BlockStore | None,
    path: Path,
    profile: ImportProfile = PROFILE_V1,
    *,
    hidden: bool = False,
    pin: bool = True,
    progress: ProgressCallback | None = None,
    scanned: list[ScannedEntry] | None = None,
) -> ImportResult:
    """Import ``path`` into ``store`` (or only compute CIDs when ``store`` is None).

    The root is pinned recursively when ``pin``. On any failure part-way (a file that vanished or
    changed while being read), the blocks already written stay unpinned and are reclaimed by the
    next garbage collection; the pin set is unchanged.
    """
    entries = scanned if scanned is not None else scan_path(path, hidden=hidden)
    total = sum(e.size for e in entries)
    name = path.name or str(path)
    if store is None:
        root, imported = _import_scanned(entries, profile, _BatchingSink(None), progress)
    else:
        with store.import_session():
            sink = _BatchingSink(lambda blocks: store.put_many(blocks, verify=False))
            try:
                root, imported = _import_scanned(entries, profile, sink, progress)
            finally:
                sink.close()
            if pin:
                store.pin_add(root.cid, recursive=True, links_of=links_of)
    return ImportResult(name, root, entries[0].kind, imported, total)


#: The folder of a package directory that holds its source document (`dre generate -o` writes
#: it); it is not part of the package.
SOURCE_DIR = ".dre"
SOURCE_DOC = "source.md"
#: A package directory read for publishing is held in memory: the generator's own output limit
#: (4 MiB) times a generous margin for divergent directories.
MAX_PACKAGE_DIR_BYTES = 64 << 20


def read_package_dir(path: Path) -> tuple[dict[str, bytes], list[str]]:
    """The files (path -> bytes) and empty directories of a package directory to publish.

    Hidden files are part of a package; the ``.dre/`` folder with the source document is not.
    Symlinks are refused (a generated package never has one). Nothing is written.
    """
    entries = scan_path(path, hidden=True)
    if entries[0].kind != "directory":
        raise ValidationError(f"{path}: not a directory")
    files: dict[str, bytes] = {}
    directories: set[str] = set()
    total = 0
    for entry in entries[1:]:
        top = entry.relpath.split("/", 1)[0]
        if top == SOURCE_DIR:
            continue
        if entry.kind == "symlink":
            raise ValidationError(f"{entry.path}: symlinks cannot be part of a published package")
        if entry.kind == "directory":
            directories.add(entry.relpath)
            continue
        total += entry.size
        if total > MAX_PACKAGE_DIR_BYTES:
            raise ValidationError(f"{path}: more than {MAX_PACKAGE_DIR_BYTES} bytes of files")
        files[entry.relpath] = b"".join(_read_chunks(entry.path))
    parents = {parent for p in files for parent in _parents(p)}
    empty = sorted(d for d in directories if d not in parents)
    return files, empty


def _parents(relpath: str) -> Iterator[str]:
    parts = relpath.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])
