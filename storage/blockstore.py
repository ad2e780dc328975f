"""The block store interface, its shared types, and an in-memory implementation for tests.

Blocks are keyed by their *multihash*, not their CID: a raw CIDv1 and a dag-pb CIDv0 of the same
bytes are one entry, so identical content is stored once. Pins are keyed by the full CID bytes,
because a DAG walk needs the codec to find a block's links.

Counters (blocks, physical/logical bytes, pins) are maintained inside the same transaction as the
change they count, so :meth:`BlockStore.stats` is O(1) and always consistent with the data.

In-flight protection: every write is stamped with a monotonically increasing *write sequence
number*. :meth:`BlockStore.import_session` registers a lease (pid, start sequence, start time); GC
keeps every block last written at or after the oldest live lease's start sequence, and drops leases
whose process has died, so an importer killed with SIGKILL never blocks GC forever.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self, TypeVar

import msgspec
from dre.protocol.cid import (
    CID,
    SHA2_256,
    Block,
    cid_from_bytes,
    multihash_of,
    sha256_multihash,
    verify_block,
)
from dre.protocol.errors import DreError, IntegrityError, NotFoundError, ValidationError

from . import gc as _gc

T = TypeVar("T")

__all__ = [
    "MAX_BLOCK_SIZE",
    "BlockStore",
    "GcResult",
    "ImportSession",
    "Lease",
    "LinksOf",
    "MemoryBlockStore",
    "PinKind",
    "StoreStats",
]

#: Given a block (its CID and bytes), the CIDs it links to. Supplied by the caller: codecs live in
#: ``dre.protocol``, and the store does not care how a block is encoded.
LinksOf = Callable[[CID, bytes], Iterable[CID]]

#: The largest block the store accepts. UnixFS leaves are 256 KiB and Kubo refuses blocks over
#: 2 MiB on the wire; 4 MiB leaves headroom for big directory nodes and still bounds one value.
MAX_BLOCK_SIZE = 4 * 1024 * 1024


class PinKind(enum.StrEnum):
    """How a pin keeps blocks alive: just its own block, or its whole DAG."""

    DIRECT = "direct"
    RECURSIVE = "recursive"


class StoreStats(msgspec.Struct, frozen=True):
    """Counters of a block store, maintained transactionally (reading them is O(1))."""

    blocks: int
    #: Bytes of block data stored, each distinct block once.
    physical_bytes: int
    #: Bytes of block data ever put and still present, a block put N times counting N times.
    logical_bytes: int
    #: ``logical_bytes - physical_bytes``: what content addressing saved.
    dedup_saved_bytes: int
    pins_direct: int
    pins_recursive: int


class GcResult(msgspec.Struct, frozen=True):
    """What one garbage collection did."""

    removed_blocks: int
    freed_bytes: int
    kept_blocks: int


class Lease(msgspec.Struct, frozen=True):
    """A running import's claim on the blocks it writes before pinning them."""

    lease_id: str  # hex
    pid: int
    start_seq: int
    start_time: float


class ImportSession:
    """A lease on the store for the duration of an import.

    ``put``/``put_many``/``pin_add`` delegate to the store; writing through the store directly
    while the session is open is protected just the same (protection is by write sequence, not by
    which object wrote). The lease is released when the ``with`` block exits, even on error.
    """

    def __init__(self, store: BlockStore, lease: Lease) -> None:
        self._store = store
        self.lease = lease

    @property
    def store(self) -> BlockStore:
        """The store this session writes to."""
        return self._store

    def put(self, block: Block, *, verify: bool = True) -> bool:
        """See :meth:`BlockStore.put`."""
        return self._store.put(block, verify=verify)

    def put_many(self, blocks: Iterable[Block], *, verify: bool = True) -> int:
        """See :meth:`BlockStore.put_many`."""
        return self._store.put_many(blocks, verify=verify)

    def pin_add(self, cid: CID, *, recursive: bool = True, links_of: LinksOf) -> None:
        """See :meth:`BlockStore.pin_add`."""
        self._store.pin_add(cid, recursive=recursive, links_of=links_of)


_SHA2_256_PREFIX = bytes([SHA2_256, 32])


def check_cid(cid: object) -> CID:
    """``cid`` if it is a sha2-256 CID, else :class:`ValidationError`."""
    if not isinstance(cid, CID):
        raise ValidationError(f"expected a CID, got {type(cid).__name__}")
    # Checked on the digest bytes: multiformats' `cid.hashfun` re-parses the multihash each call.
    if multihash_of(cid)[:2] != _SHA2_256_PREFIX:
        raise ValidationError(f"unsupported hash function {cid.hashfun.name} in CID {cid}")
    return cid


def check_block(block: object, verify: bool) -> tuple[CID, bytes, bytes]:
    """Validate a block; returns (cid, multihash, data). Hashes the data when ``verify``."""
    if not isinstance(block, tuple) or len(block) != 2:
        raise ValidationError(f"expected a Block(cid, data), got {type(block).__name__}")
    cid = check_cid(block[0])
    data = block[1]
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ValidationError(f"block data must be bytes, got {type(data).__name__}")
    if len(data) > MAX_BLOCK_SIZE:
        raise ValidationError(
            f"block {_gc.cid_text(cid)} is {len(data)} bytes; the limit is {MAX_BLOCK_SIZE}"
        )
    if verify:
        verify_block(cid, data)
    return cid, multihash_of(cid), data


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is a bool, else :class:`ValidationError`."""
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_links_of(links_of: object) -> LinksOf:
    """``links_of`` if it is callable, else :class:`ValidationError`."""
    if not callable(links_of):
        raise ValidationError("links_of must be a callable (cid, data) -> iterable of CIDs")
    return links_of


def hash_matches(mh: bytes, data: bytes | memoryview) -> bool:
    """Whether ``data`` hashes to the sha2-256 multihash ``mh`` (False for other hash functions)."""
    return mh[:2] == b"\x12\x20" and sha256_multihash(data) == mh


class BlockStore(ABC):
    """A content-addressed block store with pins and garbage collection.

    All methods raise :class:`ValidationError` for arguments of the wrong type and
    ``DreError("store is closed")`` after :meth:`close`. Implementations are thread-safe.
    """

    @abstractmethod
    def put(self, block: Block, *, verify: bool = True) -> bool:
        """Store ``block``; True if it was new. ``verify`` hashes the data and checks it against
        the CID (:class:`IntegrityError` on mismatch); pass False only for bytes you just hashed."""

    @abstractmethod
    def put_many(self, blocks: Iterable[Block], *, verify: bool = True) -> int:
        """Store ``blocks`` in one transaction, all or nothing; returns how many were new.

        If any block fails verification nothing is written. The blocks are held in memory until
        the transaction commits: callers stream big imports as a series of bounded batches.
        """

    @abstractmethod
    def get(self, cid: CID) -> bytes:
        """The bytes of ``cid`` (any CID with the same multihash matches).

        :class:`NotFoundError` if absent; :class:`IntegrityError` if the store was opened with
        ``verify_on_read`` and the stored bytes no longer hash to the key.
        """

    def with_block(self, cid: CID, use: Callable[[bytes | memoryview], T]) -> T:
        """``use(bytes of cid)``, where a store may pass a view into its storage instead of a
        copy: ``use`` must not keep the view. Errors as for :meth:`get`."""
        return use(self.get(cid))

    @abstractmethod
    def has(self, cid: CID) -> bool:
        """Whether a block with ``cid``'s multihash is stored."""

    @abstractmethod
    def size_of(self, cid: CID) -> int | None:
        """The size in bytes of ``cid``'s block, or ``None`` if absent (no data is read)."""

    @abstractmethod
    def delete(self, cid: CID) -> bool:
        """Remove ``cid``'s block; True if it was present.

        Low level: pins are not consulted (use :meth:`pin_rm` and :meth:`gc` to free pinned data);
        deleting a block under a recursive pin makes the next :meth:`gc` refuse to sweep.
        """

    @abstractmethod
    def iter_multihashes(self) -> Iterator[bytes]:
        """Every stored multihash, in key order. Safe to interleave with writes: it reads in
        batches and never holds a transaction across a ``yield``."""

    @abstractmethod
    def stats(self) -> StoreStats:
        """The store's counters, read in O(1)."""

    @abstractmethod
    def verify_all(self) -> list[bytes]:
        """Hash every block; return the multihashes whose bytes do not match (empty = healthy).

        Also recounts blocks, bytes and pins and raises :class:`IntegrityError` if the maintained
        counters or per-block metadata disagree with the data.
        """

    @abstractmethod
    def pin_add(self, cid: CID, *, recursive: bool = True, links_of: LinksOf) -> None:
        """Pin ``cid``. Its block must be present; a recursive pin requires the whole DAG present
        (:class:`NotFoundError` naming the first missing CID, store unchanged).

        Pinning directly a CID that is already pinned recursively keeps the recursive pin; pinning
        recursively a directly pinned CID upgrades it.
        """

    @abstractmethod
    def pin_rm(self, cid: CID) -> None:
        """Remove the pin on exactly ``cid`` (:class:`NotFoundError` if not pinned)."""

    @abstractmethod
    def pins(self) -> list[tuple[CID, PinKind]]:
        """Every pin, ordered by CID bytes."""

    @abstractmethod
    def leases(self) -> list[Lease]:
        """Every registered import lease (live or not yet found dead), oldest first."""

    @abstractmethod
    def gc(self, links_of: LinksOf) -> GcResult:
        """Remove every block not reachable from a pin and not written by a running import.

        Leases of dead processes are dropped. Raises :class:`IntegrityError` (removing nothing) if a
        block under a recursive pin is missing.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the store; further calls raise ``DreError("store is closed")``. Idempotent."""

    @abstractmethod
    def _lease_acquire(self) -> Lease:
        """Register a lease for this process, stamped with a fresh write sequence number."""

    @abstractmethod
    def _lease_release(self, lease: Lease) -> None:
        """Remove ``lease`` (a no-op if GC already dropped it)."""

    @contextmanager
    def import_session(self) -> Iterator[ImportSession]:
        """Protect the blocks written while the ``with`` block runs from a concurrent :meth:`gc`
        (in any process) until they are pinned. Yields an :class:`ImportSession`."""
        lease = self._lease_acquire()
        try:
            yield ImportSession(self, lease)
        finally:
            self._lease_release(lease)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Meta:
    __slots__ = ("count", "seq", "size")

    def __init__(self, size: int, count: int, seq: int) -> None:
        self.size = size
        self.count = count
        self.seq = seq


class MemoryBlockStore(BlockStore):
    """A dict-backed :class:`BlockStore` for unit tests. Same semantics as the LMDB store, one
    process only (its leases still record the pid so GC's liveness rules are exercised)."""

    def __init__(self, *, verify_on_read: bool = False) -> None:
        self._verify_on_read = check_bool(verify_on_read, "verify_on_read")
        self._lock = threading.RLock()
        self._closed = False
        self._blocks: dict[bytes, bytes] = {}
        self._meta: dict[bytes, _Meta] = {}
        self._pins: dict[bytes, PinKind] = {}
        self._leases: dict[bytes, tuple[int, int, int, float]] = {}  # pid, ticks, seq, time
        self._seq = 0
        self._physical = 0
        self._logical = 0

    def _check_open(self) -> None:
        if self._closed:
            raise DreError("store is closed")

    def _put_locked(self, mh: bytes, data: bytes, seq: int) -> bool:
        self._logical += len(data)
        meta = self._meta.get(mh)
        if meta is not None:
            meta.count += 1
            meta.seq = seq
            return False
        self._blocks[mh] = data
        self._meta[mh] = _Meta(len(data), 1, seq)
        self._physical += len(data)
        return True

    def put(self, block: Block, *, verify: bool = True) -> bool:
        check_bool(verify, "verify")
        _, mh, data = check_block(block, verify)
        with self._lock:
            self._check_open()
            self._seq += 1
            return self._put_locked(mh, data, self._seq)

    def put_many(self, blocks: Iterable[Block], *, verify: bool = True) -> int:
        check_bool(verify, "verify")
        checked = [check_block(b, verify) for b in blocks]
        with self._lock:
            self._check_open()
            self._seq += 1
            return sum(self._put_locked(mh, data, self._seq) for _, mh, data in checked)

    def get(self, cid: CID) -> bytes:
        mh = multihash_of(check_cid(cid))
        with self._lock:
            self._check_open()
            data = self._blocks.get(mh)
        if data is None:
            raise NotFoundError(f"block {_gc.cid_text(cid)} not found")
        if self._verify_on_read and not hash_matches(mh, data):
            raise IntegrityError(
                f"block {_gc.cid_text(cid)}: stored bytes do not match the CID's hash"
            )
        return data

    def has(self, cid: CID) -> bool:
        mh = multihash_of(check_cid(cid))
        with self._lock:
            self._check_open()
            return mh in self._blocks

    def size_of(self, cid: CID) -> int | None:
        mh = multihash_of(check_cid(cid))
        with self._lock:
            self._check_open()
            meta = self._meta.get(mh)
            return None if meta is None else meta.size

    def _delete_locked(self, mh: bytes) -> int:
        meta = self._meta.pop(mh)
        del self._blocks[mh]
        self._physical -= meta.size
        self._logical -= meta.size * meta.count
        return meta.size

    def delete(self, cid: CID) -> bool:
        mh = multihash_of(check_cid(cid))
        with self._lock:
            self._check_open()
            if mh not in self._meta:
                return False
            self._delete_locked(mh)
            return True

    def iter_multihashes(self) -> Iterator[bytes]:
        with self._lock:
            self._check_open()
            keys = sorted(self._blocks)
        yield from keys

    def stats(self) -> StoreStats:
        with self._lock:
            self._check_open()
            direct = sum(1 for k in self._pins.values() if k is PinKind.DIRECT)
            return StoreStats(
                blocks=len(self._blocks),
                physical_bytes=self._physical,
                logical_bytes=self._logical,
                dedup_saved_bytes=self._logical - self._physical,
                pins_direct=direct,
                pins_recursive=len(self._pins) - direct,
            )

    def verify_all(self) -> list[bytes]:
        with self._lock:
            self._check_open()
            bad = [mh for mh, data in sorted(self._blocks.items()) if not hash_matches(mh, data)]
            if self._blocks.keys() != self._meta.keys():
                raise IntegrityError("block metadata does not match the stored blocks")
            for mh, meta in self._meta.items():
                if meta.size != len(self._blocks[mh]) or meta.count < 1:
                    raise IntegrityError(f"metadata of block {mh.hex()} is wrong")
            physical = sum(m.size for m in self._meta.values())
            logical = sum(m.size * m.count for m in self._meta.values())
            if (physical, logical) != (self._physical, self._logical):
                raise IntegrityError("store counters disagree with the stored blocks")
            return bad

    def pin_add(self, cid: CID, *, recursive: bool = True, links_of: LinksOf) -> None:
        check_cid(cid)
        check_bool(recursive, "recursive")
        check_links_of(links_of)
        with self._lock:
            self._check_open()
            if recursive:
                missing = _gc.find_missing(cid, self._blocks.get, links_of)
                if missing is not None:
                    raise NotFoundError(f"block {_gc.cid_text(missing)} not found")
            elif multihash_of(cid) not in self._blocks:
                raise NotFoundError(f"block {_gc.cid_text(cid)} not found")
            key = bytes(cid)
            if self._pins.get(key) is PinKind.RECURSIVE:
                return
            self._pins[key] = PinKind.RECURSIVE if recursive else PinKind.DIRECT

    def pin_rm(self, cid: CID) -> None:
        check_cid(cid)
        with self._lock:
            self._check_open()
            if self._pins.pop(bytes(cid), None) is None:
                raise NotFoundError(f"{_gc.cid_text(cid)} is not pinned")

    def pins(self) -> list[tuple[CID, PinKind]]:
        with self._lock:
            self._check_open()
            return [(cid_from_bytes(k), kind) for k, kind in sorted(self._pins.items())]

    def leases(self) -> list[Lease]:
        with self._lock:
            self._check_open()
            return sorted(
                (
                    Lease(lease_id=k.hex(), pid=pid, start_seq=seq, start_time=t)
                    for k, (pid, _, seq, t) in self._leases.items()
                ),
                key=lambda lease: lease.start_seq,
            )

    def _lease_acquire(self) -> Lease:
        pid = os.getpid()
        with self._lock:
            self._check_open()
            self._seq += 1
            lease_id = os.urandom(16)
            now = time.time()
            self._leases[lease_id] = (pid, _gc.process_start_ticks(pid), self._seq, now)
            return Lease(lease_id=lease_id.hex(), pid=pid, start_seq=self._seq, start_time=now)

    def _lease_release(self, lease: Lease) -> None:
        with self._lock:
            self._leases.pop(bytes.fromhex(lease.lease_id), None)

    def gc(self, links_of: LinksOf) -> GcResult:
        check_links_of(links_of)
        with self._lock:
            self._check_open()
            live = _gc.mark_live(self.pins(), self._blocks.get, links_of)
            for lease_id, (pid, ticks, _, _) in list(self._leases.items()):
                if not _gc.process_alive(pid, ticks):
                    del self._leases[lease_id]
            oldest = min((seq for _, _, seq, _ in self._leases.values()), default=None)
            removed = freed = 0
            for mh in list(self._meta):
                if mh in live or (oldest is not None and self._meta[mh].seq >= oldest):
                    continue
                freed += self._delete_locked(mh)
                removed += 1
            return GcResult(removed_blocks=removed, freed_bytes=freed, kept_blocks=len(self._meta))

    def close(self) -> None:
        with self._lock:
            self._closed = True

    # Test hook: a lease as a dead or foreign process would have left it.
    def _inject_lease(self, pid: int, start_ticks: int = 0) -> None:
        with self._lock:
            self._seq += 1
            self._leases[os.urandom(16)] = (pid, start_ticks, self._seq, time.time())
