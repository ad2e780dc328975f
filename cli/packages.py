"""Package commands: generate, publish, verify, info, diff, install, scope, log."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from dre.protocol import exporter
from dre.protocol.cid import CID
from dre.protocol.errors import DreError, NotFoundError, ValidationError
from dre.protocol.generator import generate, validate
from dre.protocol.keys import PublisherKey, public_key_from_peer_id
from dre.protocol.links import dag_complete
from dre.protocol.packages import build_file, build_tree, manifest_summary
from dre.protocol.resolve import Candidate, resolve
from dre.protocol.semver import parse_range, parse_version
from dre.protocol.treediff import ChangelogEntry, changelog, diff_trees, doc_diff, flatten_tree
from dre.storage.importing import SOURCE_DIR, SOURCE_DOC, read_package_dir
from dre.storage.keystore import Keystore
from dre.storage.registry import LocalRegistry, VerifyReport

from .blocks import materialize
from .node_cli import fetch_from_network, local_node_running, resolve_on_network
from .output import emit_json, json_option
from .search_cli import record_downloads

if TYPE_CHECKING:
    from .main import Context

__all__ = ["register"]

#: A source document larger than this is refused before it is read whole (the generator's own
#: limit is 1 MiB; the margin lets it report that limit with a line number).
_MAX_DOC_READ = 4 << 20


def _ctx() -> Context:
    obj: Context = click.get_current_context().obj
    return obj


def _now() -> int:
    return int(time.time())


def _read_doc(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_DOC_READ + 1)
    except FileNotFoundError:
        raise ValidationError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValidationError(f"{path}: is a directory, not a document") from None
    except OSError as exc:
        raise ValidationError(f"{path}: {exc.strerror}") from None
    if len(data) > _MAX_DOC_READ:
        raise ValidationError(f"{path}: larger than {_MAX_DOC_READ} bytes")
    return data


def _key(name: str) -> PublisherKey:
    keystore = Keystore(_ctx().home)
    if name == Keystore.default_name():
        keystore.ensure_default()
    return keystore.get(name)


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``@acme/retry@^1.2`` -> (``@acme/retry``, ``^1.2``); the scope's ``@`` is not a separator."""
    at = spec.rfind("@")
    if at > 0:
        return spec[:at], spec[at + 1:] or None
    return spec, None


def _peer_id(text: str) -> str:
    """A peer ID given directly, or the name of a key in the keystore."""
    if text.startswith("12D3Koo"):
        public_key_from_peer_id(text)  # validates
        return text
    return Keystore(_ctx().home).export_public(text)


key_option = click.option("--key", "key_name", default="self", show_default=True,
                          help="Keystore key to sign with (created on first use if 'self').")


# -- generate ----------------------------------------------------------------------------------

@click.command("generate")
@click.argument("doc", type=click.Path(path_type=Path, readable=False))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the package tree here (must not exist).")
@click.option("--preview", is_flag=True, help="List files, sizes and CIDs; write nothing.")
@click.option("--validate", "only_validate", is_flag=True,
              help="Report every error and warning with its line; write nothing.")
@json_option
def generate_cmd(doc: Path, output: Path | None, preview: bool, only_validate: bool,
                 as_json: bool) -> None:
    """Generate the package a document describes."""
    text = _read_doc(doc)
    if only_validate:
        diagnostics = validate(text)
        errors = [d for d in diagnostics if d.severity == "error"]
        if as_json:
            emit_json({"valid": not errors, "diagnostics": [
                {"line": d.line, "severity": d.severity, "message": d.message}
                for d in diagnostics]})
        else:
            for d in diagnostics:
                click.echo(f"{doc}:{d.line}: {d.severity}: {d.message}")
            if not errors:
                click.echo(f"{doc}: valid")
        if errors:
            sys.exit(1)
        return
    generated = generate(text)
    tree = build_tree(generated.files)
    if preview or output is None:
        meta = generated.metadata
        files = [{"path": path, "size": len(data), "cid": str(tree.paths[path])}
                 for path, data in generated.files.items()]
        if as_json:
            emit_json({"name": meta.name, "version": meta.version, "root": str(tree.root),
                       "doc": str(build_file(text).root), "generator": generated.generator_version,
                       "files": files, "total_bytes": generated.total_bytes,
                       "warnings": [f"line {w.line}: {w.message}" for w in generated.warnings]})
        else:
            for f in files:
                click.echo(f"{f['cid']} {f['size']:>9} {f['path']}")
            click.echo(f"{tree.root} {generated.total_bytes:>9} {meta.name}@{meta.version}")
        return
    if output.exists():
        raise ValidationError(f"{output} already exists; choose another --output")
    tmp = output.with_name(f".{output.name}.dre-tmp-{os.getpid()}")
    try:
        for path, data in generated.files.items():
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (tmp / SOURCE_DIR).mkdir(parents=True, exist_ok=True)
        (tmp / SOURCE_DIR / SOURCE_DOC).write_bytes(text)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if as_json:
        emit_json({"root": str(tree.root), "path": str(output), "files": len(generated.files)})
    else:
        click.echo(f"generated {len(generated.files)} files into {output} (root {tree.root})")


# -- publish -----------------------------------------------------------------------------------

@click.command()
@click.argument("path", type=click.Path(path_type=Path, readable=False))
@click.option("--doc", type=click.Path(path_type=Path), default=None,
              help=f"Source document of a package directory (default DIR/{SOURCE_DIR}/"
                   f"{SOURCE_DOC}).")
@click.option("--allow-divergent", is_flag=True,
              help="Publish a directory that differs from its document, as not reproducible.")
@key_option
@json_option
def publish(path: Path, doc: Path | None, allow_divergent: bool, key_name: str,
            as_json: bool) -> None:
    """Publish a document (generated here) or a package directory (checked against its doc)."""
    directory = None
    if path.is_dir():
        doc_path = doc if doc is not None else path / SOURCE_DIR / SOURCE_DOC
        if not doc_path.is_file():
            raise ValidationError(f"{path}: no source document at {doc_path}; pass --doc")
        files, empty = read_package_dir(path)
        directory = build_tree(files, empty_directories=empty)
        text = _read_doc(doc_path)
    else:
        text = _read_doc(path)
    key = _key(key_name)
    with _ctx().open_repo() as repo:
        result = LocalRegistry(repo).publish(text, key, now=_now(), directory=directory,
                                             allow_divergent=allow_divergent)
    if as_json:
        emit_json({
            "name": result.name, "version": result.version, "manifest": str(result.manifest),
            "package": str(result.package), "doc": str(result.doc),
            "previous": str(result.previous) if result.previous else None,
            "reproducible": result.reproducible, "files": result.files,
            "already_published": result.already_published, "publisher": key.peer_id,
            "divergence": _diff_json(result.divergence),
        })
        return
    if result.already_published:
        click.echo(f"{result.name}@{result.version} is already published as {result.manifest}")
        return
    click.echo(f"published {result.name}@{result.version}")
    click.echo(f"  manifest {result.manifest}")
    click.echo(f"  package  {result.package} ({result.files} files"
               f"{'' if result.reproducible else ', NOT reproducible'})")
    click.echo(f"  doc      {result.doc}")


def _diff_json(diff: Any) -> dict[str, list[str]] | None:
    if diff is None:
        return None
    return {"added": list(diff.added), "removed": list(diff.removed),
            "changed": list(diff.changed)}


# -- verify ------------------------------------------------------------------------------------

def _report_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "name": report.name, "version": report.version, "manifest": str(report.manifest),
        "publisher": report.publisher,
        "verified": _verified(report),
        "signature": {"valid": report.signature_valid, "error": report.signature_error},
        "authorization": {"authorized": report.authorized, "error": report.authorization_error},
        "integrity": {"intact": report.intact, "blocks_checked": report.blocks_checked,
                      "bad": report.bad_blocks, "missing": report.missing_blocks},
        "regeneration": {"reproduced": report.reproduced,
                         "regenerated": str(report.regenerated) if report.regenerated else None,
                         "manifest_claims_reproducible": report.recorded_reproducible,
                         "error": report.regeneration_error,
                         "divergence": _diff_json(report.divergence)},
        "license": {"valid": report.license_valid, "error": report.license_error},
        "attestations": {"independent_attesters": report.independent_attesters},
        "trust": {"score": report.trust,
                  "breakdown": {f: getattr(report.breakdown, f)
                                for f in report.breakdown.__struct_fields__}},
        "attestation": str(report.attestation) if report.attestation else None,
        "notes": report.notes,
    }


def _verified(report: VerifyReport) -> bool:
    claims_ok = report.reproduced or not report.recorded_reproducible
    return report.signature_valid and report.authorized and report.intact and claims_ok


def _failure(report: VerifyReport) -> str:
    if not report.signature_valid:
        return f"manifest {report.manifest}: {report.signature_error}"
    if not report.intact:
        first = (report.bad_blocks or report.missing_blocks)[0]
        return (f"{len(report.bad_blocks)} corrupt and {len(report.missing_blocks)} missing "
                f"blocks (first: {first})")
    if not report.authorized:
        return report.authorization_error
    return (f"the document regenerates {report.regenerated}, not the published package"
            if report.regenerated else report.regeneration_error)


@click.command()
@click.argument("spec")
@key_option
@json_option
def verify(spec: str, key_name: str, as_json: bool) -> None:
    """Check signature, authorization, every block, regeneration and license; attest the result."""
    name, version = _split_spec(spec)
    key = _key(key_name)
    with _ctx().open_repo() as repo:
        report = LocalRegistry(repo).verify(name, version, key, now=_now())
    ok = _verified(report)
    if as_json:
        emit_json(_report_json(report))
    else:
        def mark(good: bool) -> str:
            return "ok  " if good else "FAIL"

        click.echo(f"{report.name}@{report.version}  manifest {report.manifest}")
        click.echo(f"  {mark(report.signature_valid)} signature by {report.publisher}")
        click.echo(f"  {mark(report.authorized)} authorization {report.authorization_error}")
        click.echo(f"  {mark(report.intact)} integrity: {report.blocks_checked} blocks")
        click.echo(f"  {mark(report.reproduced)} regeneration: {report.regenerated}")
        click.echo(f"  {mark(report.license_valid)} license {report.license_error}")
        click.echo(f"  trust {report.trust:.2f} ({len(report.independent_attesters)} independent"
                   " attestations)")
    if not ok:
        raise DreError(f"verification of {report.name}@{report.version} failed: "
                       f"{_failure(report)}")


# -- info / diff / log -------------------------------------------------------------------------

@click.command()
@click.argument("spec")
@click.option("--versions", "show_versions", is_flag=True, help="List every version.")
@click.option("--changelog", "show_changelog", is_flag=True,
              help="Print the changelog generated from the version history.")
@json_option
def info(spec: str, show_versions: bool, show_changelog: bool, as_json: bool) -> None:
    """Show a package's manifest (latest version unless NAME@VERSION)."""
    name, version = _split_spec(spec)
    with _ctx().open_repo() as repo:
        registry = LocalRegistry(repo)
        version, cid = registry.resolve_version(name, version)
        manifest = registry.manifest(cid)
        versions = [(v, c, registry.manifest(c)) for v, c in registry.versions(name)]
        log_text = _changelog(repo.store.get, versions) if show_changelog else ""
    summary = {"manifest": str(cid), **manifest_summary(manifest)}
    if as_json:
        out: dict[str, Any] = dict(summary)
        if show_versions:
            out["versions"] = [{"version": v, "manifest": str(c), "time": m.time,
                                "reproducible": m.reproducible} for v, c, m in versions]
        if show_changelog:
            out["changelog"] = log_text
        emit_json(out)
        return
    for key, value in summary.items():
        click.echo(f"{key:<13} {value}")
    if show_versions:
        click.echo("versions:")
        for v, c, m in versions:
            click.echo(f"  {v:<12} {c} {time.strftime('%Y-%m-%d', time.gmtime(m.time))}")
    if show_changelog:
        click.echo(log_text, nl=False)


def _changelog(get: Any, versions: list[tuple[str, CID, Any]]) -> str:
    entries = []
    previous_paths: dict[str, CID] | None = None
    for version, _cid, manifest in versions:
        paths = flatten_tree(get, manifest.package)
        diff = None if previous_paths is None else diff_trees(previous_paths, paths)
        entries.append(ChangelogEntry(version=version, time=manifest.time,
                                      description=manifest.description, diff=diff))
        previous_paths = paths
    return changelog(entries)


@click.command()
@click.argument("old")
@click.argument("new")
@json_option
def diff(old: str, new: str, as_json: bool) -> None:
    """Compare two versions: the document (unified diff) and the files (by CID)."""
    with _ctx().open_repo() as repo:
        registry = LocalRegistry(repo)
        sides = []
        for spec in (old, new):
            name, version = _split_spec(spec)
            if version is None:
                raise ValidationError(f"{spec}: give a version, as NAME@VERSION")
            version, cid = registry.resolve_version(name, version)
            manifest = registry.manifest(cid)
            doc = b"".join(exporter.read_file(repo.store.get, manifest.doc)).decode("utf-8")
            sides.append((f"{name}@{version}", manifest,
                          flatten_tree(repo.store.get, manifest.package), doc))
    (old_label, _, old_paths, old_doc), (new_label, _, new_paths, new_doc) = sides
    tree = diff_trees(old_paths, new_paths)
    text = doc_diff(old_doc, new_doc, old_label, new_label)
    if as_json:
        emit_json({"old": old_label, "new": new_label, "files": _diff_json(tree),
                   "doc_diff": text})
        return
    for label, paths in (("added", tree.added), ("removed", tree.removed),
                         ("changed", tree.changed)):
        for p in paths:
            click.echo(f"{label:<8} {p}")
    click.echo(text, nl=False)


@click.command("log")
@json_option
def log_cmd(as_json: bool) -> None:
    """The audit log of publishes and scope changes on this node (hash-linked)."""
    with _ctx().open_repo() as repo:
        entries = list(LocalRegistry(repo).log())
    if as_json:
        emit_json([{"seq": e.seq, "kind": e.kind, "subject": e.subject, "action": e.action,
                    "record": str(e.record), "signer": e.signer, "time": e.time}
                   for e in entries])
        return
    for e in entries:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.time))
        click.echo(f"{e.seq:>5} {stamp} {e.kind:<7} {e.subject} {e.action} by {e.signer}")


# -- install -----------------------------------------------------------------------------------

@click.command()
@click.argument("spec")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Directory to install into (created; must not exist).")
@json_option
def install(spec: str, output: Path, as_json: bool) -> None:
    """Install a package and its dependencies (semver resolution) into a directory."""
    name, wanted = _split_spec(spec)
    wanted = wanted or "*"
    parse_range(wanted)  # a clear error before any lookup
    if output.exists():
        raise ValidationError(f"{output} already exists; choose another --output")
    network = local_node_running()
    with _ctx().open_repo() as repo:
        registry = LocalRegistry(repo)

        def catalog(package: str) -> list[Candidate]:
            found = []
            if network and not registry.versions(package):
                # Unknown here: ask the network (DHT name key, then sync with its holders).
                with contextlib.suppress(NotFoundError):
                    resolve_on_network(package)
            for version, cid in registry.versions(package):
                manifest = registry.manifest(cid)
                found.append(Candidate(name=package, version=parse_version(version),
                                       dependencies=dict(manifest.dependencies), key=cid))
            return found

        resolution = resolve(name, wanted, catalog)
        tmp = output.with_name(f".{output.name}.dre-tmp-{os.getpid()}")
        installed = []
        try:
            tmp.mkdir(parents=True)
            for package in resolution.order:
                candidate = resolution.packages[package]
                assert isinstance(candidate.key, CID)
                manifest = registry.manifest(candidate.key)
                if network and not dag_complete(repo.store.get, manifest.package):
                    fetch_from_network(str(manifest.package))
                target = tmp.joinpath(*package.split("/"))
                target.mkdir(parents=True)
                materialize(repo.store, manifest.package, target, lambda _n: None)
                installed.append({"name": package, "version": str(candidate.version),
                                  "manifest": str(candidate.key),
                                  "package": str(manifest.package)})
            os.replace(tmp, output)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        record_downloads(repo.home, [(i["name"], i["version"]) for i in installed])
    if as_json:
        emit_json({"root": name, "installed": installed, "path": str(output)})
        return
    for item in installed:
        click.echo(f"installed {item['name']}@{item['version']} ({item['package']})")


# -- scopes ------------------------------------------------------------------------------------

@click.group()
def scope() -> None:
    """Scopes (@team): who may publish @team/... packages."""


def _scope_json(cid: CID, registry: LocalRegistry, name: str) -> dict[str, Any]:
    record = registry.scope(name)
    assert record is not None
    return {"scope": name, "record": str(cid), "version": record.version,
            "owners": list(record.owners), "expires": record.expires}


@scope.command("create")
@click.argument("name")
@key_option
@json_option
def scope_create(name: str, key_name: str, as_json: bool) -> None:
    """Create a scope owned by your key."""
    key = _key(key_name)
    with _ctx().open_repo() as repo:
        registry = LocalRegistry(repo)
        cid = registry.create_scope(name, key, now=_now())
        out = _scope_json(cid, registry, name)
    if as_json:
        emit_json(out)
    else:
        click.echo(f"created scope {name} owned by {key.peer_id} ({cid})")


def _change_owners(action: str, name: str, owner: str, key_name: str, as_json: bool) -> None:
    key = _key(key_name)
    peer = _peer_id(owner)
    with _ctx().open_repo() as repo:
        registry = LocalRegistry(repo)
        change = registry.grant if action == "grant" else registry.revoke
        cid = change(name, key, peer, now=_now())
        out = _scope_json(cid, registry, name)
    if as_json:
        emit_json(out)
    else:
        done = "granted" if action == "grant" else "revoked"
        click.echo(f"{done} {peer} in {name} (version {out['version']})")


@scope.command("grant")
@click.argument("name")
@click.argument("owner")
@key_option
@json_option
def scope_grant(name: str, owner: str, key_name: str, as_json: bool) -> None:
    """Let another key (peer ID or keystore name) publish in a scope."""
    _change_owners("grant", name, owner, key_name, as_json)


@scope.command("revoke")
@click.argument("name")
@click.argument("owner")
@key_option
@json_option
def scope_revoke(name: str, owner: str, key_name: str, as_json: bool) -> None:
    """Remove a key from a scope's owners."""
    _change_owners("revoke", name, owner, key_name, as_json)


@scope.command("show")
@click.argument("name")
@json_option
def scope_show(name: str, as_json: bool) -> None:
    """Show a scope's current record."""
    with _ctx().open_repo() as repo:
        registry = LocalRegistry(repo)
        cid = repo.index.scope_record(name)
        if cid is None:
            raise NotFoundError(f"scope {name} does not exist here")
        out = _scope_json(cid, registry, name)
    if as_json:
        emit_json(out)
    else:
        click.echo(f"{name} version {out['version']} ({cid})")
        for owner in out["owners"]:
            click.echo(f"  owner {owner}")


def register(group: click.Group) -> None:
    """Attach these commands to the top-level `dre` group."""
    for command in (generate_cmd, publish, verify, info, diff, install, log_cmd, scope):
        group.add_command(command)
