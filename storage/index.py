"""The registry's metadata index: names, versions, owners, scopes, attestations and the audit log.

Everything the index points at is a signed, content-addressed block in the block store; the index
only says *which* blocks are current, so it can always be rebuilt from (and checked against) them.
It is a separate LMDB environment beside the block store (``<home>/index``), written in one
transaction per operation.

Keys (all UTF-8 unless noted):

=================  ========================================  =================================
sub-database       key                                       value
=================  ========================================  =================================
``versions``       ``name \\0 version``                        manifest CID (binary)
``owners``         unscoped package name                     peer ID of its first publisher
``scopes``         ``@scope``                                  scope record envelope CID (binary)
``attestations``   manifest CID (binary) ``\\0`` attester       attestation envelope CID (binary)
``log``            sequence number (8 bytes, big-endian)     log entry block CID (binary)
=================  ========================================  =================================
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import lmdb
from dre.protocol.cid import CID, cid_from_bytes, cid_to_bytes
from dre.protocol.errors import DreError

__all__ = ["LogConflict", "RegistryIndex"]

_SUBDBS = (b"versions", b"owners", b"scopes", b"attestations", b"log", b"counters")
# Key in `counters`: attestations recorded (added or replaced) since the index was created.
_ATTESTATION_CHANGES = b"attestation-changes"
_MAP_SIZE = 1 << 30
_SEQ = struct.Struct(">Q")


class LogConflict(DreError):
    """Another writer (another process on the same home) appended to the log first."""


def _version_key(name: str, version: str) -> bytes:
    return name.encode() + b"\x00" + version.encode()


class RegistryIndex:
    """The metadata index of one node home (see the module docstring for its layout)."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._env = lmdb.open(str(path), map_size=_MAP_SIZE, max_dbs=len(_SUBDBS), sync=True)
        self._dbs = {name: self._env.open_db(name) for name in _SUBDBS}

    def close(self) -> None:
        """Close the LMDB environment."""
        self._env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _get(self, db: bytes, key: bytes) -> bytes | None:
        with self._env.begin(db=self._dbs[db]) as txn:
            value = txn.get(key)
        return None if value is None else bytes(value)

    # -- versions ------------------------------------------------------------------------------

    def manifest_cid(self, name: str, version: str) -> CID | None:
        """The manifest of ``name@version``, if published here."""
        raw = self._get(b"versions", _version_key(name, version))
        return None if raw is None else cid_from_bytes(raw)

    def versions(self, name: str) -> dict[str, CID]:
        """Every version of ``name`` known here (unordered), with its manifest CID."""
        prefix = name.encode() + b"\x00"
        found: dict[str, CID] = {}
        with self._env.begin(db=self._dbs[b"versions"]) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    found[bytes(key[len(prefix):]).decode()] = cid_from_bytes(bytes(value))
        return found

    def names(self) -> list[str]:
        """Every package name with at least one version, sorted."""
        names: list[str] = []
        with self._env.begin(db=self._dbs[b"versions"]) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                name = bytes(key).split(b"\x00", 1)[0].decode()
                if not names or names[-1] != name:
                    names.append(name)
        return names

    def owner(self, name: str) -> str | None:
        """The peer ID that first published the unscoped ``name`` on this node."""
        raw = self._get(b"owners", name.encode())
        return None if raw is None else raw.decode()

    def add_version(self, name: str, version: str, manifest: CID, *, owner: str | None) -> bool:
        """Record ``name@version``; False (and nothing written) if it is already there.

        ``owner`` is recorded for an unscoped name that has none yet, in the same transaction.
        """
        key = _version_key(name, version)
        with self._env.begin(write=True) as txn:
            if not txn.put(key, cid_to_bytes(manifest), overwrite=False, db=self._dbs[b"versions"]):
                return False
            if owner is not None:
                txn.put(name.encode(), owner.encode(), overwrite=False, db=self._dbs[b"owners"])
        return True

    # -- scopes --------------------------------------------------------------------------------

    def scope_record(self, scope: str) -> CID | None:
        """The current (highest-version) scope record of ``scope`` accepted here."""
        raw = self._get(b"scopes", scope.encode())
        return None if raw is None else cid_from_bytes(raw)

    def set_scope_record(self, scope: str, record: CID, expected_current: CID | None) -> None:
        """Replace the scope record, only if the current one is still ``expected_current``.

        The caller checked that the new record's version is higher; the compare-and-swap makes
        two concurrent updates unable to both win.
        """
        with self._env.begin(write=True, db=self._dbs[b"scopes"]) as txn:
            raw = txn.get(scope.encode())
            current = None if raw is None else cid_from_bytes(bytes(raw))
            if current != expected_current:
                raise DreError(f"scope {scope} changed concurrently; try again")
            txn.put(scope.encode(), cid_to_bytes(record))

    def scopes(self) -> list[str]:
        """Every scope with a record here, sorted."""
        with self._env.begin(db=self._dbs[b"scopes"]) as txn:
            return [bytes(k).decode() for k in txn.cursor().iternext(keys=True, values=False)]

    # -- attestations --------------------------------------------------------------------------

    def add_attestation(self, manifest: CID, attester: str, attestation: CID) -> None:
        """Record (or replace with a newer one) ``attester``'s attestation of ``manifest``."""
        key = cid_to_bytes(manifest) + b"\x00" + attester.encode()
        counters = self._dbs[b"counters"]
        with self._env.begin(write=True) as txn:
            txn.put(key, cid_to_bytes(attestation), db=self._dbs[b"attestations"])
            count = int.from_bytes(txn.get(_ATTESTATION_CHANGES, b"", db=counters), "big")
            txn.put(_ATTESTATION_CHANGES, (count + 1).to_bytes(8, "big"), db=counters)

    def attestation_changes(self) -> int:
        """How many times an attestation was recorded here (added or replaced): a reader that
        derives something from attestations (trust in the search index) redoes it only when
        this number moved. One LMDB read."""
        with self._env.begin(db=self._dbs[b"counters"]) as txn:
            return int.from_bytes(txn.get(_ATTESTATION_CHANGES, b""), "big")

    def attestations(self, manifest: CID) -> dict[str, CID]:
        """Attester peer ID -> attestation envelope CID, for ``manifest``."""
        prefix = cid_to_bytes(manifest) + b"\x00"
        found: dict[str, CID] = {}
        with self._env.begin(db=self._dbs[b"attestations"]) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    found[bytes(key[len(prefix):]).decode()] = cid_from_bytes(bytes(value))
        return found

    # -- audit log -----------------------------------------------------------------------------

    def log_head(self) -> tuple[int, CID] | None:
        """The sequence number and CID of the newest log entry."""
        with self._env.begin(db=self._dbs[b"log"]) as txn:
            cursor = txn.cursor()
            if not cursor.last():
                return None
            return _SEQ.unpack(bytes(cursor.key()))[0], cid_from_bytes(bytes(cursor.value()))

    def append_log(self, seq: int, entry: CID) -> None:
        """Append entry ``seq``; it must directly follow the current head (append-only)."""
        with self._env.begin(write=True, db=self._dbs[b"log"]) as txn:
            cursor = txn.cursor()
            expected = _SEQ.unpack(bytes(cursor.key()))[0] + 1 if cursor.last() else 0
            if seq != expected:
                raise LogConflict(f"audit log entry {seq} does not follow the head {expected - 1}")
            txn.put(_SEQ.pack(seq), cid_to_bytes(entry))

    def log_entries(self, *, start: int = 0) -> Iterator[tuple[int, CID]]:
        """Log entries from ``start``, oldest first."""
        with self._env.begin(db=self._dbs[b"log"]) as txn:
            cursor = txn.cursor()
            if cursor.set_range(_SEQ.pack(start)):
                for key, value in cursor:
                    yield _SEQ.unpack(bytes(key))[0], cid_from_bytes(bytes(value))
