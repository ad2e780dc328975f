"""IPFS-style block commands: init, add, cat, get, dag export/import, pin, repo."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click
from dre.protocol import exporter
from dre.protocol.cid import CID, parse_cid
from dre.protocol.errors import DreError, ValidationError
from dre.protocol.importer import PROFILE_V0, PROFILE_V1
from dre.protocol.links import dag_complete, links_of
from dre.storage.blockstore import BlockStore, PinKind
from dre.storage.car_io import export_car, import_car
from dre.storage.fsutil import write_atomically
from dre.storage.importing import import_path, scan_path
from dre.storage.repo import Repo

from .node_cli import fetch_from_network, local_node_running
from .output import emit_json, json_option, progress_bar

if TYPE_CHECKING:
    from .main import Context

__all__ = ["register"]

#: `dre cat --json` holds the file in memory to put it in one JSON document.
_MAX_JSON_CAT_BYTES = 16 << 20


def _ctx() -> Context:
    obj: Context = click.get_current_context().obj
    return obj


def _split_cid_path(text: str) -> tuple[CID, str]:
    """``CID[/path]`` (an optional ``/ipfs/`` prefix allowed) into the CID and the inner path."""
    text = text.removeprefix("/ipfs/")
    cid_text, _, inner = text.partition("/")
    return parse_cid(cid_text), inner.strip("/")


def _resolve(store: BlockStore, target: str) -> CID:
    root, inner = _split_cid_path(target)
    return exporter.resolve_path(store.get, root, inner) if inner else root


@click.command()
@json_option
def init(as_json: bool) -> None:
    """Create a node home (at --home, $DRE_HOME or the per-user data directory)."""
    home = _ctx().home
    created = Repo.init(home)
    if as_json:
        emit_json({"home": str(home), "created": created})
    elif created:
        click.echo(f"initialized DRE home at {home}")
    else:
        click.echo(f"DRE home already initialized at {home}")


@click.command()
@click.argument("path", type=click.Path(path_type=Path, readable=False))
@click.option("--cid-version", type=click.Choice(["0", "1"]), default="1", show_default=True,
              help="1: CIDv1 with raw leaves (= ipfs add --cid-version=1); 0: CIDv0 (= ipfs add).")
@click.option("--only-hash", "-n", is_flag=True, help="Compute the CID only; store nothing.")
@click.option("--hidden", "-H", is_flag=True, help="Include files whose names start with '.'.")
@click.option("--pin/--no-pin", default=True, show_default=True, help="Pin the root recursively.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the root CID.")
@json_option
def add(path: Path, cid_version: str, only_hash: bool, hidden: bool, pin: bool, quiet: bool,
        as_json: bool) -> None:
    """Add a file or directory; prints each entry and, last, the root CID."""
    profile = PROFILE_V0 if cid_version == "0" else PROFILE_V1
    scanned = scan_path(path, hidden=hidden)  # validate before opening (or creating) anything
    total = sum(entry.size for entry in scanned)
    with progress_bar(total, "add") as advance:
        if only_hash:
            result = import_path(None, path, profile, scanned=scanned, progress=advance)
        else:
            with _ctx().open_repo() as repo:
                result = import_path(repo.store, path, profile, pin=pin, scanned=scanned,
                                     progress=advance)
    if as_json:
        emit_json({
            "cid": str(result.root.cid),
            "name": result.name,
            "kind": result.kind,
            "size": result.total_bytes,
            "dag_size": result.root.tsize,
            "pinned": pin and not only_hash,
            "entries": [
                {"path": f"{result.name}/{rel}" if rel else result.name, "cid": str(e.cid),
                 "size": e.size}
                for rel, e in result.entries
            ],
        })
    elif quiet:
        click.echo(str(result.root.cid))
    else:
        for rel, entry in result.entries:
            click.echo(f"added {entry.cid} {result.name}/{rel}" if rel else
                       f"added {entry.cid} {result.name}")


def _ensure_local(target: str) -> None:
    """Fetch ``target``'s DAG through the running node when the local store lacks part of it.

    Without a running node this does nothing (the command then reports what is missing), and
    costs nothing: the completeness walk reads every block, so it runs only when it can help.
    """
    if not local_node_running():
        return
    root, _inner = _split_cid_path(target)
    with _ctx().open_repo() as repo:
        if dag_complete(repo.store.get, root):
            return
    fetch_from_network(str(root))


@click.command()
@click.argument("target")
@json_option
def cat(target: str, as_json: bool) -> None:
    """Print the bytes of a file: CID or CID/path/inside (fetched through the node if needed)."""
    _ensure_local(target)
    with _ctx().open_repo() as repo:
        cid = _resolve(repo.store, target)
        info = exporter.stat(repo.store.get, cid)
        if info.kind != "file":
            raise ValidationError(f"{target} is a {info.kind}, not a file (use `dre get`)")
        if as_json:
            if info.size > _MAX_JSON_CAT_BYTES:
                raise ValidationError(
                    f"{target} is {info.size} bytes; --json prints at most {_MAX_JSON_CAT_BYTES}"
                )
            data = b"".join(exporter.read_file(repo.store.get, cid))
            emit_json({"cid": str(cid), "size": len(data), "text": data.decode("utf-8", "replace")})
            return
        out = sys.stdout.buffer
        with progress_bar(info.size, "cat") as advance:
            for chunk in exporter.read_file(repo.store.get, cid):
                out.write(chunk)
                advance(len(chunk))
        out.flush()


def _safe_component(name: str, cid: CID) -> str:
    # Names come from the DAG, i.e. from whoever made it: never let one escape the output dir.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValidationError(f"refusing unsafe entry name {name!r} in {cid}")
    return name


def materialize(store: BlockStore, cid: CID, dest: Path, advance: Any) -> int:
    """Write the UnixFS DAG ``cid`` to ``dest`` (a file, or a directory that exists);
    the number of files written. Entry names from the DAG are checked before use."""
    files = 0
    for relpath, info in exporter.walk(store.get, cid):
        parts = [_safe_component(part, cid) for part in relpath.split("/")] if relpath else []
        target = dest.joinpath(*parts)
        if info.kind == "directory":
            target.mkdir(parents=True, exist_ok=True)
        elif info.kind == "symlink":
            os.symlink(exporter.read_symlink(store.get, info.cid), target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as fh:
                for chunk in exporter.read_file(store.get, info.cid):
                    fh.write(chunk)
                    advance(len(chunk))
            files += 1
    return files


@click.command()
@click.argument("target")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Where to write (default: the last path segment, or the CID).")
@json_option
def get(target: str, output: Path | None, as_json: bool) -> None:
    """Write a file or a whole directory tree out of the store (fetched through the node if
    needed)."""
    _ensure_local(target)
    with _ctx().open_repo() as repo:
        cid = _resolve(repo.store, target)
        info = exporter.stat(repo.store.get, cid)
        dest = output if output is not None else Path(target.rstrip("/").rsplit("/", 1)[-1])
        if dest.exists() or dest.is_symlink():
            raise ValidationError(f"{dest} already exists; choose another --output")
        tmp = dest.with_name(f".{dest.name}.dre-tmp-{os.getpid()}")
        try:
            with progress_bar(info.size, "get") as advance:
                if info.kind == "directory":
                    tmp.mkdir(parents=True)
                files = materialize(repo.store, cid, tmp, advance)
            os.replace(tmp, dest)
        except BaseException:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            raise
    if as_json:
        emit_json({"cid": str(cid), "path": str(dest), "kind": info.kind, "files": files,
                   "size": info.size})
    else:
        click.echo(f"saved {cid} to {dest}")


@click.group()
def dag() -> None:
    """Whole DAGs as CAR files."""


@dag.command("export")
@click.argument("target")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="CAR file to write ('-' for stdout).")
@json_option
def dag_export(target: str, output: Path, as_json: bool) -> None:
    """Export the DAG under a CID (every block, depth-first) as a CARv1 file."""
    with _ctx().open_repo() as repo:
        cid = _resolve(repo.store, target)
        total = exporter.stat(repo.store.get, cid).size if cid.codec.name != "dag-cbor" else 0

        def write(fh: BinaryIO) -> int:
            with progress_bar(total, "export") as advance:
                count: int = export_car(repo.store, cid, fh, advance)
            return count

        if str(output) == "-":
            if sys.stdout.isatty():
                raise ValidationError("refusing to write a binary CAR to a terminal; use -o FILE")
            count = write(sys.stdout.buffer)
        else:
            counts: list[int] = []
            write_atomically(output, lambda fh: counts.append(write(fh)))
            count = counts[0]
    if as_json:
        emit_json({"root": str(cid), "blocks": count, "path": str(output)})
    elif str(output) != "-":
        click.echo(f"exported {cid} ({count} blocks) to {output}")


@dag.command("import")
@click.argument("path", type=click.Path(path_type=Path, readable=False))
@click.option("--pin-roots/--no-pin-roots", default=True, show_default=True,
              help="Pin each root whose DAG the CAR holds completely.")
@json_option
def dag_import(path: Path, pin_roots: bool, as_json: bool) -> None:
    """Import a CARv1 file: every block verified first; a bad CAR leaves the store unchanged."""
    with _ctx().open_repo() as repo:
        size = path.stat().st_size if path.is_file() else 0
        with progress_bar(size, "verify") as advance:
            result = import_car(repo.store, path, pin_roots=pin_roots, progress=advance)
    if as_json:
        emit_json({"roots": [str(c) for c in result.roots],
                   "pinned": [str(c) for c in result.pinned],
                   "incomplete": [str(c) for c in result.incomplete_roots],
                   "blocks": result.blocks, "bytes": result.bytes})
        return
    click.echo(f"imported {result.blocks} blocks ({result.bytes} bytes)")
    for root in result.pinned:
        click.echo(f"pinned root {root}")
    for root in result.incomplete_roots:
        click.echo(f"root {root} is incomplete in this CAR: not pinned")


@click.group()
def pin() -> None:
    """Keep DAGs safe from garbage collection."""


@pin.command("add")
@click.argument("target")
@click.option("--direct", is_flag=True, help="Pin only this block, not what it links to.")
@json_option
def pin_add(target: str, direct: bool, as_json: bool) -> None:
    """Pin a CID (recursively by default: the whole DAG must be present)."""
    with _ctx().open_repo() as repo:
        cid = _resolve(repo.store, target)
        repo.store.pin_add(cid, recursive=not direct, links_of=links_of)
    kind = "direct" if direct else "recursive"
    if as_json:
        emit_json({"cid": str(cid), "type": kind})
    else:
        click.echo(f"pinned {cid} {kind}ly")


@pin.command("rm")
@click.argument("target")
@json_option
def pin_rm(target: str, as_json: bool) -> None:
    """Remove a pin (its blocks go at the next `dre repo gc` unless pinned otherwise)."""
    with _ctx().open_repo() as repo:
        cid = parse_cid(target.removeprefix("/ipfs/"))
        repo.store.pin_rm(cid)
    if as_json:
        emit_json({"cid": str(cid), "removed": True})
    else:
        click.echo(f"unpinned {cid}")


@pin.command("ls")
@click.option("--type", "kind", type=click.Choice(["all", "direct", "recursive"]), default="all")
@json_option
def pin_ls(kind: str, as_json: bool) -> None:
    """List pins."""
    with _ctx().open_repo() as repo:
        pins = [(cid, k) for cid, k in repo.store.pins() if kind in ("all", PinKind(k).value)]
    if as_json:
        emit_json([{"cid": str(cid), "type": PinKind(k).value} for cid, k in pins])
    else:
        for cid, k in pins:
            click.echo(f"{cid} {PinKind(k).value}")


@click.group()
def repo() -> None:
    """The local store: statistics, garbage collection, integrity."""


@repo.command("stat")
@json_option
def repo_stat(as_json: bool) -> None:
    """Blocks, bytes stored, bytes saved by deduplication, pins."""
    with _ctx().open_repo() as r:
        stats = r.store.stats()
        home = r.home
    if as_json:
        emit_json({"home": str(home), **{f: getattr(stats, f) for f in stats.__struct_fields__}})
    else:
        click.echo(f"home              {home}")
        for field in stats.__struct_fields__:
            click.echo(f"{field:<17} {getattr(stats, field)}")


@repo.command("gc")
@json_option
def repo_gc(as_json: bool) -> None:
    """Remove every block that no pin reaches (blocks of running imports are kept)."""
    with _ctx().open_repo() as r:
        result = r.store.gc(links_of)
    if as_json:
        emit_json({f: getattr(result, f) for f in result.__struct_fields__})
    else:
        click.echo(f"removed {result.removed_blocks} blocks ({result.freed_bytes} bytes), "
                   f"kept {result.kept_blocks}")


@repo.command("verify")
@json_option
def repo_verify(as_json: bool) -> None:
    """Re-hash every stored block and check the store's counters (a full integrity check)."""
    with _ctx().open_repo() as r:
        bad = r.store.verify_all()
        count = r.store.stats().blocks
    if as_json:
        emit_json({"blocks": count, "bad": [b.hex() for b in bad], "ok": not bad})
    if bad:
        raise DreError(f"{len(bad)} of {count} blocks are corrupt (first: {bad[0].hex()})")
    if not as_json:
        click.echo(f"verified {count} blocks: all intact")


def register(group: click.Group) -> None:
    """Attach these commands to the top-level `dre` group."""
    for command in (init, add, cat, get, dag, pin, repo):
        group.add_command(command)
