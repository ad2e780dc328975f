"""The local registry: publish, verify, resolve and look up packages in one node home.

Every operation checks everything it can *before* it writes, so a refused publish or scope change
leaves the store and the index exactly as they were. What is written is signed and
content-addressed; the index (``storage/index.py``) only records which records are current.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from dre.protocol import exporter
from dre.protocol.auditlog import LogEntry, decode_entry, encode_entry
from dre.protocol.cid import CID, Block, verify_block
from dre.protocol.docformat import check_license
from dre.protocol.errors import (
    AuthorizationError,
    DreError,
    IntegrityError,
    NotFoundError,
    ValidationError,
)
from dre.protocol.generator import GeneratedTree, generate
from dre.protocol.keys import PublisherKey
from dre.protocol.links import links_of
from dre.protocol.packages import (
    BuiltTree,
    TrustBreakdown,
    build_file,
    build_tree,
    check_publisher,
    check_scope_update,
    scope_of,
    trust_score,
)
from dre.protocol.records import (
    ATTESTATION,
    MANIFEST,
    SCOPE,
    Attestation,
    Manifest,
    ScopeRecord,
    open_record,
    sign_record,
)
from dre.protocol.semver import parse_version
from dre.protocol.treediff import TreeDiff, diff_trees, flatten_tree

from .index import LogConflict
from .repo import Repo

#: Appends to the audit log retried when another process appended first.
_LOG_ATTEMPTS = 20

__all__ = ["LocalRegistry", "PublishResult", "VerifyReport"]


@dataclass(frozen=True)
class PublishResult:
    """What a publish did (or found already done, when ``already_published``)."""

    name: str
    version: str
    manifest: CID
    package: CID
    doc: CID
    reproducible: bool
    previous: CID | None
    files: int
    already_published: bool = False
    divergence: TreeDiff | None = None


@dataclass(frozen=True)
class VerifyReport:
    """Every check `dre verify` makes, with its evidence."""

    name: str
    version: str
    manifest: CID
    publisher: str
    signature_valid: bool
    signature_error: str
    authorized: bool
    authorization_error: str
    intact: bool
    blocks_checked: int
    bad_blocks: list[str]
    missing_blocks: list[str]
    reproduced: bool
    regenerated: CID | None
    regeneration_error: str
    divergence: TreeDiff | None
    license_valid: bool
    license_error: str
    independent_attesters: list[str]
    trust: float
    breakdown: TrustBreakdown
    attestation: CID | None = None
    recorded_reproducible: bool = False
    notes: list[str] = field(default_factory=list)


class LocalRegistry:
    """Registry operations over one opened node home."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.store = repo.store
        self.index = repo.index

    # -- reading records -----------------------------------------------------------------------

    def _record(self, cid: CID, kind: str) -> tuple[Manifest | ScopeRecord | Attestation, str]:
        opened = open_record(Block(cid, self.store.get(cid)))
        if opened.kind != kind:
            raise IntegrityError(f"{cid} is a {opened.kind} record, not a {kind} record")
        return opened.record, opened.signer

    def manifest(self, cid: CID) -> Manifest:
        """The verified manifest stored under ``cid``."""
        record, _ = self._record(cid, MANIFEST)
        assert isinstance(record, Manifest)
        return record

    def scope(self, scope: str) -> ScopeRecord | None:
        """The current verified scope record of ``scope``, if any."""
        cid = self.index.scope_record(scope)
        if cid is None:
            return None
        record, _ = self._record(cid, SCOPE)
        assert isinstance(record, ScopeRecord)
        return record

    def versions(self, name: str) -> list[tuple[str, CID]]:
        """Versions of ``name``, oldest first by semver precedence."""
        found = self.index.versions(name)
        return sorted(found.items(), key=lambda item: parse_version(item[0]))

    def resolve_version(self, name: str, version: str | None) -> tuple[str, CID]:
        """``name@version`` (the highest version when None) and its manifest CID."""
        versions = self.versions(name)
        if not versions:
            raise NotFoundError(f"no package named {name!r} in this registry")
        if version is None:
            return versions[-1]
        for found, cid in versions:
            if found == version:
                return found, cid
        known = ", ".join(v for v, _ in versions[-10:])
        raise NotFoundError(f"{name}@{version} is not published here (versions: {known})")

    # -- writing -------------------------------------------------------------------------------

    def _store_pinned(self, blocks: list[Block], root: CID, *, recursive: bool,
                      also_recursive: tuple[CID, ...] = ()) -> None:
        with self.store.import_session():
            self.store.put_many(blocks, verify=False)
            for tree in also_recursive:
                self.store.pin_add(tree, recursive=True, links_of=links_of)
            self.store.pin_add(root, recursive=recursive, links_of=links_of)

    def _log(self, kind: str, subject: str, record: CID, signer: str, action: str,
             now: int) -> None:
        # The CLI and a running node may both append (two processes, one home): the index
        # refuses an entry that does not follow the head, and we chain onto the new head.
        for _attempt in range(_LOG_ATTEMPTS):
            head = self.index.log_head()
            seq, previous = (0, None) if head is None else (head[0] + 1, head[1])
            entry = encode_entry(LogEntry(seq=seq, kind=kind,  # type: ignore[arg-type]
                                          subject=subject, record=record, signer=signer,
                                          action=action, time=now, previous=previous))
            self._store_pinned([entry], entry.cid, recursive=False)
            try:
                self.index.append_log(seq, entry.cid)
                return
            except LogConflict:
                self.store.pin_rm(entry.cid)  # an entry nobody links to: garbage
        raise DreError("the audit log is busy; try again")

    def log_from(self, start: int) -> Iterator[LogEntry]:
        """Audit log entries from sequence number ``start`` (each block verified)."""
        for _seq, cid in self.index.log_entries(start=start):
            yield decode_entry(Block(cid, self.store.get(cid)))

    def log(self) -> Iterator[LogEntry]:
        """The audit log, oldest first; each entry's hash link to its predecessor is checked."""
        previous: CID | None = None
        for _seq, cid in self.index.log_entries():
            entry = decode_entry(Block(cid, self.store.get(cid)))
            if entry.previous != previous:
                raise IntegrityError(
                    f"audit log entry {entry.seq} does not link to its predecessor"
                )
            previous = cid
            yield entry

    # -- publish -------------------------------------------------------------------------------

    def prepare(self, doc: bytes) -> tuple[GeneratedTree, BuiltTree, BuiltTree]:
        """Generate a document's package and import both in memory (nothing is stored)."""
        generated = generate(doc)
        return generated, build_tree(generated.files), build_file(doc)

    def publish(
        self,
        doc: bytes,
        key: PublisherKey,
        *,
        now: int,
        directory: BuiltTree | None = None,
        allow_divergent: bool = False,
    ) -> PublishResult:
        """Generate, check, sign, store and index one package version.

        With ``directory`` (an imported package directory), the directory is what gets published
        and it must be exactly what the document regenerates, unless ``allow_divergent`` (then
        the manifest says ``reproducible: false``). Refusals raise before anything is written.
        """
        generated, package, doc_tree = self.prepare(doc)
        meta = generated.metadata
        name, version = meta.name, meta.version
        signer = key.peer_id

        scope_name = scope_of(name)
        check_publisher(
            name, signer, scope=self.scope(scope_name) if scope_name else None,
            first_publisher=None if scope_name else self.index.owner(name), now=now,
        )

        divergence: TreeDiff | None = None
        reproducible = True
        if directory is not None and directory.root != package.root:
            divergence = diff_trees(package.paths, directory.paths)
            if not allow_divergent:
                raise ValidationError(
                    f"the directory is not what the document regenerates ({_describe(divergence)});"
                    " publish the document, or pass --allow-divergent to record it as"
                    " not reproducible"
                )
            reproducible = False
            package = directory

        existing = self.index.manifest_cid(name, version)
        if existing is not None:
            current = self.manifest(existing)
            if current.package == package.root and current.doc == doc_tree.root:
                return PublishResult(name, version, existing, current.package, current.doc,
                                     current.reproducible, current.previous, len(package.paths),
                                     already_published=True)
            raise ValidationError(
                f"{name}@{version} is already published with other content ({existing}); "
                "versions are immutable: publish a new version"
            )

        older = [(v, c) for v, c in self.versions(name)
                 if parse_version(v) < parse_version(version)]
        previous = older[-1][1] if older else None
        manifest = Manifest(
            name=name, version=version, description=meta.description, license=meta.license,
            keywords=list(meta.keywords), category=meta.category,
            dependencies=dict(meta.dependencies), package=package.root, doc=doc_tree.root,
            generator=generated.generator_version, publisher=signer, previous=previous,
            time=now, reproducible=reproducible,
        )
        envelope = sign_record(MANIFEST, manifest, key)

        # The manifest is pinned on its own: a recursive pin would walk the `previous` chain,
        # i.e. every older version, on each publish. Each version pins its own trees.
        self._store_pinned([*doc_tree.blocks, *package.blocks, envelope], envelope.cid,
                           recursive=False, also_recursive=(package.root, doc_tree.root))
        if not self.index.add_version(name, version, envelope.cid,
                                      owner=None if scope_name else signer):
            raise DreError(f"{name}@{version} was published concurrently; run publish again")
        self._log("publish", f"{name}@{version}", envelope.cid, signer,
                  "publish" if reproducible else "publish (not reproducible)", now)
        return PublishResult(name, version, envelope.cid, package.root, doc_tree.root,
                             reproducible, previous, len(package.paths), divergence=divergence)

    # -- scopes --------------------------------------------------------------------------------

    def update_scope(self, record: ScopeRecord, key: PublisherKey, *, now: int, action: str) -> CID:
        """Sign and install a new version of a scope record (creation, grant or revocation)."""
        check_scope_update(self.scope(record.scope), record, key.peer_id)
        envelope = sign_record(SCOPE, record, key)
        self._install_scope(envelope, record, key.peer_id, now=now, action=action)
        return envelope.cid

    def _install_scope(self, envelope: Block, record: ScopeRecord, signer: str, *, now: int,
                       action: str) -> None:
        """Store and index a scope record already checked by `check_scope_update`."""
        current_cid = self.index.scope_record(record.scope)
        self._store_pinned([envelope], envelope.cid, recursive=False)
        self.index.set_scope_record(record.scope, envelope.cid, current_cid)
        self._log("scope", record.scope, envelope.cid, signer, action, now)

    # -- records from peers --------------------------------------------------------------------

    def authorize_remote(self, block: Block) -> None:
        """Raise unless a record received from a peer may be accepted here (see
        :meth:`check_remote`)."""
        opened = open_record(block)
        self.check_remote(opened.record, opened.signer, block.cid)

    def check_remote(self, record: Manifest | ScopeRecord | Attestation, signer: str,
                     cid: CID | None = None) -> None:
        """Raise AuthorizationError unless ``record`` (already verified) may be accepted here.

        The same rules as for local operations (``specs/registry.md`` §2, §3), so a record that
        would be refused here is also not forwarded (gossip validators call this).
        """
        if isinstance(record, Manifest):
            scope_name = scope_of(record.name)
            check_publisher(
                record.name, signer, scope=self.scope(scope_name) if scope_name else None,
                first_publisher=None if scope_name else self.index.owner(record.name),
                now=record.time,
            )
            existing = self.index.manifest_cid(record.name, record.version)
            if existing is not None and (existing != cid if cid is not None
                                         else self.manifest(existing) != record):
                raise AuthorizationError(
                    f"{record.name}@{record.version} is already {existing} here; versions are "
                    "immutable"
                )
        elif isinstance(record, ScopeRecord):
            current = self.scope(record.scope)
            # Re-announcing the current record is fine; replacing it follows the rules.
            if current != record:
                check_scope_update(current, record, signer)

    def accept_record(self, block: Block, *, now: int) -> str | None:
        """Store and index a signed record received from a peer; its kind, or None if it was
        already known.

        Raises IntegrityError for a bad record and AuthorizationError for one these rules refuse;
        nothing is written then.
        """
        self.authorize_remote(block)
        opened = open_record(block)
        record, signer = opened.record, opened.signer
        if isinstance(record, Manifest):
            if self.index.manifest_cid(record.name, record.version) == block.cid:
                return None
            self._store_pinned([block], block.cid, recursive=False)
            scoped = scope_of(record.name) is not None
            if not self.index.add_version(record.name, record.version, block.cid,
                                          owner=None if scoped else signer):
                return None
            self._log("publish", f"{record.name}@{record.version}", block.cid, signer,
                      "received", now)
            return MANIFEST
        if isinstance(record, ScopeRecord):
            if self.index.scope_record(record.scope) == block.cid:
                return None
            self._install_scope(block, record, signer, now=now, action="received")
            return SCOPE
        assert isinstance(record, Attestation)
        if self.index.attestations(record.manifest).get(signer) == block.cid:
            return None
        self._store_pinned([block], block.cid, recursive=False)
        self.index.add_attestation(record.manifest, signer, block.cid)
        return ATTESTATION

    def record_cids(self) -> list[CID]:
        """Every signed record this node holds (manifests, current scopes, attestations): the
        catalog that anti-entropy sync exchanges."""
        cids: list[CID] = []
        for name in self.index.names():
            for _version, manifest_cid in self.index.versions(name).items():
                cids.append(manifest_cid)
                cids.extend(self.index.attestations(manifest_cid).values())
        cids.extend(c for scope in self.index.scopes()
                    if (c := self.index.scope_record(scope)) is not None)
        return cids

    def regenerate_into_store(self, manifest: Manifest) -> bool:
        """Regenerate a package from its document (which must be stored) and, if the tree is
        exactly the manifest's package, store and pin it: no need to download package blocks.
        Returns whether it reproduced."""
        doc = b"".join(exporter.read_file(self.store.get, manifest.doc))
        rebuilt = build_tree(generate(doc, manifest.generator).files)
        if rebuilt.root != manifest.package:
            return False
        self._store_pinned(rebuilt.blocks, rebuilt.root, recursive=True)
        return True

    def create_scope(self, scope: str, key: PublisherKey, *, now: int) -> CID:
        """Create ``scope`` owned by ``key``."""
        if self.index.scope_record(scope) is not None:
            raise ValidationError(f"scope {scope} already exists")
        record = ScopeRecord(scope=scope, owners=[key.peer_id], version=1, expires=None)
        return self.update_scope(record, key, now=now, action="create")

    def grant(self, scope: str, key: PublisherKey, owner: str, *, now: int) -> CID:
        """Add ``owner`` (a peer ID) to the owners of ``scope``."""
        current = self._existing_scope(scope)
        if owner in current.owners:
            raise ValidationError(f"{owner} is already an owner of {scope}")
        record = ScopeRecord(scope=scope, owners=[*current.owners, owner],
                             version=current.version + 1, expires=current.expires)
        return self.update_scope(record, key, now=now, action=f"grant {owner}")

    def revoke(self, scope: str, key: PublisherKey, owner: str, *, now: int) -> CID:
        """Remove ``owner`` from the owners of ``scope`` (never the last one)."""
        current = self._existing_scope(scope)
        if owner not in current.owners:
            raise ValidationError(f"{owner} is not an owner of {scope}")
        if len(current.owners) == 1:
            raise ValidationError(f"cannot revoke the last owner of {scope}")
        owners = [o for o in current.owners if o != owner]
        record = ScopeRecord(scope=scope, owners=owners, version=current.version + 1,
                             expires=current.expires)
        return self.update_scope(record, key, now=now, action=f"revoke {owner}")

    def _existing_scope(self, scope: str) -> ScopeRecord:
        current = self.scope(scope)
        if current is None:
            raise NotFoundError(f"scope {scope} does not exist here")
        return current

    # -- verify --------------------------------------------------------------------------------

    def _check_blocks(self, roots: list[CID]) -> tuple[int, list[str], list[str]]:
        """Re-hash every block under ``roots``; (checked, bad, missing)."""
        seen: set[bytes] = set()
        stack = list(roots)
        checked, bad, missing = 0, [], []
        while stack:
            cid = stack.pop()
            key = bytes(cid)
            if key in seen:
                continue
            seen.add(key)
            try:
                data = self.store.get(cid)
                verify_block(cid, data)
                stack.extend(links_of(cid, data))
            except NotFoundError:
                missing.append(str(cid))
            except IntegrityError as exc:
                bad.append(f"{cid}: {exc}")
            checked += 1
        return checked, bad, missing

    def verify(self, name: str, version: str | None, key: PublisherKey | None, *,
               now: int) -> VerifyReport:
        """Check a published version completely and record an attestation of the result signed
        with ``key``; with ``key=None`` the same checks write nothing (a read-only report)."""
        version, manifest_cid = self.resolve_version(name, version)
        notes: list[str] = []
        try:
            manifest = self.manifest(manifest_cid)
        except (IntegrityError, NotFoundError) as exc:
            # Without a verifiable manifest nothing else can be checked: report, do not attest.
            zero, breakdown = trust_score(signature=False, authorized=False, intact=False,
                                          reproduced=False, license_valid=False,
                                          independent_attesters=0)
            return VerifyReport(
                name, version, manifest_cid, "", False, str(exc), False, "not checked", False,
                0, [f"{manifest_cid}: {exc}"], [], False, None, "not checked", None, False,
                "not checked", [], zero, breakdown,
            )

        authorized, authorization_error = True, ""
        scope_name = scope_of(name)
        try:
            check_publisher(
                name, manifest.publisher,
                scope=self.scope(scope_name) if scope_name else None,
                first_publisher=None if scope_name else self.index.owner(name),
                now=manifest.time,
            )
        except AuthorizationError as exc:
            authorized, authorization_error = False, str(exc)

        checked, bad, missing = self._check_blocks([manifest.package, manifest.doc])
        intact = not bad and not missing

        regenerated: CID | None = None
        divergence: TreeDiff | None = None
        regeneration_error = ""
        try:
            doc = b"".join(exporter.read_file(self.store.get, manifest.doc))
            generated = generate(doc, manifest.generator)
            rebuilt = build_tree(generated.files)
            regenerated = rebuilt.root
            if regenerated != manifest.package:
                try:
                    divergence = diff_trees(rebuilt.paths,
                                            flatten_tree(self.store.get, manifest.package))
                except DreError as exc:
                    notes.append(f"could not list the published tree: {exc}")
        except DreError as exc:
            regeneration_error = str(exc)
        reproduced = regenerated is not None and regenerated == manifest.package
        if manifest.reproducible and not reproduced and not regeneration_error:
            notes.append("the manifest claims reproducible, but the document regenerates another"
                         " tree")

        license_valid, license_error = True, ""
        try:
            check_license(manifest.license)
        except ValidationError as exc:
            license_valid, license_error = False, str(exc)

        attesters = self._independent_attesters(manifest_cid, manifest.publisher)
        score, breakdown = trust_score(
            signature=True, authorized=authorized, intact=intact, reproduced=reproduced,
            license_valid=license_valid, independent_attesters=len(attesters),
        )
        attestation_cid: CID | None = None
        if regenerated is not None and key is not None:
            attestation = Attestation(manifest=manifest_cid, reproduced=reproduced,
                                      regenerated=regenerated, attester=key.peer_id, time=now)
            envelope = sign_record(ATTESTATION, attestation, key)
            self._store_pinned([envelope], envelope.cid, recursive=False)
            self.index.add_attestation(manifest_cid, key.peer_id, envelope.cid)
            attestation_cid = envelope.cid
        return VerifyReport(
            name, version, manifest_cid, manifest.publisher, True, "", authorized,
            authorization_error, intact, checked, bad, missing, reproduced, regenerated,
            regeneration_error, divergence, license_valid, license_error, attesters, score,
            breakdown, attestation_cid, manifest.reproducible, notes,
        )

    def _independent_attesters(self, manifest_cid: CID, publisher: str) -> list[str]:
        """Keys other than the publisher with a valid attestation that they reproduced it."""
        attesters = []
        for attester, cid in sorted(self.index.attestations(manifest_cid).items()):
            if attester == publisher:
                continue
            try:
                record, _ = self._record(cid, ATTESTATION)
            except (IntegrityError, NotFoundError):
                continue
            assert isinstance(record, Attestation)
            if record.reproduced and record.manifest == manifest_cid:
                attesters.append(attester)
        return attesters


def _describe(diff: TreeDiff) -> str:
    parts = []
    for label, paths in (("added", diff.added), ("removed", diff.removed),
                         ("changed", diff.changed)):
        if paths:
            shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts) or "different tree"

