"""What the web pages show, read from a node home: package rows, a package's versions, files and
verification, and the dashboard's counts.

Plain synchronous functions over a :class:`~dre.storage.repo.Repo`; the page handlers run the
heavier ones (verification, diffs, the dashboard's scan) in a worker thread. Records are
content-addressed and immutable, so decoded manifests and attestations are cached by CID: each
signature is checked once per process, not once per page view.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dre.protocol import exporter
from dre.protocol.cid import CID, Block
from dre.protocol.docformat import parse_document
from dre.protocol.errors import DreError, IntegrityError, NotFoundError
from dre.protocol.packages import TRUST_WEIGHTS
from dre.protocol.records import ATTESTATION, Attestation, Manifest, open_record
from dre.protocol.treediff import TreeDiff, diff_trees, doc_diff, flatten_tree
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

__all__ = [
    "DAY",
    "AttestationView",
    "Dashboard",
    "FileEntry",
    "LogEvent",
    "LogTally",
    "PackageRow",
    "ReadCache",
    "TimelineEntry",
    "Verification",
    "dashboard",
    "document_body",
    "document_text",
    "file_tree",
    "list_packages",
    "package_versions",
    "timeline",
    "verification",
]

DAY = 86_400
#: Versions a timeline shows, newest first (each costs a tree walk and a document diff).
MAX_TIMELINE = 50
#: Lines of one document diff shown before it is cut.
MAX_DIFF_LINES = 2000

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A small thread-safe LRU map (worker threads and the event loop share it)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()  # outside the lock: two threads may both make it, both get equal values
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


class ReadCache:
    """Decoded, signature-checked records by CID, and results that depend on a CID only."""

    def __init__(self, size: int = 10_000) -> None:
        self.manifests: _Lru[CID, Manifest] = _Lru(size)
        self.attestations: _Lru[CID, tuple[Attestation, str] | None] = _Lru(size)
        #: Integrity and regeneration of a manifest's trees (bytes under a CID never change).
        #: Rendered documents by the document's CID (filled by the pages).
        self.rendered: _Lru[CID, object] = _Lru(64)

    def manifest(self, repo: Repo, cid: CID) -> Manifest:
        return self.manifests.get_or_make(cid, lambda: LocalRegistry(repo).manifest(cid))

    def attestation(self, repo: Repo, cid: CID) -> tuple[Attestation, str] | None:
        """The attestation under ``cid`` and its signer, or None if it is missing or bad."""

        def load() -> tuple[Attestation, str] | None:
            try:
                opened = open_record(Block(cid, repo.store.get(cid)))
            except (IntegrityError, NotFoundError):
                return None
            if opened.kind != ATTESTATION or not isinstance(opened.record, Attestation):
                return None
            return opened.record, opened.signer

        return self.attestations.get_or_make(cid, load)


# -- package rows (the browser's list when no search engine runs) ------------------------------


@dataclass(frozen=True)
class PackageRow:
    """One package in a list: its latest version's facts."""

    name: str
    version: str
    description: str
    category: str
    keywords: list[str]
    #: None when no search engine counts downloads.
    downloads: int | None
    trust: float | None
    reproducible: bool
    created: int
    updated: int


def _reproduced_by_someone(repo: Repo, cache: ReadCache, manifest_cid: CID) -> bool:
    for cid in repo.index.attestations(manifest_cid).values():
        found = cache.attestation(repo, cid)
        if found is not None and found[0].reproduced and found[0].manifest == manifest_cid:
            return True
    return False


def _row(repo: Repo, cache: ReadCache, name: str) -> PackageRow | None:
    versions = LocalRegistry(repo).versions(name)
    if not versions:
        return None
    latest_version, latest_cid = versions[-1]
    latest = cache.manifest(repo, latest_cid)
    times = [cache.manifest(repo, cid).time for _, cid in versions]
    return PackageRow(
        name=name, version=latest_version, description=latest.description,
        category=latest.category, keywords=list(latest.keywords), downloads=None, trust=None,
        reproducible=latest.reproducible and _reproduced_by_someone(repo, cache, latest_cid),
        created=min(times), updated=max(times),
    )


def _relevance(row: PackageRow, terms: list[str]) -> int | None:
    """A plain substring score, or None when a term matches nowhere."""
    score = 0
    name = row.name.lower()
    rest = " ".join([row.description, row.category, *row.keywords]).lower()
    for term in terms:
        if term == name or name.endswith("/" + term):
            score += 6
        elif term in name:
            score += 3
        elif term in rest:
            score += 1
        else:
            return None
    return score


def list_packages(repo: Repo, cache: ReadCache, *, text: str, category: str | None, sort: str,
                  offset: int, limit: int) -> tuple[list[PackageRow], int, list[tuple[str, int]]]:
    """Packages of the index matching ``text`` (every word, as a substring), one page of them,
    the number matching, and every category with its package count."""
    rows = [row for name in repo.index.names() if (row := _row(repo, cache, name)) is not None]
    categories: dict[str, int] = {}
    for row in rows:
        if row.category:
            categories[row.category] = categories.get(row.category, 0) + 1
    terms = text.lower().split()
    scored = [(score, row) for row in rows
              if (category is None or row.category == category)
              and (score := _relevance(row, terms)) is not None]
    if sort == "updated":
        scored.sort(key=lambda item: (-item[1].updated, item[1].name))
    elif sort == "created":
        scored.sort(key=lambda item: (-item[1].created, item[1].name))
    else:  # relevance; downloads are not counted without the engine, so relevance too
        scored.sort(key=lambda item: (-item[0], item[1].name))
    page = [row for _, row in scored[offset:offset + limit]]
    return page, len(scored), sorted(categories.items())


# -- one package -------------------------------------------------------------------------------


def package_versions(repo: Repo, cache: ReadCache, name: str) -> list[tuple[str, CID, Manifest]]:
    """Every version of ``name``, oldest first; NotFoundError when there is none."""
    versions = LocalRegistry(repo).versions(name)
    if not versions:
        raise NotFoundError(f"no package named {name} on this node")
    return [(version, cid, cache.manifest(repo, cid)) for version, cid in versions]


def document_text(repo: Repo, doc: CID) -> str:
    """A package's source document, stored under ``doc`` (blocks verified as they are read)."""
    data = b"".join(exporter.read_file(repo.store.get, doc))
    return data.decode("utf-8", errors="replace")


def document_body(text: str) -> str:
    """The document's prose and code after the front matter (the front matter is shown as
    metadata); the whole text if it does not parse."""
    try:
        body: str = parse_document(text).body
    except DreError:
        return text
    return body


@dataclass(frozen=True)
class TimelineEntry:
    """One version in the Versions tab, with what changed since the one before it."""

    version: str
    manifest: str
    time: int
    description: str
    publisher: str
    reproducible: bool
    received: bool
    files: TreeDiff | None
    doc_diff: str
    previous_version: str | None


def timeline(repo: Repo, versions: list[tuple[str, CID, Manifest]],
             received: set[str]) -> list[TimelineEntry]:
    """The newest :data:`MAX_TIMELINE` versions, newest first, each diffed against its
    predecessor in version order (files by CID, the document line by line)."""
    shown = versions[-(MAX_TIMELINE + 1):]
    entries: list[TimelineEntry] = []
    previous: tuple[str, Manifest, dict[str, CID], str] | None = None
    for index, (version, cid, manifest) in enumerate(shown):
        paths = flatten_tree(repo.store.get, manifest.package)
        text = document_text(repo, manifest.doc)
        if previous is not None:
            old_version, _old, old_paths, old_text = previous
            files: TreeDiff | None = diff_trees(old_paths, paths)
            diff = doc_diff(old_text, text, f"{manifest.name}@{old_version}",
                            f"{manifest.name}@{version}")
        else:
            files, diff = None, ""
        # The oldest shown version only serves as the base of the next one's diff when older
        # versions were cut.
        if index > 0 or len(shown) == len(versions):
            entries.append(TimelineEntry(
                version=version, manifest=str(cid), time=manifest.time,
                description=manifest.description, publisher=manifest.publisher,
                reproducible=manifest.reproducible, received=str(cid) in received, files=files,
                doc_diff=diff, previous_version=previous[0] if previous else None,
            ))
        previous = (version, manifest, paths, text)
    entries.reverse()
    return entries


@dataclass(frozen=True)
class FileEntry:
    """One row of the Files tab."""

    path: str
    name: str
    depth: int
    kind: str
    size: int
    cid: str


def file_tree(repo: Repo, root: CID) -> list[FileEntry]:
    """The package directory, depth first, directories before what they hold."""
    out = []
    for path, info in exporter.walk(repo.store.get, root):
        if path == "":
            continue
        out.append(FileEntry(path=path, name=path.rsplit("/", 1)[-1], depth=path.count("/"),
                             kind=info.kind, size=info.size, cid=str(info.cid)))
    return out


# -- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttestationView:
    """One stored attestation of a version."""

    attester: str
    reproduced: bool
    regenerated: str
    time: int
    record: str
    #: Signed by a key other than the publisher's.
    independent: bool
    #: Signed by this node's own key.
    this_node: bool


@dataclass(frozen=True)
class Verification:
    """What the Verification tab shows: the checks ``dre verify`` makes, run read-only (nothing
    is signed or stored by looking at a page), and the attestations already stored."""

    publisher: str
    signature_valid: bool
    authorized: bool
    authorization_error: str
    intact: bool
    blocks_checked: int
    bad_blocks: list[str]
    missing_blocks: list[str]
    reproduced: bool
    regenerated: str | None
    regeneration_error: str
    claimed_reproducible: bool
    license: str
    license_valid: bool
    license_error: str
    attestations: list[AttestationView]
    independent_attesters: int
    trust: float
    #: (check, result in [0, 1], weight): the score is the weighted sum.
    breakdown: list[tuple[str, float, float]] = field(default_factory=list)


def verification(repo: Repo, cache: ReadCache, manifest_cid: CID,
                 node_peer_id: str) -> Verification:
    """Check one version as ``dre verify`` does (the same :meth:`LocalRegistry.verify`), without
    signing or storing anything, with the attestations already stored."""
    manifest = cache.manifest(repo, manifest_cid)  # raises if the signature is bad
    report = LocalRegistry(repo).verify(manifest.name, manifest.version, None,
                                        now=int(time.time()))
    attestations = []
    for attester, cid in sorted(repo.index.attestations(manifest_cid).items()):
        found = cache.attestation(repo, cid)
        if found is None or found[0].manifest != manifest_cid or found[1] != attester:
            continue
        record = found[0]
        attestations.append(AttestationView(
            attester=attester, reproduced=record.reproduced, regenerated=str(record.regenerated),
            time=record.time, record=str(cid), independent=attester != manifest.publisher,
            this_node=attester == node_peer_id,
        ))
    return Verification(
        publisher=manifest.publisher, signature_valid=report.signature_valid,
        authorized=report.authorized, authorization_error=report.authorization_error,
        intact=report.intact, blocks_checked=report.blocks_checked,
        bad_blocks=report.bad_blocks, missing_blocks=report.missing_blocks,
        reproduced=report.reproduced,
        regenerated=str(report.regenerated) if report.regenerated is not None else None,
        regeneration_error=report.regeneration_error,
        claimed_reproducible=manifest.reproducible, license=manifest.license,
        license_valid=report.license_valid, license_error=report.license_error,
        attestations=attestations, independent_attesters=len(report.independent_attesters),
        trust=report.trust,
        breakdown=[(check, float(getattr(report.breakdown, check)), weight)
                   for check, weight in TRUST_WEIGHTS.items()],
    )


# -- the audit log and the dashboard -----------------------------------------------------------


@dataclass(frozen=True)
class LogEvent:
    """A publish seen in the audit log."""

    subject: str
    record: str
    signer: str
    received: bool
    time: int


class LogTally:
    """Counts of the audit log, kept up to date incrementally (only new entries are read)."""

    RECENT = 10

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self.published_here = 0
        self.received = 0
        self.scope_changes = 0
        #: Manifest CIDs that arrived from peers.
        self.received_records: set[str] = set()
        self.recent: deque[LogEvent] = deque(maxlen=self.RECENT)

    def update(self, repo: Repo) -> None:
        """Read the entries appended since the last call."""
        with self._lock:
            for entry in LocalRegistry(repo).log_from(self._next):
                self._next = entry.seq + 1
                if entry.kind == "scope":
                    self.scope_changes += 1
                    continue
                received = entry.action == "received"
                if received:
                    self.received += 1
                    self.received_records.add(str(entry.record))
                else:
                    self.published_here += 1
                self.recent.append(LogEvent(entry.subject, str(entry.record), entry.signer,
                                            received, entry.time))


@dataclass(frozen=True)
class Dashboard:
    """The registry's numbers at one moment."""

    packages: int
    versions: int
    new_packages_24h: int
    new_versions_24h: int
    verified: int
    categories: list[tuple[str, int]]
    blocks: int
    physical_bytes: int
    logical_bytes: int
    dedup_saved_bytes: int
    pins: int
    published_here: int
    received_from_peers: int
    scope_changes: int
    recent: list[LogEvent]


def dashboard(repo: Repo, cache: ReadCache, tally: LogTally, *, now: int) -> Dashboard:
    """Counts over every version in the index, the store's counters and the audit log's."""
    since = now - DAY
    packages = versions = new_packages = new_versions = verified = 0
    categories: dict[str, int] = {}
    for name in repo.index.names():
        found = LocalRegistry(repo).versions(name)
        if not found:
            continue
        packages += 1
        manifests = [cache.manifest(repo, cid) for _, cid in found]
        versions += len(manifests)
        times = [m.time for m in manifests]
        new_versions += sum(1 for t in times if t >= since)
        new_packages += min(times) >= since
        latest_cid = found[-1][1]
        verified += manifests[-1].reproducible and _reproduced_by_someone(repo, cache, latest_cid)
        if manifests[-1].category:
            categories[manifests[-1].category] = categories.get(manifests[-1].category, 0) + 1
    stats = repo.store.stats()
    tally.update(repo)
    return Dashboard(
        packages=packages, versions=versions, new_packages_24h=new_packages,
        new_versions_24h=new_versions, verified=verified,
        categories=sorted(categories.items(), key=lambda item: (-item[1], item[0])),
        blocks=stats.blocks, physical_bytes=stats.physical_bytes,
        logical_bytes=stats.logical_bytes, dedup_saved_bytes=stats.dedup_saved_bytes,
        pins=stats.pins_direct + stats.pins_recursive, published_here=tally.published_here,
        received_from_peers=tally.received, scope_changes=tally.scope_changes,
        recent=list(reversed(tally.recent)),
    )

