"""The Package Management API: publish, metadata, versions, download, documentation, regenerate,
verify, history, diff; plus scopes, peers and the audit trail.

Every operation is the library call the CLI makes (:class:`LocalRegistry` publish, verify,
resolve_version, scope changes…); this module only turns HTTP into those calls and their results
into JSON. An API publish is signed by the node's own key (``<home>/keys/node.key``): a token
lets a caller *ask* the node to publish, and the registry still refuses unless that key owns (or
was granted) the package's scope.

Writes to the registry are serialized in the node (one at a time, in a worker thread): the index
refuses a lost update anyway (versions are written with ``overwrite=False``, scopes with a
compare-and-swap, the audit log with an append-only check), but serializing keeps concurrent
API publishes from exhausting the log's retries and gives each a clean result.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import tarfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import trio
from dre.protocol import exporter
from dre.protocol.cid import CID
from dre.protocol.docformat import MAX_DOCUMENT_BYTES, check_name, check_path
from dre.protocol.errors import DreError, NotFoundError, ValidationError
from dre.protocol.generator import generate
from dre.protocol.keys import PublisherKey, public_key_from_peer_id
from dre.protocol.packages import build_tree, manifest_summary, scope_of
from dre.protocol.records import Manifest
from dre.protocol.semver import parse_version
from dre.protocol.treediff import ChangelogEntry, TreeDiff, changelog, diff_trees, doc_diff
from dre.protocol.treediff import flatten_tree as flatten
from dre.storage.car_io import export_car
from dre.storage.importing import MAX_PACKAGE_DIR_BYTES, SOURCE_DIR, SOURCE_DOC
from dre.storage.registry import LocalRegistry, PublishResult, VerifyReport
from dre.storage.tokens import AuditEntry
from starlette.requests import Request
from starlette.responses import Response

from .api_auth import AccessControl
from .api_common import (
    API_PREFIX,
    ApiRoute,
    ConflictError,
    JSONResponse,
    QueryParam,
    decode_body,
    int_param,
    read_body,
    run_heavy,
)
from .identity import node_identity
from .peers import load_peers

if TYPE_CHECKING:
    from .http_api import NodeState

__all__ = [
    "CAR_TYPE",
    "MAX_PUBLISH_BODY",
    "TARBALL_TYPE",
    "TAR_PREFIX",
    "PublishRequest",
    "package_routes",
    "read_tarball",
    "write_tarball",
]

#: Publish body: a base64 document (≤ 1 MiB) and a base64 tar.gz of the package tree.
MAX_PUBLISH_BODY = 24 << 20
#: Entries in an uploaded tarball (the generator makes at most 1000 files).
MAX_TAR_MEMBERS = 20_000
#: Every path in a package tarball starts with this folder (as npm's do): unpacking one never
#: spills files into the current directory.
TAR_PREFIX = "package"
TARBALL_TYPE = "application/gzip"
CAR_TYPE = "application/vnd.ipld.car"
MARKDOWN_TYPE = "text/markdown; charset=utf-8"
_MAX_PAGE = 1000

_Base64 = Annotated[str, msgspec.Meta(max_length=MAX_PUBLISH_BODY)]
_Short = Annotated[str, msgspec.Meta(max_length=256)]
_PeerId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_ScopeName = Annotated[str, msgspec.Meta(min_length=2, max_length=215, pattern=r"^@[^/]+$")]


# -- shapes ----------------------------------------------------------------------------------------


class PublishRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /api/v1/packages``."""

    #: The source document, base64 of its exact bytes (its CID is taken from them).
    documentation: _Base64
    #: Optional: the package tree as base64 of a tar.gz whose entries are under ``package/``
    #: (what ``/download`` gives). It must be exactly what the document generates, unless
    #: ``allow_divergent`` (then the manifest says ``reproducible: false``).
    package: _Base64 | None = None
    #: Optional checks: the document's name and version must be these.
    name: _Short | None = None
    version: _Short | None = None
    allow_divergent: bool = False


class DiffView(msgspec.Struct, frozen=True):
    """Paths added, removed and changed between two trees."""

    added: list[str]
    removed: list[str]
    changed: list[str]


class PublishResponse(msgspec.Struct, frozen=True):
    """What a publish did (201), or found already done (200, ``already_published``)."""

    name: str
    version: str
    manifest: str
    package: str
    doc: str
    previous: str | None
    reproducible: bool
    files: int
    already_published: bool
    publisher: str
    divergence: DiffView | None


class ManifestView(msgspec.Struct, frozen=True):
    """A verified manifest, CIDs as strings, with its own CID."""

    manifest: str
    name: str
    version: str
    description: str
    license: str
    keywords: list[str]
    category: str
    dependencies: dict[str, str]
    package: str
    doc: str
    generator: str
    publisher: str
    previous: str | None
    time: int
    reproducible: bool


class VersionRef(msgspec.Struct, frozen=True):
    """A version and its manifest CID."""

    version: str
    manifest: str


class PackageInfo(msgspec.Struct, frozen=True):
    """``GET /api/v1/packages/{name}``."""

    name: str
    versions: list[VersionRef]
    latest: ManifestView


class FileEntry(msgspec.Struct, frozen=True):
    """A file of a package tree."""

    path: str
    cid: str


class VersionInfo(msgspec.Struct, frozen=True):
    """``GET /api/v1/packages/{name}/{version}``."""

    name: str
    version: str
    manifest: ManifestView
    files: list[FileEntry]
    #: Keys with an attestation of this manifest here (the publisher's own included).
    attesters: list[str]


class HistoryEntry(msgspec.Struct, frozen=True):
    """One version in a package's history."""

    version: str
    manifest: str
    time: int
    reproducible: bool
    description: str


class History(msgspec.Struct, frozen=True):
    """``GET /api/v1/packages/{name}/history``: versions oldest first, and the changelog."""

    name: str
    versions: list[HistoryEntry]
    changelog: str


class VersionDiff(msgspec.Struct, frozen=True):
    """``GET /api/v1/packages/{name}/diff?from=&to=``."""

    name: str
    old: str
    new: str
    files: DiffView
    doc_diff: str


class RegenerateResponse(msgspec.Struct, frozen=True):
    """``POST …/regenerate``: the document regenerated, compared with the published tree."""

    name: str
    version: str
    manifest: str
    published: str
    regenerated: str
    reproduced: bool
    generator: str
    files: list[FileEntry]
    #: Against the published tree; None when it reproduced or the tree is not stored here.
    divergence: DiffView | None


class CheckResult(msgspec.Struct, frozen=True):
    """One check of a verification: passed or not, and why not."""

    ok: bool
    error: str


class IntegrityView(msgspec.Struct, frozen=True):
    """Every block of the package and the document re-hashed."""

    intact: bool
    blocks_checked: int
    bad: list[str]
    missing: list[str]


class RegenerationView(msgspec.Struct, frozen=True):
    """Whether the document regenerates the published tree."""

    reproduced: bool
    regenerated: str | None
    manifest_claims_reproducible: bool
    error: str
    divergence: DiffView | None


class TrustView(msgspec.Struct, frozen=True):
    """The trust score and each check's share (``specs/registry.md``)."""

    score: float
    breakdown: dict[str, float]
    independent_attesters: list[str]


class VerifyResponse(msgspec.Struct, frozen=True):
    """``GET …/verify``: every check `dre verify` makes, and the trust score."""

    name: str
    version: str
    manifest: str
    publisher: str
    verified: bool
    signature: CheckResult
    authorization: CheckResult
    integrity: IntegrityView
    regeneration: RegenerationView
    license: CheckResult
    trust: TrustView
    #: The attestation this node signed of what it checked (None if it could not regenerate).
    attestation: str | None
    notes: list[str]


class ScopeView(msgspec.Struct, frozen=True):
    """A scope's current record."""

    scope: str
    record: str
    version: int
    owners: list[str]
    expires: int | None


class ScopeCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /api/v1/scopes``: a scope owned by this node's key."""

    scope: _ScopeName


class OwnerChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /api/v1/scopes/{scope}/owners``: grant a peer ID."""

    owner: _PeerId


class PeersView(msgspec.Struct, frozen=True):
    """``GET /api/v1/peers``."""

    p2p: bool
    peer_id: str
    connected: list[str]
    #: Peers this node dials at start (``dre registry federate`` remembers them).
    remembered: list[str]


class AuditPage(msgspec.Struct, frozen=True):
    """``GET /api/v1/audit``: entries oldest first; ``next`` is the ``after`` of the next page."""

    entries: list[AuditEntry]
    next: int | None


# -- conversions -----------------------------------------------------------------------------------


def _diff_view(diff: TreeDiff | None) -> DiffView | None:
    if diff is None:
        return None
    return DiffView(list(diff.added), list(diff.removed), list(diff.changed))


def manifest_view(cid: CID, manifest: Manifest) -> ManifestView:
    """A manifest as JSON-ready fields."""
    return msgspec.convert({"manifest": str(cid), **manifest_summary(manifest)}, ManifestView)


def _verified(report: VerifyReport) -> bool:
    # The same rule as `dre verify`: a manifest that claims reproducible must reproduce.
    claims_ok = report.reproduced or not report.recorded_reproducible
    return report.signature_valid and report.authorized and report.intact and claims_ok


def verify_view(report: VerifyReport) -> VerifyResponse:
    """A verification report as JSON-ready fields."""
    return VerifyResponse(
        name=report.name, version=report.version, manifest=str(report.manifest),
        publisher=report.publisher, verified=_verified(report),
        signature=CheckResult(report.signature_valid, report.signature_error),
        authorization=CheckResult(report.authorized, report.authorization_error),
        integrity=IntegrityView(report.intact, report.blocks_checked, list(report.bad_blocks),
                                list(report.missing_blocks)),
        regeneration=RegenerationView(
            report.reproduced, str(report.regenerated) if report.regenerated else None,
            report.recorded_reproducible, report.regeneration_error,
            _diff_view(report.divergence)),
        license=CheckResult(report.license_valid, report.license_error),
        trust=TrustView(report.trust,
                        {f: float(getattr(report.breakdown, f))
                         for f in report.breakdown.__struct_fields__},
                        list(report.independent_attesters)),
        attestation=str(report.attestation) if report.attestation else None,
        notes=list(report.notes),
    )


def _publish_view(result: PublishResult, publisher: str) -> PublishResponse:
    return PublishResponse(
        name=result.name, version=result.version, manifest=str(result.manifest),
        package=str(result.package), doc=str(result.doc),
        previous=str(result.previous) if result.previous else None,
        reproducible=result.reproducible, files=result.files,
        already_published=result.already_published, publisher=publisher,
        divergence=_diff_view(result.divergence))


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValidationError(f"{what} is not base64") from None


# -- tarballs --------------------------------------------------------------------------------------


def _tar_info(name: str, *, size: int = 0, directory: bool = False, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tarball(get: Callable[[CID], bytes], manifest: Manifest) -> bytes:
    """The package tree of ``manifest`` as a deterministic tar.gz: entries under ``package/``,
    the source document at ``package/.dre/source.md`` (as ``dre generate -o`` lays it out),
    times set to the manifest's."""
    buffer = io.BytesIO()
    mtime = manifest.time
    with (gzip.GzipFile(fileobj=buffer, mode="wb", mtime=mtime) as compressed,
          tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar):
        for path, info in exporter.walk(get, manifest.package):
            name = f"{TAR_PREFIX}/{path}" if path else TAR_PREFIX
            if info.kind == "directory":
                tar.addfile(_tar_info(name, directory=True, mtime=mtime))
            elif info.kind == "file":
                data = b"".join(exporter.read_file(get, info.cid))
                tar.addfile(_tar_info(name, size=len(data), mtime=mtime), io.BytesIO(data))
            else:
                raise ValidationError(f"{path}: a {info.kind} cannot go into a package tarball")
        doc = b"".join(exporter.read_file(get, manifest.doc))
        tar.addfile(_tar_info(f"{TAR_PREFIX}/{SOURCE_DIR}", directory=True, mtime=mtime))
        tar.addfile(_tar_info(f"{TAR_PREFIX}/{SOURCE_DIR}/{SOURCE_DOC}", size=len(doc),
                              mtime=mtime), io.BytesIO(doc))
    return buffer.getvalue()


def read_tarball(data: bytes) -> tuple[dict[str, bytes], list[str]]:
    """The files and empty directories of an uploaded package tar.gz (entries under
    ``package/``; ``package/.dre/`` is skipped, like ``dre publish DIR`` skips ``.dre/``).

    Only regular files and directories; every path is checked like a generated one; at most
    :data:`MAX_TAR_MEMBERS` entries and :data:`MAX_PACKAGE_DIR_BYTES` bytes of content.
    """
    files: dict[str, bytes] = {}
    directories: set[str] = set()
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_TAR_MEMBERS:
                    raise ValidationError(f"package tarball has more than {MAX_TAR_MEMBERS} "
                                          "entries")
                total += member.size
                if total > MAX_PACKAGE_DIR_BYTES:
                    raise ValidationError(f"package tarball holds more than "
                                          f"{MAX_PACKAGE_DIR_BYTES} bytes")
                name = member.name.rstrip("/")
                if name == TAR_PREFIX and member.isdir():
                    continue
                if not name.startswith(f"{TAR_PREFIX}/"):
                    raise ValidationError(f"package tarball entry {name[:200]!r} is not under "
                                          f"{TAR_PREFIX}/")
                relpath = name[len(TAR_PREFIX) + 1:]
                check_path(relpath)
                if relpath.split("/", 1)[0] == SOURCE_DIR:
                    continue
                if member.isdir():
                    directories.add(relpath)
                elif member.isreg():
                    if relpath in files:
                        raise ValidationError(f"package tarball has {relpath!r} twice")
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files[relpath] = extracted.read(member.size)
                else:
                    raise ValidationError(f"package tarball entry {relpath!r} is not a regular "
                                          "file or a directory")
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise ValidationError(f"package is not a readable tar.gz: {exc}") from None
    parents = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    return files, sorted(d for d in directories if d not in parents)


# -- routes ----------------------------------------------------------------------------------------


def _now() -> int:
    return int(time.time())


def _name(request: Request) -> str:
    name: str = request.path_params["name"]
    check_name(name)
    return name


def _version(request: Request) -> str:
    version: str = request.path_params["version"]
    parse_version(version)
    return version


class PackageApi:
    """Handlers over one node's state. ``write_lock`` serializes registry writes."""

    def __init__(self, state: NodeState, access: AccessControl) -> None:
        self.state = state
        self.access = access
        self.write_lock = trio.Lock()

    @property
    def registry(self) -> LocalRegistry:
        """A registry over the node's open home (cheap: no I/O)."""
        return LocalRegistry(self.state.repo)

    def key(self) -> PublisherKey:
        """The node's signing key (loaded from the home on first use)."""
        if self.state.key is None:
            self.state.key = node_identity(self.state.repo.home)
        key: PublisherKey = self.state.key
        return key

    async def _write(self, function: Callable[[], Any]) -> Any:
        # One registry write at a time, off the event loop.
        async with self.write_lock:
            return await run_heavy(function)

    # -- packages ----------------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        body = decode_body(await read_body(request, MAX_PUBLISH_BODY), PublishRequest)
        doc = _b64(body.documentation, "documentation")
        if len(doc) > MAX_DOCUMENT_BYTES:
            raise ValidationError(f"documentation is larger than {MAX_DOCUMENT_BYTES} bytes")
        package = _b64(body.package, "package") if body.package is not None else None
        registry = self.registry
        # Generated first, off the loop: a bad document is a 400 before any token check on
        # its scope, and the scope to check comes from the document itself.
        generated, _tree, _doc_tree = await run_heavy(lambda: registry.prepare(doc))
        meta = generated.metadata
        request.state.action = f"publish {meta.name}@{meta.version}"
        for given, actual, what in ((body.name, meta.name, "name"),
                                    (body.version, meta.version, "version")):
            if given is not None and given != actual:
                raise ValidationError(f"{what} {given!r} differs from the document's {actual!r}")
        self.access.require(request.state.token, "publish", scope_of(meta.name),
                            f"publish {meta.name}")
        directory = None
        if package is not None:
            files, empty = await run_heavy(lambda: read_tarball(package))
            directory = await run_heavy(lambda: build_tree(files, empty_directories=empty))
        key = self.key()

        def do_publish() -> PublishResult:
            try:
                return registry.publish(doc, key, now=_now(), directory=directory,
                                        allow_divergent=body.allow_divergent)
            except ValidationError as exc:
                # The document was already checked above: what is left is a conflict with
                # what is stored (version exists with other content) or a divergent tree.
                raise ConflictError(str(exc)) from None

        try:
            result: PublishResult = await self._write(do_publish)
        except DreError as exc:
            if type(exc) is DreError and "concurrently" in str(exc):
                raise ConflictError(str(exc)) from None
            raise
        request.state.record = str(result.manifest)
        status = 200 if result.already_published else 201
        return JSONResponse(_publish_view(result, key.peer_id), status_code=status, headers={
            "Location": f"{API_PREFIX}/packages/{result.name}/{result.version}"})

    async def package(self, request: Request) -> Response:
        name = _name(request)
        registry = self.registry
        versions = registry.versions(name)
        if not versions:
            raise NotFoundError(f"no package named {name!r} on this node")
        _, latest = versions[-1]
        return JSONResponse(PackageInfo(
            name=name, versions=[VersionRef(v, str(c)) for v, c in versions],
            latest=manifest_view(latest, registry.manifest(latest))))

    def _resolve(self, request: Request) -> tuple[str, str, CID, Manifest]:
        name, version = _name(request), _version(request)
        registry = self.registry
        version, cid = registry.resolve_version(name, version)
        return name, version, cid, registry.manifest(cid)

    async def version(self, request: Request) -> Response:
        name, version, cid, manifest = self._resolve(request)
        store = self.state.repo.store
        paths = await run_heavy(lambda: flatten(store.get, manifest.package))
        attesters = sorted(self.state.repo.index.attestations(cid))
        return JSONResponse(VersionInfo(
            name=name, version=version, manifest=manifest_view(cid, manifest),
            files=[FileEntry(p, str(c)) for p, c in sorted(paths.items())], attesters=attesters))

    async def download(self, request: Request) -> Response:
        name, version, _cid, manifest = self._resolve(request)
        kind = request.query_params.get("format", "tar.gz")
        store = self.state.repo.store
        stem = name.replace("@", "").replace("/", "-") + f"-{version}"
        if kind == "tar.gz":
            data = await run_heavy(lambda: write_tarball(store.get, manifest))
            media, filename = TARBALL_TYPE, f"{stem}.tgz"
        elif kind == "car":
            def car() -> bytes:
                out = io.BytesIO()
                export_car(store, manifest.package, out)
                return out.getvalue()

            data = await run_heavy(car)
            media, filename = CAR_TYPE, f"{stem}.car"
        else:
            raise ValidationError(f"format must be tar.gz or car, not {kind[:40]!r}")
        if self.state.search is not None:
            # Download counts feed trending and the dashboard (the search engine's API).
            self.state.search.record_download(name, version)
        return Response(data, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "ETag": f'"{manifest.package}.{kind}"',
            "X-Content-Type-Options": "nosniff",
        })

    async def documentation(self, request: Request) -> Response:
        *_ignored, manifest = self._resolve(request)
        store = self.state.repo.store
        doc = await run_heavy(lambda: b"".join(exporter.read_file(store.get, manifest.doc)))
        return Response(doc, media_type=MARKDOWN_TYPE, headers={
            "ETag": f'"{manifest.doc}"', "X-Content-Type-Options": "nosniff",
            # A document is untrusted: never let a browser run it as a page.
            "Content-Security-Policy": "default-src 'none'; sandbox",
        })

    async def regenerate(self, request: Request) -> Response:
        name, version, cid, manifest = self._resolve(request)
        store = self.state.repo.store

        def work() -> RegenerateResponse:
            doc = b"".join(exporter.read_file(store.get, manifest.doc))
            # The manifest's generator version, exactly as `dre verify` regenerates.
            rebuilt = build_tree(generate(doc, manifest.generator).files)
            divergence = None
            if rebuilt.root != manifest.package:
                try:
                    divergence = diff_trees(rebuilt.paths, flatten(store.get, manifest.package))
                except NotFoundError:
                    divergence = None
            return RegenerateResponse(
                name=name, version=version, manifest=str(cid), published=str(manifest.package),
                regenerated=str(rebuilt.root), reproduced=rebuilt.root == manifest.package,
                generator=manifest.generator,
                files=[FileEntry(p, str(c)) for p, c in sorted(rebuilt.paths.items())],
                divergence=_diff_view(divergence))

        return JSONResponse(await run_heavy(work))

    async def verify(self, request: Request) -> Response:
        name, version = _name(request), _version(request)
        registry = self.registry
        # A GET changes nothing: the checks run, no attestation is signed (POST does that).
        report: VerifyReport = await run_heavy(
            lambda: registry.verify(name, version, None, now=_now()))
        return JSONResponse(verify_view(report))

    async def attest(self, request: Request) -> Response:
        name, version = _name(request), _version(request)
        self.access.require(request.state.token, "publish", scope_of(name),
                            f"attest {name}")
        request.state.action = f"verify and attest {name}@{version}"
        registry, key = self.registry, self.key()
        report: VerifyReport = await self._write(
            lambda: registry.verify(name, version, key, now=_now()))
        if report.attestation is not None:
            request.state.record = str(report.attestation)
        return JSONResponse(verify_view(report))

    async def history(self, request: Request) -> Response:
        name = _name(request)
        registry = self.registry
        store = self.state.repo.store

        def work() -> History:
            versions = [(v, c, registry.manifest(c)) for v, c in registry.versions(name)]
            if not versions:
                raise NotFoundError(f"no package named {name!r} on this node")
            entries, previous = [], None
            for version, _cid, manifest in versions:
                paths = flatten(store.get, manifest.package)
                entries.append(ChangelogEntry(
                    version=version, time=manifest.time, description=manifest.description,
                    diff=None if previous is None else diff_trees(previous, paths)))
                previous = paths
            return History(name=name, versions=[
                HistoryEntry(v, str(c), m.time, m.reproducible, m.description)
                for v, c, m in versions], changelog=changelog(entries))

        return JSONResponse(await run_heavy(work))

    async def diff(self, request: Request) -> Response:
        name = _name(request)
        old, new = request.query_params.get("from"), request.query_params.get("to")
        if not old or not new:
            raise ValidationError("give both versions: ?from=1.0.0&to=1.1.0")
        for version in (old, new):
            parse_version(version)
        registry = self.registry
        store = self.state.repo.store

        def side(version: str) -> tuple[str, dict[str, CID], str]:
            version, cid = registry.resolve_version(name, version)
            manifest = registry.manifest(cid)
            doc = b"".join(exporter.read_file(store.get, manifest.doc)).decode("utf-8")
            return f"{name}@{version}", flatten(store.get, manifest.package), doc

        def work() -> VersionDiff:
            (old_label, old_paths, old_doc), (new_label, new_paths, new_doc) = (
                side(old), side(new))
            tree = diff_trees(old_paths, new_paths)
            files = _diff_view(tree)
            assert files is not None
            return VersionDiff(name=name, old=old_label, new=new_label, files=files,
                               doc_diff=doc_diff(old_doc, new_doc, old_label, new_label))

        return JSONResponse(await run_heavy(work))

    # -- scopes ------------------------------------------------------------------------------

    def _scope_view(self, scope: str) -> ScopeView:
        cid = self.state.repo.index.scope_record(scope)
        record = self.registry.scope(scope)
        if cid is None or record is None:
            raise NotFoundError(f"scope {scope} does not exist here")
        return ScopeView(scope=scope, record=str(cid), version=record.version,
                         owners=list(record.owners), expires=record.expires)

    @staticmethod
    def _scope_param(request: Request) -> str:
        scope: str = request.path_params["scope"]
        # The scope's rule is a package name's first part: check it as one.
        check_name(f"{scope}/x")
        if not scope.startswith("@"):
            raise ValidationError(f"scope {scope[:80]!r} must start with @")
        return scope

    async def scope(self, request: Request) -> Response:
        return JSONResponse(self._scope_view(self._scope_param(request)))

    async def create_scope(self, request: Request) -> Response:
        body = decode_body(await read_body(request, 4096), ScopeCreate)
        check_name(f"{body.scope}/x")
        request.state.action = f"scope create {body.scope}"
        self.access.require(request.state.token, "scopes", body.scope, f"create {body.scope}")
        registry, key = self.registry, self.key()
        cid = await self._write(lambda: registry.create_scope(body.scope, key, now=_now()))
        request.state.record = str(cid)
        return JSONResponse(self._scope_view(body.scope), status_code=201)

    async def grant(self, request: Request) -> Response:
        scope = self._scope_param(request)
        body = decode_body(await read_body(request, 4096), OwnerChange)
        request.state.action = f"scope grant {scope} {body.owner[:80]}"
        self.access.require(request.state.token, "scopes", scope, f"change the owners of {scope}")
        public_key_from_peer_id(body.owner)  # a peer ID, or a 400 naming the problem
        registry, key = self.registry, self.key()
        cid = await self._write(lambda: registry.grant(scope, key, body.owner, now=_now()))
        request.state.record = str(cid)
        return JSONResponse(self._scope_view(scope))

    async def revoke(self, request: Request) -> Response:
        scope = self._scope_param(request)
        owner: str = request.path_params["owner"]
        request.state.action = f"scope revoke {scope} {owner[:80]}"
        self.access.require(request.state.token, "scopes", scope, f"change the owners of {scope}")
        public_key_from_peer_id(owner)
        registry, key = self.registry, self.key()
        cid = await self._write(lambda: registry.revoke(scope, key, owner, now=_now()))
        request.state.record = str(cid)
        return JSONResponse(self._scope_view(scope))

    # -- node ---------------------------------------------------------------------------------

    async def peers(self, request: Request) -> Response:
        network = self.state.network
        handle = getattr(network, "handle", None) if network is not None else None
        connected = sorted(handle.connected_peers()) if handle is not None else []
        return JSONResponse(PeersView(p2p=self.state.p2p, peer_id=self.state.peer_id,
                                      connected=connected,
                                      remembered=load_peers(self.state.repo.home)))

    async def audit(self, request: Request) -> Response:
        after = int_param(request, "after", -1, -1, 2**62)
        limit = int_param(request, "limit", 100, 1, _MAX_PAGE)
        request.state.action = "read audit trail"
        self.access.require(request.state.token, "admin", None, "read the audit trail")
        entries = await run_heavy(
            lambda: self.access.audit.entries(after=after, limit=limit + 1))
        page = entries[:limit]
        more = len(entries) > limit
        return JSONResponse(AuditPage(entries=page, next=page[-1].seq if more else None))


_NAME = {"name": ("Package name: `name` or `@scope/name` (the slash stays a slash).",
                  {"type": "string", "minLength": 1, "maxLength": 214})}
_NAME_VERSION = {**_NAME, "version": ("Exact version (semver).",
                                      {"type": "string", "minLength": 1, "maxLength": 256})}
_SCOPE = {"scope": ("Scope, `@team`.", {"type": "string", "minLength": 2, "maxLength": 215})}
_READ_ERRORS: dict[int, Any] = {400: None, 404: None, 429: None}
_WRITE_ERRORS: dict[int, Any] = {400: None, 401: None, 403: None, 404: None, 409: None,
                                 413: None, 429: None}


def package_routes(state: NodeState, access: AccessControl) -> list[ApiRoute]:
    """The package, scope, peer and audit operations (see the module docstring)."""
    api = PackageApi(state, access)
    p = f"{API_PREFIX}/packages"
    pv = f"{p}/{{name}}/{{version}}"
    return [
        ApiRoute("POST", p, api.publish, "Publish a package version from its document", "packages",
                 {201: PublishResponse, 200: PublishResponse, **_WRITE_ERRORS},
                 body=PublishRequest, right="publish", body_limit=MAX_PUBLISH_BODY, heavy=True,
                 description="Generated and signed by this node's key, which must own the "
                             "scope. With `package`, the tree must be what the document "
                             "generates (409 otherwise, unless allow_divergent)."),
        ApiRoute("GET", f"{p}/{{name}}", api.package, "Package metadata and versions", "packages",
                 {200: PackageInfo, **_READ_ERRORS}, path_params=_NAME),
        ApiRoute("GET", f"{p}/{{name}}/history", api.history, "Versions and changelog",
                 "packages", {200: History, **_READ_ERRORS}, path_params=_NAME, heavy=True),
        ApiRoute("GET", f"{p}/{{name}}/diff", api.diff, "Compare two versions", "packages",
                 {200: VersionDiff, **_READ_ERRORS}, path_params=_NAME, heavy=True,
                 query=(QueryParam("from", "Older version", {"type": "string"}, True),
                        QueryParam("to", "Newer version", {"type": "string"}, True))),
        ApiRoute("GET", pv, api.version, "One version: manifest, files, attesters", "packages",
                 {200: VersionInfo, **_READ_ERRORS}, path_params=_NAME_VERSION),
        ApiRoute("GET", f"{pv}/download", api.download, "Download as tar.gz or CAR",
                 "packages", {200: (TARBALL_TYPE, CAR_TYPE), **_READ_ERRORS},
                 path_params=_NAME_VERSION, heavy=True,
                 query=(QueryParam("format", "tar.gz (default; entries under package/) or car "
                                   "(CARv1, root = the package tree)",
                                   {"type": "string", "enum": ["tar.gz", "car"]}),)),
        ApiRoute("GET", f"{pv}/documentation", api.documentation, "The source document",
                 "packages", {200: ("text/markdown",), **_READ_ERRORS},
                 path_params=_NAME_VERSION),
        ApiRoute("POST", f"{pv}/regenerate", api.regenerate,
                 "Regenerate from the document and compare", "packages",
                 {200: RegenerateResponse, **_READ_ERRORS}, path_params=_NAME_VERSION,
                 heavy=True, description="Changes nothing: a computation over stored data."),
        ApiRoute("GET", f"{pv}/verify", api.verify, "Verify: every check and the trust score",
                 "packages", {200: VerifyResponse, **_READ_ERRORS}, path_params=_NAME_VERSION,
                 heavy=True, description="Read-only: nothing is signed or stored."),
        ApiRoute("POST", f"{pv}/verify", api.attest, "Verify and attest",
                 "packages", {200: VerifyResponse, **_WRITE_ERRORS}, path_params=_NAME_VERSION,
                 right="publish", heavy=True,
                 description="The checks of GET, then the node signs an attestation of what "
                             "it checked, as `dre verify` does."),
        ApiRoute("GET", f"{API_PREFIX}/scopes/{{scope}}", api.scope, "A scope's owners",
                 "scopes", {200: ScopeView, **_READ_ERRORS}, path_params=_SCOPE),
        ApiRoute("POST", f"{API_PREFIX}/scopes", api.create_scope,
                 "Create a scope owned by this node's key", "scopes",
                 {201: ScopeView, **_WRITE_ERRORS}, body=ScopeCreate, right="scopes"),
        ApiRoute("POST", f"{API_PREFIX}/scopes/{{scope}}/owners", api.grant,
                 "Grant a peer ID ownership of a scope", "scopes",
                 {200: ScopeView, **_WRITE_ERRORS}, body=OwnerChange, right="scopes",
                 path_params=_SCOPE),
        ApiRoute("DELETE", f"{API_PREFIX}/scopes/{{scope}}/owners/{{owner}}", api.revoke,
                 "Revoke a peer ID's ownership of a scope", "scopes",
                 {200: ScopeView, **_WRITE_ERRORS}, right="scopes",
                 path_params={**_SCOPE, "owner": ("Peer ID", {"type": "string",
                                                            "minLength": 1,
                                                            "maxLength": 128})}),
        ApiRoute("GET", f"{API_PREFIX}/peers", api.peers, "Connected and remembered peers",
                 "node", {200: PeersView, 429: None}),
        ApiRoute("GET", f"{API_PREFIX}/audit", api.audit, "The HTTP audit trail (admin)",
                 "node", {200: AuditPage, 400: None, 401: None, 403: None, 429: None},
                 right="admin",
                 query=(QueryParam("after", "Entries after this sequence number",
                                   {"type": "integer", "minimum": -1}),
                        QueryParam("limit", "At most this many (1 to 1000)",
                                   {"type": "integer", "minimum": 1, "maximum": 1000}))),
    ]
