"""Publisher key commands: `dre key gen|list|export|import`.

Keys live in the node home (``<home>/keys/``, files 0600); see :mod:`dre.storage.keystore`.
A private key is only ever written to a file (0600) or to a pipe, never shown on a terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from dre.protocol.errors import DreError, ValidationError
from dre.storage.keystore import MAX_KEY_FILE_BYTES, Keystore, write_private_file
from dre.storage.repo import Repo

from .output import emit_json, json_option

if TYPE_CHECKING:
    from .main import Context

__all__ = ["register"]


def _ctx() -> Context:
    obj: Context = click.get_current_context().obj
    return obj


def _keystore() -> Keystore:
    """The keystore of the node home, which must have been initialized."""
    home = _ctx().home
    # Same message as Repo.open, without opening the block store keys do not need.
    if not Repo.exists(home):
        raise DreError(f"no DRE home at {home}: run `dre init` first (or set DRE_HOME)")
    return Keystore(home)


@click.group()
def key() -> None:
    """Publisher keys (Ed25519, shown as peer IDs 12D3KooW…) kept in the node home."""


@key.command("gen")
@click.argument("name")
@json_option
def key_gen(name: str, as_json: bool) -> None:
    """Generate a new key NAME; prints its peer ID."""
    info = _keystore().generate(name)
    if as_json:
        emit_json(info)
    else:
        click.echo(info.peer_id)


@key.command("list")
@json_option
def key_list(as_json: bool) -> None:
    """List the keys: name and peer ID."""
    infos = _keystore().list()
    if as_json:
        emit_json(infos)
        return
    width = max((len(info.name) for info in infos), default=0)
    for info in infos:
        click.echo(f"{info.name:<{width}}  {info.peer_id}")


@key.command("export")
@click.argument("name")
@click.option("--private", is_flag=True,
              help="Export the private key file (the secret) instead of the peer ID.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="With --private: the file to write (0600; must not exist). Default: stdout, "
                   "if it is not a terminal.")
@json_option
def key_export(name: str, private: bool, output: Path | None, as_json: bool) -> None:
    """Print the peer ID of key NAME, or with --private export its key file."""
    store = _keystore()
    if not private:
        if output is not None:
            raise click.UsageError("-o/--output is for --private; the public key is the peer ID")
        peer_id = store.export_public(name)
        if as_json:
            emit_json({"name": name, "peer_id": peer_id})
        else:
            click.echo(peer_id)
        return
    if output is None or str(output) == "-":
        if as_json:
            raise click.UsageError("--json with --private needs -o FILE (stdout holds the key)")
        if sys.stdout.isatty():
            # A secret on a terminal ends up in scrollback, screen shares and recordings.
            raise ValidationError("refusing to print a private key to a terminal; use -o FILE")
        sys.stdout.buffer.write(store.export_private(name))
        sys.stdout.flush()
        return
    if not output.parent.is_dir():
        raise ValidationError(f"cannot write {output}: {output.parent} is not a directory")
    data = store.export_private(name)
    peer_id = store.export_public(name)
    try:
        write_private_file(output, data)
    except FileExistsError:
        raise ValidationError(f"{output} already exists; refusing to overwrite it") from None
    if as_json:
        emit_json({"name": name, "peer_id": peer_id, "path": str(output)})
    else:
        click.echo(f"exported private key {name} ({peer_id}) to {output}")


@key.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@json_option
def key_import(name: str, file: Path, as_json: bool) -> None:
    """Import a key file (from `dre key export --private`) as NAME; '-' reads stdin."""
    store = _keystore()
    if str(file) == "-":
        data = sys.stdin.buffer.read(MAX_KEY_FILE_BYTES + 1)
    else:
        with file.open("rb") as fh:
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
    info = store.import_key(name, data, source="stdin" if str(file) == "-" else str(file))
    if as_json:
        emit_json(info)
    else:
        click.echo(info.peer_id)


def register(group: click.Group) -> None:
    """Attach the `key` group to the top-level `dre` group."""
    group.add_command(key)
