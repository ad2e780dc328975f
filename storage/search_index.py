"""The search index: SQLite (``<home>/search.sqlite``) with FTS5 full text, package facts,
download and publish events, and the cache of embedding vectors.

One row per package *name* (its highest version), so a search answers with packages, not with
every version of each. The index is derived data: everything in it is rebuilt from the registry
by :func:`catch_up` (which follows the registry's audit log, where publishes by the CLI and
records received from peers both land), except the download events, which only this node saw.

Several processes open the same file (the CLI and the running node): WAL journaling lets
readers run beside the one writer, every write is one short ``BEGIN IMMEDIATE`` transaction and
a busy writer is waited for (``busy_timeout``), and every write is idempotent, so two processes
catching up on the same log entries at once leave the same index behind.

Bulk use without a registry (benchmarks, evaluation): build :class:`PackageEntry` values from
plain fields and pass batches of them to :meth:`SearchIndex.upsert` (one transaction per call,
``executemany`` inside; thousands of entries per call is the efficient size).

Tables::

    meta(key, value)                 last audit-log seq indexed, schema version
    packages(id, name, …)            latest version's facts; ``id`` is never reused
    fts(name, description, keywords, prose)    FTS5, rowid = packages.id
    deps(package_id, dep)            dependency names of each package's latest version
    publishes(name, version, time)   one event per version indexed (recent / created)
    downloads(name, version, time)   one event per install (trending)
    download_counts(name, total)
    vectors(hash, vec)               sha256(model id, chunk text) -> float32 vector
    chunks(key, package_id, ord, hash)         the chunks of each package's text that are embedded
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from dre.protocol import exporter
from dre.protocol.cid import CID, Block
from dre.protocol.docformat import check_license
from dre.protocol.errors import (
    AuthorizationError,
    DreError,
    IntegrityError,
    NotFoundError,
    ValidationError,
)
from dre.protocol.packages import check_publisher, scope_of, trust_score
from dre.protocol.records import ATTESTATION, Attestation, Manifest, open_record
from dre.protocol.search import doc_prose, fts_expression
from dre.protocol.semver import parse_version

from .keystore import Keystore
from .registry import LocalRegistry
from .repo import Repo

__all__ = [
    "SEARCH_DB",
    "IndexedPackage",
    "PackageEntry",
    "PackageFacts",
    "SearchIndex",
    "catch_up",
    "entry_for",
    "own_peer_ids",
    "package_trust",
    "trust_key",
]

_log = logging.getLogger("dre.search")

SEARCH_DB = "search.sqlite"
_SCHEMA_VERSION = 1
#: How long a writer waits for another process's transaction before giving up (ms).
_BUSY_TIMEOUT_MS = 10_000
#: Log entries turned into index rows per transaction while catching up.
CATCH_UP_BATCH = 500
#: BM25 column weights: a word in the name says far more about a package than one in its prose.
BM25_WEIGHTS = (10.0, 4.0, 3.0, 1.0)
#: Above this many matching packages, a text query's commonest terms are left out of the
#: ranking (see :meth:`SearchIndex.text_search`); BM25 over 100k rows costs ~70 ms here.
PRUNE_ABOVE = 5_000
_DF_CACHE_SECONDS = 60.0
_DF_CACHE_SIZE = 50_000
#: Most prose characters indexed per package (documents may be 1 MiB; the start says what it is).
MAX_PROSE_CHARS = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packages(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    version TEXT NOT NULL,
    manifest TEXT NOT NULL,
    description TEXT NOT NULL,
    front_category TEXT NOT NULL,
    category TEXT NOT NULL,
    keywords TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    trust REAL NOT NULL,
    reproducible INTEGER NOT NULL,
    trust_key TEXT NOT NULL DEFAULT '',
    doc_complete INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    embedded TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS packages_created ON packages(created);
CREATE INDEX IF NOT EXISTS packages_updated ON packages(updated);
CREATE INDEX IF NOT EXISTS packages_category ON packages(category);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    name, description, keywords, prose,
    tokenize = 'porter unicode61 remove_diacritics 2', prefix = '2 3'
);
CREATE TABLE IF NOT EXISTS deps(package_id INTEGER NOT NULL, dep TEXT NOT NULL,
    PRIMARY KEY(package_id, dep)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deps_dep ON deps(dep);
CREATE TABLE IF NOT EXISTS publishes(name TEXT NOT NULL, version TEXT NOT NULL,
    time INTEGER NOT NULL, PRIMARY KEY(name, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS downloads(id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    version TEXT NOT NULL, time INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS downloads_time ON downloads(time);
CREATE TABLE IF NOT EXISTS download_counts(name TEXT PRIMARY KEY, total INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vectors(hash BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks(key INTEGER PRIMARY KEY AUTOINCREMENT,
    package_id INTEGER NOT NULL, ord INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_package ON chunks(package_id);
"""


@dataclass(frozen=True)
class PackageEntry:
    """One package version to index, as plain fields (no registry needed).

    ``time`` is when this version was published (unix seconds); ``trust`` in [0, 1];
    ``doc_complete`` False when the document was not available (its prose is then indexed
    later, when :meth:`SearchIndex.upsert` sees the entry again with the prose).
    """

    name: str
    version: str
    manifest: str
    description: str = ""
    category: str = ""
    keywords: Sequence[str] = ()
    prose: str = ""
    dependencies: Sequence[str] = ()
    time: int = 0
    trust: float = 0.0
    reproducible: bool = False
    doc_complete: bool = True
    #: What the trust was computed from (attestation CIDs); lets a refresh skip unchanged ones.
    trust_key: str = ""


@dataclass(frozen=True)
class IndexedPackage:
    """A package as the index holds it (its latest version)."""

    id: int
    name: str
    version: str
    manifest: str
    description: str
    category: str
    front_category: str
    keywords: list[str]
    created: int
    updated: int
    trust: float
    reproducible: bool
    downloads: int
    dependencies: list[str] = field(default_factory=list)


def _content_hash(entry: PackageEntry) -> str:
    h = hashlib.sha256()
    for part in (entry.name, entry.description, "\x1f".join(entry.keywords), entry.prose):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def _newer(version: str, than: str) -> bool:
    """Whether ``version`` has higher precedence than ``than`` (plain comparison if either is
    not semver, e.g. in synthetic benchmark data)."""
    try:
        return bool(parse_version(version) > parse_version(than))
    except ValidationError:
        return version > than


class PackageFacts(NamedTuple):
    """What ranking needs of a package: fusion tie-breaks, the category filter, sorting."""

    trust: float
    reproducible: bool
    category: str
    downloads: int
    created: int
    updated: int


_PACKAGE_COLUMNS = (
    "p.id, p.name, p.version, p.manifest, p.description, p.category, p.front_category, "
    "p.keywords, p.created, p.updated, p.trust, p.reproducible, COALESCE(d.total, 0)"
)
_PACKAGE_FROM = "packages p LEFT JOIN download_counts d ON d.name = p.name"


def _package(row: tuple[object, ...]) -> IndexedPackage:
    (pid, name, version, manifest, description, category, front, keywords, created, updated,
     trust, reproducible, downloads) = row
    return IndexedPackage(
        id=int(pid), name=str(name), version=str(version),  # type: ignore[call-overload]
        manifest=str(manifest), description=str(description), category=str(category),
        front_category=str(front), keywords=list(json.loads(str(keywords))),
        created=int(created), updated=int(updated),  # type: ignore[call-overload]
        trust=float(trust), reproducible=bool(reproducible),  # type: ignore[arg-type]
        downloads=int(downloads),  # type: ignore[call-overload]
    )


_SORT_SQL = {
    "downloads": "COALESCE(d.total, 0) DESC, p.trust DESC, p.name",
    "updated": "p.updated DESC, p.name",
    "created": "p.created DESC, p.name",
    # Browsing without a query: the most used first.
    "relevance": "COALESCE(d.total, 0) DESC, p.trust DESC, p.name",
}


class SearchIndex:
    """The search database of one node home (or any path, for benchmarks).

    Thread-safe: each thread gets its own SQLite connection (WAL lets them read while one
    writes). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        # (owning thread, connection): worker threads come and go (trio's thread cache), so
        # connections of threads that ended are closed when the next one is opened.
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._df_cache: dict[str, int] = {}
        self._df_cache_time = time.monotonic()
        try:
            self._create_schema(self._conn())
        except sqlite3.DatabaseError as exc:
            # Derived data: a file SQLite cannot read is set aside and rebuilt from the
            # registry (only this node's download counts are lost with it).
            self.close()
            aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
            _log.warning("search index %s is unreadable (%s); moved to %s and rebuilt",
                         path, exc, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    path.with_name(path.name + suffix).unlink()
            path.replace(aside)
            self._closed = False
            self._create_schema(self._conn())

    @classmethod
    def open_home(cls, home: Path) -> SearchIndex:
        """The index of the node home ``home``."""
        return cls(home / SEARCH_DB)

    # -- connections -------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise DreError("the search index is closed")
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise DreError(f"cannot open the search index {self.path}: {exc}") from None
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # Derived data: a crash may lose the last transactions, which catch-up redoes.
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn = conn
        with self._lock:
            live = []
            for thread, other in self._all:
                if thread.is_alive():
                    live.append((thread, other))
                else:
                    with contextlib.suppress(sqlite3.Error):
                        other.close()
            live.append((threading.current_thread(), conn))
            self._all = live
        return conn

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        conn = conn or self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise DreError(f"the search index {self.path} is busy or unwritable ({exc}); "
                           "try again") from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise DreError(f"cannot write the search index {self.path}: {exc}") from None

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        with self._write(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise DreError(
                    f"{self.path} has search schema {version}; this dre reads {_SCHEMA_VERSION}"
                    " (delete the file: it is rebuilt from the registry)"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def close(self) -> None:
        """Close every connection this index opened (in any thread)."""
        with self._lock:
            self._closed = True
            for _thread, conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta --------------------------------------------------------------------------------

    def _meta(self, conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def next_log_seq(self) -> int:
        """The first audit-log sequence number not indexed yet."""
        value = self._meta(self._conn(), "next_seq")
        return int(value) if value is not None else 0

    # -- writing packages --------------------------------------------------------------------

    def upsert(self, entries: Iterable[PackageEntry], *, next_seq: int | None = None) -> int:
        """Index package versions, in one transaction; returns how many rows changed.

        A version lower than the one indexed for its name only moves the package's ``created``
        time and records its publish event; the highest version's facts and text are what is
        searched. The same entry twice is a no-op (idempotent). ``next_seq`` records how far
        the audit log has been indexed, in the same transaction.
        """
        changed = 0
        self._df_cache.clear()
        with self._write() as conn:
            for entry in entries:
                changed += self._upsert_one(conn, entry)
            if next_seq is not None:
                current = self._meta(conn, "next_seq")
                if current is None or int(current) < next_seq:
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)",
                                 (str(next_seq),))
        return changed

    def _upsert_one(self, conn: sqlite3.Connection, entry: PackageEntry) -> int:
        conn.execute("INSERT OR IGNORE INTO publishes VALUES (?, ?, ?)",
                     (entry.name, entry.version, entry.time))
        row = conn.execute(
            "SELECT id, version, created, updated, content_hash, doc_complete FROM packages "
            "WHERE name = ?", (entry.name,)).fetchone()
        prose = entry.prose[:MAX_PROSE_CHARS]
        if len(prose) != len(entry.prose):
            entry = PackageEntry(**{**entry.__dict__, "prose": prose})
        content_hash = _content_hash(entry)
        keywords = json.dumps(list(entry.keywords))
        if row is None:
            cursor = conn.execute(
                "INSERT INTO packages(name, version, manifest, description, front_category, "
                "category, keywords, created, updated, trust, reproducible, trust_key, "
                "doc_complete, content_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (entry.name, entry.version, entry.manifest, entry.description, entry.category,
                 entry.category, keywords, entry.time, entry.time, entry.trust,
                 int(entry.reproducible), entry.trust_key, int(entry.doc_complete),
                 content_hash))
            pid = cursor.lastrowid
            self._write_text(conn, pid, entry, keywords_text=" ".join(entry.keywords))
            self._write_deps(conn, pid, entry.dependencies)
            return 1
        pid, version, created, updated, old_hash, old_complete = row
        times = (min(created, entry.time), max(updated, entry.time))
        same_version = version == entry.version
        if not same_version and not _newer(entry.version, version):
            if times != (created, updated):
                conn.execute("UPDATE packages SET created = ?, updated = ? WHERE id = ?",
                             (*times, pid))
                return 1
            return 0
        if same_version and (content_hash == old_hash or (old_complete and not
                                                          entry.doc_complete)):
            # Already indexed (or we hold the fuller text already): only trust may move.
            conn.execute("UPDATE packages SET trust = ?, reproducible = ?, trust_key = ?, "
                         "created = ?, updated = ? WHERE id = ?",
                         (entry.trust, int(entry.reproducible), entry.trust_key, *times, pid))
            return 0
        # Keep a category assigned by classification while the publisher still gives none.
        conn.execute(
            "UPDATE packages SET version = ?, manifest = ?, description = ?, front_category = ?,"
            " category = CASE WHEN ? = '' AND front_category = '' THEN category ELSE ? END,"
            " keywords = ?, created = ?, updated = ?, trust = ?, reproducible = ?,"
            " trust_key = ?, doc_complete = ?, content_hash = ? WHERE id = ?",
            (entry.version, entry.manifest, entry.description, entry.category, entry.category,
             entry.category, keywords, *times, entry.trust, int(entry.reproducible),
             entry.trust_key, int(entry.doc_complete), content_hash, pid))
        conn.execute("DELETE FROM fts WHERE rowid = ?", (pid,))
        self._write_text(conn, pid, entry, keywords_text=" ".join(entry.keywords))
        conn.execute("DELETE FROM deps WHERE package_id = ?", (pid,))
        self._write_deps(conn, pid, entry.dependencies)
        return 1

    @staticmethod
    def _write_text(conn: sqlite3.Connection, pid: int | None, entry: PackageEntry, *,
                    keywords_text: str) -> None:
        # Names index as their words ("@acme/retry" -> "acme retry") and as written.
        name_text = f"{entry.name} {entry.name.replace('-', '').replace('_', '')}"
        conn.execute("INSERT INTO fts(rowid, name, description, keywords, prose) "
                     "VALUES (?, ?, ?, ?, ?)",
                     (pid, name_text, entry.description, keywords_text, entry.prose))

    @staticmethod
    def _write_deps(conn: sqlite3.Connection, pid: int | None, deps: Sequence[str]) -> None:
        conn.executemany("INSERT OR IGNORE INTO deps VALUES (?, ?)", [(pid, d) for d in deps])

    def set_categories(self, assigned: Sequence[tuple[int, str]]) -> None:
        """Set the classified category of packages whose front matter gives none."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE packages SET category = ? WHERE id = ? AND front_category = ''",
                [(category, pid) for pid, category in assigned])

    def set_trust(self, updates: Sequence[tuple[str, float, bool, str]]) -> None:
        """Update ``(name, trust, reproducible, trust_key)`` of indexed packages."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE packages SET trust = ?, reproducible = ?, trust_key = ? WHERE name = ?",
                [(t, int(r), k, n) for n, t, r, k in updates])

    # -- reading packages --------------------------------------------------------------------

    def count(self) -> int:
        """Packages indexed."""
        return int(self._conn().execute("SELECT COUNT(*) FROM packages").fetchone()[0])

    def packages(self, ids: Sequence[int]) -> dict[int, IndexedPackage]:
        """The indexed packages with these ids (missing ids are left out)."""
        found: dict[int, IndexedPackage] = {}
        conn = self._conn()
        for start in range(0, len(ids), 500):
            part = list(ids[start:start + 500])
            marks = ",".join("?" * len(part))
            for row in conn.execute(
                    f"SELECT {_PACKAGE_COLUMNS} FROM {_PACKAGE_FROM} WHERE p.id IN ({marks})",
                    part):
                package = _package(row)
                found[package.id] = package
        return found

    def facts(self, ids: Sequence[int]) -> dict[int, PackageFacts]:
        """Ranking facts of the packages with these ids (cheaper than :meth:`packages`)."""
        found: dict[int, PackageFacts] = {}
        conn = self._conn()
        for start in range(0, len(ids), 500):
            part = list(ids[start:start + 500])
            marks = ",".join("?" * len(part))
            for pid, trust, reproducible, category, downloads, created, updated in conn.execute(
                    "SELECT p.id, p.trust, p.reproducible, p.category, COALESCE(d.total, 0), "
                    f"p.created, p.updated FROM {_PACKAGE_FROM} WHERE p.id IN ({marks})", part):
                found[int(pid)] = PackageFacts(float(trust), bool(reproducible), str(category),
                                               int(downloads), int(created), int(updated))
        return found

    def package_by_name(self, name: str) -> IndexedPackage | None:
        """The indexed package called ``name``, with its dependencies."""
        conn = self._conn()
        row = conn.execute(f"SELECT {_PACKAGE_COLUMNS} FROM {_PACKAGE_FROM} WHERE p.name = ?",
                           (name,)).fetchone()
        if row is None:
            return None
        package = _package(row)
        deps = [str(r[0]) for r in conn.execute(
            "SELECT dep FROM deps WHERE package_id = ? ORDER BY dep", (package.id,))]
        return IndexedPackage(**{**package.__dict__, "dependencies": deps})

    def text_of(self, pid: int) -> tuple[str, str, list[str], str] | None:
        """(name, description, keywords, prose) of a package, as indexed."""
        row = self._conn().execute(
            "SELECT p.name, p.description, p.keywords, f.prose FROM packages p "
            "JOIN fts f ON f.rowid = p.id WHERE p.id = ?", (pid,)).fetchone()
        if row is None:
            return None
        return str(row[0]), str(row[1]), list(json.loads(row[2])), str(row[3])

    def text_ranking(self, expression: str, *, category: str | None, limit: int) -> list[int]:
        """Package ids matching the FTS5 ``expression`` (from
        :func:`dre.protocol.search.fts_match_expression`), best BM25 first."""
        weights = ", ".join(str(w) for w in BM25_WEIGHTS)
        sql = (f"SELECT fts.rowid FROM fts JOIN packages p ON p.id = fts.rowid "
               f"WHERE fts MATCH ? {'AND p.category = ?' if category else ''} "
               f"ORDER BY bm25(fts, {weights}), p.trust DESC LIMIT ?")
        args: list[object] = [expression, *([category] if category else []), limit]
        return [int(r[0]) for r in self._query(sql, args)]

    def text_search(self, terms: Sequence[str], *, category: str | None, limit: int,
                    count: bool = True) -> tuple[list[int], int]:
        """Rank packages for query ``terms`` (from :func:`dre.protocol.search.query_terms`; the
        last is also a prefix): (ids best BM25 first, number of packages matching any term).

        Scoring costs per matching row (~0.7 µs each here, more with long documents), and an
        OR of common words matches nearly every package. When the terms' document frequencies
        add up to more than :data:`PRUNE_ABOVE`, the commonest terms are left out of the
        ranking expression (they add little to BM25, whose IDF of a term in most documents is
        near zero). If even the rarest term is that common, the ranking takes the packages
        holding every term, in their name, description or keywords if any do. Matching
        packages are still counted with every term (unless ``count`` is False: the count is
        then 0 and costs nothing).
        """
        if not terms:
            return [], 0
        full = fts_expression(terms, prefix_last=True)
        last = len(terms) - 1
        frequency = sorted((self._document_frequency(t, prefix=i == last), i)
                           for i, t in enumerate(terms))
        total = self.text_count(full, category=category) if count else 0
        if sum(df for df, _ in frequency) <= PRUNE_ABOVE or len(terms) == 1:
            return self.text_ranking(full, category=category, limit=limit), total
        kept: list[int] = []
        covered = 0
        for df, i in frequency:
            if kept and covered + df > PRUNE_ABOVE:
                break
            kept.append(i)
            covered += df
        if covered > PRUNE_ABOVE:
            every = fts_expression(terms, prefix_last=True, operator="AND")
            for expression in (f"{{name description keywords}} : ({every})", every):
                ids = self.text_ranking(expression, category=category, limit=limit)
                if ids:
                    return ids, total
        chosen = [terms[i] for i in sorted(kept)]
        expression = fts_expression(chosen, prefix_last=last in kept)
        return self.text_ranking(expression, category=category, limit=limit), total

    def _document_frequency(self, term: str, *, prefix: bool) -> int:
        """Packages holding ``term`` (cached for a while: it only informs pruning)."""
        now = time.monotonic()
        if now - self._df_cache_time > _DF_CACHE_SECONDS:
            self._df_cache.clear()
            self._df_cache_time = now
        key = f"{term}*" if prefix else term
        found = self._df_cache.get(key)
        if found is None:
            found = self.text_count(fts_expression([term], prefix_last=prefix), category=None)
            if len(self._df_cache) > _DF_CACHE_SIZE:
                self._df_cache.clear()
            self._df_cache[key] = found
        return found

    def text_count(self, expression: str, *, category: str | None) -> int:
        """How many packages match the FTS5 ``expression``."""
        sql = (f"SELECT COUNT(*) FROM fts JOIN packages p ON p.id = fts.rowid "
               f"WHERE fts MATCH ? {'AND p.category = ?' if category else ''}")
        args: list[object] = [expression, *([category] if category else [])]
        return int(self._query(sql, args)[0][0])

    def _query(self, sql: str, args: Sequence[object]) -> list[Any]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            # Only sanitized expressions reach MATCH; if SQLite still objects, the user gets
            # a line, never SQL internals.
            _log.warning("search query failed: %s", exc)
            raise ValidationError("this query cannot be searched; try other words") from None

    def browse(self, *, category: str | None, sort: str, limit: int,
               offset: int = 0) -> list[int]:
        """Package ids (optionally of one category) in ``sort`` order, for queries without
        words: ``downloads``/``relevance`` most downloaded first, ``updated``/``created``
        newest first."""
        where = "WHERE p.category = ?" if category else ""
        args: list[object] = [*([category] if category else []), limit, offset]
        return [int(r[0]) for r in self._conn().execute(
            f"SELECT p.id FROM {_PACKAGE_FROM} {where} ORDER BY {_SORT_SQL[sort]} "
            "LIMIT ? OFFSET ?", args)]

    def count_in(self, category: str | None) -> int:
        """Packages in ``category`` (all when None)."""
        if category is None:
            return self.count()
        return int(self._conn().execute(
            "SELECT COUNT(*) FROM packages WHERE category = ?", (category,)).fetchone()[0])

    def ids_of(self, names: Sequence[str]) -> dict[str, int]:
        """Package id by name, for the names that are indexed."""
        conn = self._conn()
        return {n: int(r[0]) for n in names
                if (r := conn.execute("SELECT id FROM packages WHERE name = ?",
                                      (n,)).fetchone()) is not None}

    def categories(self) -> list[tuple[str, int]]:
        """(category, packages) for every category in use, most populated first."""
        return [(str(c), int(n)) for c, n in self._conn().execute(
            "SELECT category, COUNT(*) FROM packages WHERE category != '' "
            "GROUP BY category ORDER BY COUNT(*) DESC, category")]

    def front_matter_categories(self) -> list[str]:
        """Categories that publishers wrote in front matter."""
        return [str(r[0]) for r in self._conn().execute(
            "SELECT DISTINCT front_category FROM packages WHERE front_category != '' "
            "ORDER BY front_category")]

    def uncategorized(self) -> list[int]:
        """Ids of packages whose front matter names no category."""
        return [int(r[0]) for r in self._conn().execute(
            "SELECT id FROM packages WHERE front_category = ''")]

    def sharing_dependencies(self, deps: Sequence[str], *, limit: int) -> list[tuple[int, int]]:
        """(package id, shared dependency count) of packages depending on any of ``deps``, most
        shared first."""
        if not deps:
            return []
        marks = ",".join("?" * len(deps))
        return [(int(p), int(n)) for p, n in self._conn().execute(
            f"SELECT package_id, COUNT(*) FROM deps WHERE dep IN ({marks}) "
            "GROUP BY package_id ORDER BY COUNT(*) DESC LIMIT ?", [*deps, limit])]

    def recent(self, kind: str, *, limit: int) -> list[int]:
        """Package ids, newest ``created`` or ``updated`` first."""
        column = {"created": "created", "updated": "updated"}[kind]
        return [int(r[0]) for r in self._conn().execute(
            f"SELECT id FROM packages ORDER BY {column} DESC, name LIMIT ?", (limit,))]

    def trust_keys(self) -> list[tuple[str, str, str]]:
        """(name, manifest, trust_key) of every package (for refreshing trust)."""
        return [(str(n), str(m), str(k)) for n, m, k in self._conn().execute(
            "SELECT name, manifest, trust_key FROM packages")]

    def incomplete_docs(self, *, limit: int) -> list[tuple[str, str, int]]:
        """(name, manifest, created) of packages indexed before their document was
        available."""
        return [(str(n), str(m), int(c)) for n, m, c in self._conn().execute(
            "SELECT name, manifest, created FROM packages WHERE doc_complete = 0 LIMIT ?",
            (limit,))]

    # -- events ------------------------------------------------------------------------------

    def record_download(self, name: str, version: str, time: int) -> None:
        """Count one download (an install) of ``name@version`` at ``time``."""
        with self._write() as conn:
            conn.execute("INSERT INTO downloads(name, version, time) VALUES (?, ?, ?)",
                         (name, version, time))
            conn.execute("INSERT INTO download_counts VALUES (?, 1) ON CONFLICT(name) "
                         "DO UPDATE SET total = total + 1", (name,))

    def downloads_total(self) -> int:
        """Downloads ever recorded here."""
        row = self._conn().execute("SELECT COALESCE(SUM(total), 0) FROM download_counts")
        return int(row.fetchone()[0])

    def downloads_since(self, since: int) -> int:
        """Downloads recorded at or after ``since`` (unix seconds)."""
        return int(self._conn().execute("SELECT COUNT(*) FROM downloads WHERE time >= ?",
                                        (since,)).fetchone()[0])

    def trending(self, since: int, *, limit: int) -> list[tuple[int, int]]:
        """(package id, downloads since ``since``), most downloaded first."""
        return [(int(p), int(n)) for p, n in self._conn().execute(
            "SELECT p.id, COUNT(*) AS n FROM downloads d JOIN packages p ON p.name = d.name "
            "WHERE d.time >= ? GROUP BY p.id ORDER BY n DESC, p.trust DESC, p.name LIMIT ?",
            (since, limit))]

    # -- vectors -----------------------------------------------------------------------------

    def to_embed(self, model: str, *, limit: int) -> list[tuple[int, str]]:
        """(package id, content hash) of packages whose text ``model`` has not embedded yet."""
        return [(int(p), str(h)) for p, h in self._conn().execute(
            "SELECT id, content_hash FROM packages WHERE embedded != ? || ':' || content_hash "
            "ORDER BY id LIMIT ?", (model, limit))]

    def cached_vectors(self, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored vectors (float32 bytes) of the chunk hashes that have one."""
        conn = self._conn()
        found: dict[bytes, bytes] = {}
        for start in range(0, len(hashes), 500):
            part = list(hashes[start:start + 500])
            marks = ",".join("?" * len(part))
            for h, v in conn.execute(f"SELECT hash, vec FROM vectors WHERE hash IN ({marks})",
                                     part):
                found[bytes(h)] = bytes(v)
        return found

    def store_embeddings(
        self, model: str, items: Sequence[tuple[int, str, Sequence[bytes]]],
        vectors: dict[bytes, bytes],
    ) -> tuple[list[tuple[int, int, bytes]], list[int]]:
        """Record the chunks of packages ``(id, content hash, chunk hashes)`` and new vectors;
        returns the chunk rows added ``(key, package id, chunk hash)`` and the keys removed.

        A package whose text changed since its id was handed out is skipped (its new text is
        embedded in a later round).
        """
        added: list[tuple[int, int, bytes]] = []
        removed: list[int] = []
        with self._write() as conn:
            conn.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", list(vectors.items()))
            for pid, content_hash, hashes in items:
                row = conn.execute("SELECT content_hash FROM packages WHERE id = ?",
                                   (pid,)).fetchone()
                if row is None or row[0] != content_hash:
                    continue
                removed += [int(r[0]) for r in conn.execute(
                    "SELECT key FROM chunks WHERE package_id = ?", (pid,))]
                conn.execute("DELETE FROM chunks WHERE package_id = ?", (pid,))
                for ord_, h in enumerate(hashes):
                    cursor = conn.execute(
                        "INSERT INTO chunks(package_id, ord, hash) VALUES (?, ?, ?)",
                        (pid, ord_, h))
                    assert cursor.lastrowid is not None
                    added.append((cursor.lastrowid, pid, h))
                conn.execute("UPDATE packages SET embedded = ? WHERE id = ?",
                             (f"{model}:{content_hash}", pid))
        return added, removed

    def chunk_vectors(self) -> Iterator[tuple[int, int, bytes]]:
        """Every chunk ``(key, package id, vector bytes)`` (for rebuilding the vector index)."""
        conn = self._conn()
        yield from ((int(k), int(p), bytes(v)) for k, p, v in conn.execute(
            "SELECT c.key, c.package_id, v.vec FROM chunks c JOIN vectors v ON v.hash = c.hash "
            "ORDER BY c.key"))

    def chunk_keys(self) -> set[int]:
        """Every chunk key (to reconcile the vector index with this database)."""
        return {int(k) for (k,) in self._conn().execute("SELECT key FROM chunks")}

    def chunk_vectors_of(self, keys: Sequence[int]) -> list[tuple[int, bytes]]:
        """``(key, vector bytes)`` of these chunk keys (those that exist)."""
        conn = self._conn()
        found: list[tuple[int, bytes]] = []
        for start in range(0, len(keys), 500):
            part = list(keys[start:start + 500])
            marks = ",".join("?" * len(part))
            found += [(int(k), bytes(v)) for k, v in conn.execute(
                "SELECT c.key, v.vec FROM chunks c JOIN vectors v ON v.hash = c.hash "
                f"WHERE c.key IN ({marks})", part)]
        return found

    def chunk_packages(self, keys: Sequence[int]) -> dict[int, int]:
        """Package id of each chunk key that still exists."""
        conn = self._conn()
        found: dict[int, int] = {}
        for start in range(0, len(keys), 500):
            part = list(keys[start:start + 500])
            marks = ",".join("?" * len(part))
            for k, p in conn.execute(
                    f"SELECT key, package_id FROM chunks WHERE key IN ({marks})", part):
                found[int(k)] = int(p)
        return found

    def package_vectors(self, pid: int) -> list[bytes]:
        """The chunk vectors of one package, in chunk order (the first is its summary)."""
        return [bytes(v) for (v,) in self._conn().execute(
            "SELECT v.vec FROM chunks c JOIN vectors v ON v.hash = c.hash "
            "WHERE c.package_id = ? ORDER BY c.ord", (pid,))]

    def summary_vectors(self, ids: Sequence[int]) -> dict[int, bytes]:
        """The first chunk's vector (name, description, keywords) of each package."""
        conn = self._conn()
        found: dict[int, bytes] = {}
        for start in range(0, len(ids), 500):
            part = list(ids[start:start + 500])
            marks = ",".join("?" * len(part))
            for p, v in conn.execute(
                    "SELECT c.package_id, v.vec FROM chunks c JOIN vectors v ON v.hash = c.hash"
                    f" WHERE c.ord = 0 AND c.package_id IN ({marks})", part):
                found[int(p)] = bytes(v)
        return found


# -- from the registry ------------------------------------------------------------------------


def own_peer_ids(home: Path) -> frozenset[str]:
    """Peer IDs of the keys in this home's keystore (the node key and publisher keys): an
    attestation signed by one of them is this node's own."""
    try:
        return frozenset(info.peer_id for info in Keystore(home).list())
    except DreError:
        return frozenset()


def package_trust(registry: LocalRegistry, manifest_cid: CID, manifest: Manifest,
                  own: frozenset[str]) -> tuple[float, bool, str]:
    """(trust, reproducible, trust key) of a manifest from what this node has recorded.

    The same formula as ``LocalRegistry.verify`` (:func:`dre.protocol.packages.trust_score`)
    without redoing its expensive checks: the signature held when the manifest was opened,
    every stored block was checked against its CID when stored, authorization and license are
    re-checked (cheap), *reproduced* is this node's own attestation that it regenerated the
    package byte for byte, and independent attesters are the other keys (not the publisher)
    whose stored attestations say they reproduced it. ``reproducible`` is that own attestation.
    The trust key names the attestations used, so a refresh can skip unchanged packages.
    """
    attestations = registry.index.attestations(manifest_cid)
    authorized = True
    scope_name = scope_of(manifest.name)
    try:
        check_publisher(
            manifest.name, manifest.publisher,
            scope=registry.scope(scope_name) if scope_name else None,
            first_publisher=None if scope_name else registry.index.owner(manifest.name),
            now=manifest.time,
        )
    except (AuthorizationError, IntegrityError, NotFoundError):
        authorized = False
    try:
        check_license(manifest.license)
        license_valid = True
    except ValidationError:
        license_valid = False
    reproduced_by_us = False
    independent = 0
    for attester, cid in sorted(attestations.items()):
        try:
            opened = open_record(Block(cid, registry.store.get(cid)))
        except (IntegrityError, NotFoundError, ValidationError):
            continue
        record = opened.record
        if opened.kind != ATTESTATION or not isinstance(record, Attestation):
            continue
        if not (record.reproduced and record.manifest == manifest_cid):
            continue
        if attester in own:
            reproduced_by_us = True
        if attester != manifest.publisher:
            independent += 1
    score, _ = trust_score(signature=True, authorized=authorized, intact=True,
                           reproduced=reproduced_by_us, license_valid=license_valid,
                           independent_attesters=independent)
    return score, reproduced_by_us, trust_key(attestations)


def trust_key(attestations: dict[str, CID]) -> str:
    """A short fingerprint of a manifest's attestations (what its trust was computed from)."""
    key = ",".join(f"{a}={c}" for a, c in sorted(attestations.items()))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def entry_for(registry: LocalRegistry, manifest_cid: CID, *, time: int,
              own: frozenset[str]) -> PackageEntry:
    """The index entry of one stored manifest (its document's prose if the doc is stored)."""
    manifest = registry.manifest(manifest_cid)
    prose, complete = "", True
    try:
        doc = b"".join(exporter.read_file(registry.store.get, manifest.doc))
        prose = doc_prose(doc.decode("utf-8", "replace"))
    except NotFoundError:
        complete = False  # received over gossip; the document may come later
    except (IntegrityError, ValidationError) as exc:
        _log.warning("document of %s@%s unreadable: %s", manifest.name, manifest.version, exc)
    trust, reproducible, trust_key = package_trust(registry, manifest_cid, manifest, own)
    return PackageEntry(
        name=manifest.name, version=manifest.version, manifest=str(manifest_cid),
        description=manifest.description, category=manifest.category,
        keywords=tuple(manifest.keywords), prose=prose,
        dependencies=tuple(sorted(manifest.dependencies)),
        time=min(manifest.time, time) if time else manifest.time, trust=trust,
        reproducible=reproducible, doc_complete=complete, trust_key=trust_key,
    )


def catch_up(index: SearchIndex, repo: Repo, *, batch: int = CATCH_UP_BATCH,
             max_entries: int | None = None) -> int:
    """Index every package version in the registry's audit log that is not indexed yet;
    returns how many log entries were read.

    Publishes by the CLI and records received from peers both append to the log, so following
    it from the last sequence number indexed (kept in the index) finds everything new. A
    version's time is the earlier of its signed publish time and when this node logged it, so a
    publisher cannot post-date a version to the top of "recent". ``max_entries`` bounds one
    call (the node catches up in slices so it stays responsive).
    """
    registry = LocalRegistry(repo)
    own = own_peer_ids(repo.home)
    start = index.next_log_seq()
    head = repo.index.log_head()
    if head is None or head[0] < start:
        return 0
    read = 0
    pending: list[PackageEntry] = []
    next_seq = start
    for entry in registry.log_from(start):
        next_seq = entry.seq + 1
        read += 1
        if entry.kind == "publish":
            try:
                pending.append(entry_for(registry, entry.record, time=entry.time, own=own))
            except (IntegrityError, NotFoundError, ValidationError) as exc:
                _log.warning("not indexing %s: %s", entry.subject, exc)
        if read % batch == 0:
            index.upsert(pending, next_seq=next_seq)
            pending = []
        if max_entries is not None and read >= max_entries:
            break
    index.upsert(pending, next_seq=next_seq)
    return read
