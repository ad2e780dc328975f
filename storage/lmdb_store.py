"""The LMDB block store: one environment, five named sub-databases, values stored as raw bytes.

=========  ==================  ==============================================================
sub-db     key                 value
=========  ==================  ==============================================================
blocks     multihash           the block's bytes, as received
meta       multihash           ``>QQQ``: size, put count, last write sequence number
pins       CID bytes           ``b"d"`` (direct) or ``b"r"`` (recursive)
leases     16 random bytes     ``>QQQd``: pid, process start ticks, start sequence, start time
counters   name                ``>Q``; see ``_C_*``
=========  ==================  ==============================================================

Every change updates the counters in the same write transaction, so they survive a crash exactly as
consistent as the data (LMDB commits are atomic; a SIGKILL loses at most the open transaction).
LMDB is multi-process: several processes may open the same directory; writers are serialised by
LMDB's robust mutex and readers never block writers.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import lmdb
from dre.protocol.cid import CID, Block, cid_from_bytes, multihash_of
from dre.protocol.errors import DreError, IntegrityError, NotFoundError, ValidationError

from . import gc as _gc
from .blockstore import (
    BlockStore,
    GcResult,
    Lease,
    LinksOf,
    PinKind,
    StoreStats,
    check_block,
    check_bool,
    check_cid,
    check_links_of,
    hash_matches,
)

__all__ = ["DEFAULT_MAP_SIZE", "MAX_MAP_SIZE", "LmdbBlockStore"]

T = TypeVar("T")
# Quoted: lmdb's Transaction is generic only in its stubs.
_Txn: TypeAlias = "lmdb.Transaction[bytes]"  # opened with buffers=False: values are copies
_BufTxn: TypeAlias = "lmdb.Transaction[memoryview]"  # buffers=True: values point into the map

DEFAULT_MAP_SIZE = 1 << 30
#: Map growth stops here (a runaway writer must not claim the whole address space or disk).
MAX_MAP_SIZE = 1 << 42
_FORMAT = 1

_META = struct.Struct(">QQQ")
_LEASE = struct.Struct(">QQQd")
_U64 = struct.Struct(">Q")

_C_FORMAT = b"format"
_C_SEQ = b"seq"  # last write sequence number handed out
_C_BLOCKS = b"blocks"
_C_PHYSICAL = b"physical_bytes"
_C_LOGICAL = b"logical_bytes"
_C_DIRECT = b"pins_direct"
_C_RECURSIVE = b"pins_recursive"
_C_PIN_EPOCH = b"pin_epoch"  # bumped by every pin_add: tells a running GC its mark is stale
_C_MAP_SIZE = b"map_size"  # the grown map size, so a reopen does not start small again

_PIN_CODES = {PinKind.DIRECT: b"d", PinKind.RECURSIVE: b"r"}
_PIN_KINDS = {v: k for k, v in _PIN_CODES.items()}

_BATCH = 1024  # keys per read or delete transaction in scans and GC sweeps
_GC_ATTEMPTS = 3


class _Gate:
    """Lets many transactions run at once, but resizing the map (or closing) waits for none.

    LMDB forbids ``mdb_env_set_mapsize`` while the process has any transaction open.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


def _u64(txn: lmdb.Transaction[Any], db: Any, key: bytes) -> int:
    raw = txn.get(key, db=db)
    return 0 if raw is None else int(_U64.unpack(raw)[0])


class LmdbBlockStore(BlockStore):
    """A :class:`BlockStore` in an LMDB environment at ``path`` (a directory, created if needed).

    ``map_size`` is the initial map size; the map doubles automatically when full (up to
    :data:`MAX_MAP_SIZE`). ``verify_on_read`` re-hashes every block :meth:`get` returns.
    ``sync=False`` skips fsync on commit: a process crash still loses nothing committed, a power
    loss may lose the last transactions (never consistency).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        verify_on_read: bool = False,
        sync: bool = True,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise ValidationError(f"path must be a path, got {type(path).__name__}")
        if isinstance(map_size, bool) or not isinstance(map_size, int):
            raise ValidationError(f"map_size must be an int, got {type(map_size).__name__}")
        if not 1 << 20 <= map_size <= MAX_MAP_SIZE:
            raise ValidationError(f"map_size must be between 1 MiB and {MAX_MAP_SIZE} bytes")
        self._verify_on_read = check_bool(verify_on_read, "verify_on_read")
        check_bool(sync, "sync")
        self.path = Path(path)
        self._gate = _Gate()
        self._wlock = threading.Lock()
        self._closed = True
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=8,
                subdir=True,
                sync=sync,
                metasync=sync,
                readahead=False,  # random block reads; readahead only pollutes the page cache
                lock=True,
            )
        except (OSError, lmdb.Error) as exc:
            raise DreError(f"cannot open block store {self.path}: {exc}") from None
        self._closed = False
        try:
            # Slots of readers killed without closing would pin old pages forever.
            self._env.reader_check()
            self._blocks = self._env.open_db(b"blocks")
            self._meta = self._env.open_db(b"meta")
            self._pins = self._env.open_db(b"pins")
            self._leases = self._env.open_db(b"leases")
            self._counters = self._env.open_db(b"counters")
            self._write(self._init_format)
            stored = self._read(lambda txn: _u64(txn, self._counters, _C_MAP_SIZE))
            if stored > self._env.info()["map_size"]:
                self._set_mapsize(stored)
        except BaseException:
            self.close()
            raise

    def _init_format(self, txn: _Txn) -> None:
        fmt = _u64(txn, self._counters, _C_FORMAT)
        if fmt == 0:
            txn.put(_C_FORMAT, _U64.pack(_FORMAT), db=self._counters)
        elif fmt != _FORMAT:
            raise DreError(f"block store {self.path} has format {fmt}; this dre reads {_FORMAT}")

    # -- transactions ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise DreError("store is closed")

    def _set_mapsize(self, size: int) -> None:
        with self._gate.exclusive():
            self._check_open()
            self._env.set_mapsize(size)

    def _grow(self, needed: int = 0) -> None:
        """Double the map (more if ``needed`` bytes must fit) and remember the size."""
        current = int(self._env.info()["map_size"])
        if current >= MAX_MAP_SIZE:
            raise DreError(f"block store {self.path} is full ({current} bytes)")
        new = current * 2
        while new < needed and new < MAX_MAP_SIZE:
            new *= 2
        new = min(new, MAX_MAP_SIZE)
        self._set_mapsize(new)

        # Its own small transaction: the one that hit the limit was aborted and will be retried.
        # Best effort: it only spares a reopen from growing again.
        try:
            with self._gate.shared(), self._env.begin(write=True) as txn:
                if _u64(txn, self._counters, _C_MAP_SIZE) < new:
                    txn.put(_C_MAP_SIZE, _U64.pack(new), db=self._counters)
        except lmdb.Error:
            pass

    def _ensure_room(self, nbytes: int) -> None:
        """Grow before a big transaction rather than abort it halfway through."""
        info = self._env.info()
        used = (int(info["last_pgno"]) + 1) * int(self._env.stat()["psize"])
        # Overflow pages, the B-tree and copy-on-write need slack beyond the raw bytes.
        needed = used + nbytes + nbytes // 8 + (16 << 20)
        if needed > int(info["map_size"]):
            self._grow(needed)

    def _write(self, fn: Callable[[_Txn], T], size_hint: int = 0) -> T:
        """Run ``fn`` in one write transaction, growing the map and retrying it when full."""
        with self._wlock:
            self._check_open()
            if size_hint:
                self._ensure_room(size_hint)
            for _ in range(64):
                try:
                    with self._gate.shared():
                        self._check_open()
                        with self._env.begin(write=True) as txn:
                            return fn(txn)
                except lmdb.MapFullError:
                    self._grow()
                except lmdb.MapResizedError:
                    self._set_mapsize(0)  # another process grew the map: adopt its size
                except lmdb.Error as exc:
                    raise DreError(f"block store {self.path}: {exc}") from None
            raise DreError(f"block store {self.path}: cannot make room for a transaction")

    def _read(self, fn: Callable[[_Txn], T]) -> T:
        return self._read_with(self._env.begin, fn)

    def _read_buffers(self, fn: Callable[[_BufTxn], T]) -> T:
        return self._read_with(lambda: self._env.begin(buffers=True), fn)

    def _read_with(self, begin: Callable[[], lmdb.Transaction[Any]], fn: Callable[[Any], T]) -> T:
        for _ in range(8):
            try:
                with self._gate.shared():
                    self._check_open()
                    with begin() as txn:
                        return fn(txn)
            except lmdb.MapResizedError:
                self._set_mapsize(0)
            except lmdb.Error as exc:
                raise DreError(f"block store {self.path}: {exc}") from None
        raise DreError(f"block store {self.path}: map keeps being resized")

    def _counters_of(self, txn: lmdb.Transaction[Any], *names: bytes) -> list[int]:
        return [_u64(txn, self._counters, n) for n in names]

    def _set_counter(self, txn: _Txn, name: bytes, value: int) -> None:
        if value < 0:
            raise IntegrityError(f"counter {name.decode()} would become negative")
        txn.put(name, _U64.pack(value), db=self._counters)

    def _next_seq(self, txn: _Txn) -> int:
        seq = _u64(txn, self._counters, _C_SEQ) + 1
        self._set_counter(txn, _C_SEQ, seq)
        return seq

    # -- blocks ------------------------------------------------------------------------------

    def _put_checked(self, checked: list[tuple[CID, bytes, bytes]]) -> int:
        def txn_fn(txn: _Txn) -> int:
            seq = self._next_seq(txn)
            blocks, physical, logical = self._counters_of(txn, _C_BLOCKS, _C_PHYSICAL, _C_LOGICAL)
            new = 0
            for _, mh, data in checked:
                raw = txn.get(mh, db=self._meta)
                if raw is None:
                    txn.put(mh, data, db=self._blocks, dupdata=False, overwrite=True)
                    txn.put(mh, _META.pack(len(data), 1, seq), db=self._meta)
                    new += 1
                    blocks += 1
                    physical += len(data)
                    logical += len(data)
                else:
                    size, count, _ = _META.unpack(raw)
                    txn.put(mh, _META.pack(size, count + 1, seq), db=self._meta)
                    logical += size  # the stored size: keeps delete's subtraction exact
            self._set_counter(txn, _C_BLOCKS, blocks)
            self._set_counter(txn, _C_PHYSICAL, physical)
            self._set_counter(txn, _C_LOGICAL, logical)
            return new

        return self._write(txn_fn, size_hint=sum(len(d) for _, _, d in checked))

    def put(self, block: Block, *, verify: bool = True) -> bool:
        check_bool(verify, "verify")
        self._check_open()
        return self._put_checked([check_block(block, verify)]) == 1

    def put_many(self, blocks: Iterable[Block], *, verify: bool = True) -> int:
        check_bool(verify, "verify")
        self._check_open()
        # Validate and hash everything before the transaction: a bad block aborts the batch
        # without writing anything, and the write lock is not held while hashing.
        checked = [check_block(b, verify) for b in blocks]
        return self._put_checked(checked) if checked else 0

    def get(self, cid: CID) -> bytes:
        mh = multihash_of(check_cid(cid))
        data = self._read(lambda txn: txn.get(mh, db=self._blocks))
        if data is None:
            raise NotFoundError(f"block {_gc.cid_text(cid)} not found")
        if self._verify_on_read and not hash_matches(mh, data):
            raise IntegrityError(
                f"block {_gc.cid_text(cid)}: stored bytes do not match the CID's hash"
            )
        return bytes(data)

    def with_block(self, cid: CID, use: Callable[[bytes | memoryview], T]) -> T:
        if self._verify_on_read:
            return use(self.get(cid))
        mh = multihash_of(check_cid(cid))

        def in_txn(txn: _BufTxn) -> T:
            # A view into the map, valid only inside this read transaction: serving a block
            # to a peer then costs one copy (into the outgoing message), not two.
            view = txn.get(mh, db=self._blocks)
            if view is None:
                raise NotFoundError(f"block {_gc.cid_text(cid)} not found")
            return use(view)

        return self._read_buffers(in_txn)

    def has(self, cid: CID) -> bool:
        mh = multihash_of(check_cid(cid))
        return self._read(lambda txn: txn.get(mh, db=self._meta) is not None)

    def size_of(self, cid: CID) -> int | None:
        mh = multihash_of(check_cid(cid))
        raw = self._read(lambda txn: txn.get(mh, db=self._meta))
        return None if raw is None else int(_META.unpack(raw)[0])

    def _delete_in(self, txn: _Txn, mh: bytes, raw_meta: bytes) -> int:
        size, count, _ = _META.unpack(raw_meta)
        txn.delete(mh, db=self._blocks)
        txn.delete(mh, db=self._meta)
        return int(size) * int(count)

    def _apply_deletes(self, txn: _Txn, n: int, freed: int, logical: int) -> None:
        blocks, physical, total_logical = self._counters_of(
            txn, _C_BLOCKS, _C_PHYSICAL, _C_LOGICAL
        )
        self._set_counter(txn, _C_BLOCKS, blocks - n)
        self._set_counter(txn, _C_PHYSICAL, physical - freed)
        self._set_counter(txn, _C_LOGICAL, total_logical - logical)

    def delete(self, cid: CID) -> bool:
        mh = multihash_of(check_cid(cid))

        def txn_fn(txn: _Txn) -> bool:
            raw = txn.get(mh, db=self._meta)
            if raw is None:
                return False
            logical = self._delete_in(txn, mh, raw)
            self._apply_deletes(txn, 1, int(_META.unpack(raw)[0]), logical)
            return True

        return self._write(txn_fn)

    def _keys_after(self, db: Any, after: bytes | None, limit: int) -> list[bytes]:
        def txn_fn(txn: _Txn) -> list[bytes]:
            keys: list[bytes] = []
            with txn.cursor(db=db) as cur:
                found = cur.set_range(after) if after is not None else cur.first()
                while found and len(keys) < limit:
                    key = cur.key()
                    if key != after:
                        keys.append(bytes(key))
                    found = cur.next()
            return keys

        return self._read(txn_fn)

    def iter_multihashes(self) -> Iterator[bytes]:
        after: bytes | None = None
        while True:
            keys = self._keys_after(self._meta, after, _BATCH)
            if not keys:
                return
            yield from keys
            after = keys[-1]

    def stats(self) -> StoreStats:
        blocks, physical, logical, direct, recursive = self._read(
            lambda txn: self._counters_of(
                txn, _C_BLOCKS, _C_PHYSICAL, _C_LOGICAL, _C_DIRECT, _C_RECURSIVE
            )
        )
        return StoreStats(
            blocks=blocks,
            physical_bytes=physical,
            logical_bytes=logical,
            dedup_saved_bytes=logical - physical,
            pins_direct=direct,
            pins_recursive=recursive,
        )

    def verify_all(self) -> list[bytes]:
        def txn_fn(txn: _BufTxn) -> list[bytes]:
            bad: list[bytes] = []
            n = physical = logical = 0
            with txn.cursor(db=self._blocks) as cur:
                for key, data in cur:
                    mh = bytes(key)
                    if not hash_matches(mh, data):
                        bad.append(mh)
                    raw = txn.get(mh, db=self._meta)
                    if raw is None:
                        raise IntegrityError(f"block {mh.hex()} has no metadata")
                    size, count, _ = _META.unpack(raw)
                    if size != len(data) or count < 1:
                        raise IntegrityError(f"metadata of block {mh.hex()} is wrong")
                    n += 1
                    physical += size
                    logical += size * count
            if txn.stat(self._meta)["entries"] != n:
                raise IntegrityError("metadata entries without a block")
            pins = {PinKind.DIRECT: 0, PinKind.RECURSIVE: 0}
            with txn.cursor(db=self._pins) as cur:
                for _, code in cur:
                    kind = _PIN_KINDS.get(bytes(code))
                    if kind is None:
                        raise IntegrityError(f"unknown pin kind {bytes(code)!r}")
                    pins[kind] += 1
            counted = [n, physical, logical, pins[PinKind.DIRECT], pins[PinKind.RECURSIVE]]
            stored = self._counters_of(
                txn, _C_BLOCKS, _C_PHYSICAL, _C_LOGICAL, _C_DIRECT, _C_RECURSIVE
            )
            if counted != stored:
                raise IntegrityError(
                    f"store counters {stored} disagree with the data {counted} "
                    "(blocks, physical, logical, direct pins, recursive pins)"
                )
            return bad

        # buffers=True: hash straight from the map, no copy of each block.
        return self._read_buffers(txn_fn)

    # -- pins --------------------------------------------------------------------------------

    def pin_add(self, cid: CID, *, recursive: bool = True, links_of: LinksOf) -> None:
        check_cid(cid)
        check_bool(recursive, "recursive")
        check_links_of(links_of)
        key = bytes(cid)
        kind = PinKind.RECURSIVE if recursive else PinKind.DIRECT

        def txn_fn(txn: _Txn) -> None:
            # The walk runs inside the write transaction so no GC sweep can remove part of the
            # DAG between the check and the pin.
            def get(mh: bytes) -> bytes | None:
                data = txn.get(mh, db=self._blocks)
                return None if data is None else bytes(data)

            if recursive:
                missing = _gc.find_missing(cid, get, links_of)
                if missing is not None:
                    raise NotFoundError(f"block {_gc.cid_text(missing)} not found")
            elif txn.get(multihash_of(cid), db=self._meta) is None:
                raise NotFoundError(f"block {_gc.cid_text(cid)} not found")
            old = txn.get(key, db=self._pins)
            old_kind = None if old is None else _PIN_KINDS[bytes(old)]
            if old_kind is PinKind.RECURSIVE or old_kind is kind:
                return
            direct, rec, epoch = self._counters_of(txn, _C_DIRECT, _C_RECURSIVE, _C_PIN_EPOCH)
            if old_kind is PinKind.DIRECT:
                direct -= 1
            if kind is PinKind.DIRECT:
                direct += 1
            else:
                rec += 1
            txn.put(key, _PIN_CODES[kind], db=self._pins)
            self._set_counter(txn, _C_DIRECT, direct)
            self._set_counter(txn, _C_RECURSIVE, rec)
            self._set_counter(txn, _C_PIN_EPOCH, epoch + 1)

        self._write(txn_fn)

    def pin_rm(self, cid: CID) -> None:
        check_cid(cid)
        key = bytes(cid)

        def txn_fn(txn: _Txn) -> None:
            old = txn.get(key, db=self._pins)
            if old is None:
                raise NotFoundError(f"{_gc.cid_text(cid)} is not pinned")
            name = _C_DIRECT if _PIN_KINDS[bytes(old)] is PinKind.DIRECT else _C_RECURSIVE
            txn.delete(key, db=self._pins)
            self._set_counter(txn, name, _u64(txn, self._counters, name) - 1)

        self._write(txn_fn)

    def pins(self) -> list[tuple[CID, PinKind]]:
        def txn_fn(txn: _Txn) -> list[tuple[CID, PinKind]]:
            with txn.cursor(db=self._pins) as cur:
                return [(cid_from_bytes(bytes(k)), _PIN_KINDS[bytes(v)]) for k, v in cur]

        return self._read(txn_fn)

    # -- leases ------------------------------------------------------------------------------

    def _raw_leases(self) -> list[tuple[bytes, int, int, int, float]]:
        def txn_fn(txn: _Txn) -> list[tuple[bytes, int, int, int, float]]:
            with txn.cursor(db=self._leases) as cur:
                return [(bytes(k), *_LEASE.unpack(v)) for k, v in cur]

        return self._read(txn_fn)

    def leases(self) -> list[Lease]:
        return sorted(
            (
                Lease(lease_id=k.hex(), pid=pid, start_seq=seq, start_time=t)
                for k, pid, _, seq, t in self._raw_leases()
            ),
            key=lambda lease: lease.start_seq,
        )

    def _add_lease(self, pid: int, ticks: int) -> Lease:
        lease_id = os.urandom(16)
        now = time.time()

        def txn_fn(txn: _Txn) -> int:
            seq = self._next_seq(txn)
            txn.put(lease_id, _LEASE.pack(pid, ticks, seq, now), db=self._leases)
            return seq

        seq = self._write(txn_fn)
        return Lease(lease_id=lease_id.hex(), pid=pid, start_seq=seq, start_time=now)

    def _lease_acquire(self) -> Lease:
        pid = os.getpid()
        return self._add_lease(pid, _gc.process_start_ticks(pid))

    def _lease_release(self, lease: Lease) -> None:
        if self._closed:
            return  # nothing to do; GC drops the lease once this process has exited
        key = bytes.fromhex(lease.lease_id)
        self._write(lambda txn: txn.delete(key, db=self._leases))

    # -- garbage collection ------------------------------------------------------------------

    def _drop_dead_leases(self) -> None:
        leases = self._raw_leases()
        dead = [k for k, pid, ticks, _, _ in leases if not _gc.process_alive(pid, ticks)]
        if dead:

            def txn_fn(txn: _Txn) -> None:
                for key in dead:
                    txn.delete(key, db=self._leases)

            self._write(txn_fn)

    def _mark(self, links_of: LinksOf) -> tuple[set[bytes], int, int]:
        """(live multihashes, write sequence and pin epoch of the snapshot they come from)."""

        def txn_fn(txn: _Txn) -> tuple[set[bytes], int, int]:
            seq, epoch = self._counters_of(txn, _C_SEQ, _C_PIN_EPOCH)
            with txn.cursor(db=self._pins) as cur:
                pins = [(cid_from_bytes(bytes(k)), _PIN_KINDS[bytes(v)]) for k, v in cur]

            def get(mh: bytes) -> bytes | None:
                data = txn.get(mh, db=self._blocks)
                return None if data is None else bytes(data)

            return _gc.mark_live(pins, get, links_of), seq, epoch

        return self._read(txn_fn)

    def _sweep_batch(
        self, candidates: list[bytes], mark_seq: int, epoch: int
    ) -> tuple[int, int] | None:
        """Delete the candidates still dead; None if a pin was added since the mark."""

        def txn_fn(txn: _Txn) -> tuple[int, int] | None:
            if _u64(txn, self._counters, _C_PIN_EPOCH) != epoch:
                return None
            with txn.cursor(db=self._leases) as cur:
                starts = [_LEASE.unpack(v)[2] for _, v in cur]
            oldest = min(starts, default=None)
            removed = freed = logical = 0
            for mh in candidates:
                raw = txn.get(mh, db=self._meta)
                if raw is None:
                    continue
                size, _, seq = _META.unpack(raw)
                # Written after the mark's snapshot, or by a running import: not ours to judge.
                if seq > mark_seq or (oldest is not None and seq >= oldest):
                    continue
                logical += self._delete_in(txn, mh, raw)
                removed += 1
                freed += size
            if removed:
                self._apply_deletes(txn, removed, freed, logical)
            return removed, freed

        return self._write(txn_fn)

    def gc(self, links_of: LinksOf) -> GcResult:
        check_links_of(links_of)
        self._check_open()
        self._drop_dead_leases()
        removed = freed = 0
        for _ in range(_GC_ATTEMPTS):
            live, mark_seq, epoch = self._mark(links_of)
            after: bytes | None = None
            stale = False
            while True:
                keys = self._keys_after(self._meta, after, _BATCH)
                if not keys:
                    break
                after = keys[-1]
                candidates = [k for k in keys if k not in live]
                if not candidates:
                    continue
                swept = self._sweep_batch(candidates, mark_seq, epoch)
                if swept is None:
                    stale = True
                    break
                removed += swept[0]
                freed += swept[1]
            if not stale:
                break
        return GcResult(removed_blocks=removed, freed_bytes=freed, kept_blocks=self.stats().blocks)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        with self._wlock, self._gate.exclusive():
            if not self._closed:
                self._closed = True
                self._env.close()

    def _inject_lease(self, pid: int, start_ticks: int = 0) -> None:
        """Test hook: a lease as a dead or foreign process would have left it."""
        self._add_lease(pid, start_ticks)
