"""`dre node start|status` and `dre registry add|set-default|list|remove`.

How the CLI finds the node it talks to, first match wins:

1. ``--api URL`` or ``--api NAME`` (a registry added with ``dre registry add``);
2. the default registry (``dre registry set-default NAME``), from ``<home>/registries.json``;
3. the node running for this home: ``dre node start`` writes its API's URL to ``<home>/api``
   (and its pid to ``<home>/node.pid``; an api file whose process is gone is ignored).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import httpx
import msgspec
from dre.node.config import (
    DEFAULT_HTTP,
    DEFAULT_LISTEN,
    DEFAULT_NETWORK,
    load_config,
    read_api_url,
)
from dre.protocol.errors import DreError, NotFoundError, ValidationError
from dre.storage.fsutil import read_json_file, write_atomically
from dre.storage.repo import Repo

from .output import emit_json, json_option

if TYPE_CHECKING:
    from .main import Context

__all__ = ["REGISTRIES_FILE", "register"]

REGISTRIES_FILE = "registries.json"
_REGISTRIES_VERSION = 1
_MAX_REGISTRIES_BYTES = 256 * 1024
_MAX_URL_CHARS = 512
_MAX_REGISTRIES = 256
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: A status answer is a few hundred bytes; a node that sends megabytes is not well.
_MAX_RESPONSE_BYTES = 1 << 20
_TIMEOUT = 5.0


def _ctx() -> Context:
    obj: Context = click.get_current_context().obj
    return obj


# -- named API targets -----------------------------------------------------------------------------


class _Registries(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = _REGISTRIES_VERSION
    default: str | None = None
    registries: dict[str, str] = msgspec.field(default_factory=dict)


def _check_registry_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid registry name {name[:70]!r}: use 1 to 64 of a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def _check_url(text: str) -> str:
    """``text`` as a canonical API base URL (http or https, no query, no trailing slash)."""
    if len(text) > _MAX_URL_CHARS:
        raise ValidationError(f"URL is longer than {_MAX_URL_CHARS} characters")
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise ValidationError(f"invalid URL {text!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValidationError(f"invalid URL {text!r}: expected http://HOST:PORT or https://…")
    if url.query or url.fragment or url.userinfo:
        raise ValidationError(f"invalid URL {text!r}: no query, fragment or credentials please")
    return str(url).rstrip("/")


def _registries_path(home: Path) -> Path:
    return home / REGISTRIES_FILE


def _load_registries(home: Path) -> _Registries:
    path = _registries_path(home)
    doc = read_json_file(path, _Registries, max_bytes=_MAX_REGISTRIES_BYTES,
                         default=_Registries())
    if doc.version != _REGISTRIES_VERSION:
        raise DreError(f"{path} has version {doc.version}; this dre reads {_REGISTRIES_VERSION}")
    return doc


def _save_registries(home: Path, doc: _Registries) -> None:
    if not Repo.exists(home):
        raise DreError(f"no DRE home at {home}: run `dre init` first (or set DRE_HOME)")
    data = msgspec.json.format(msgspec.json.encode(doc)) + b"\n"
    write_atomically(_registries_path(home), lambda fh: fh.write(data))


class _Target(msgspec.Struct, frozen=True):
    url: str
    #: Whether this is the node of the local home (found through its api file).
    local: bool


def _target(home: Path, api: str | None) -> _Target:
    if api is not None:
        if "://" in api:
            return _Target(_check_url(api), local=False)
        regs = _load_registries(home)
        name = _check_registry_name(api)
        if name not in regs.registries:
            raise NotFoundError(f"no registry named {name!r} (see `dre registry list`)")
        return _Target(regs.registries[name], local=False)
    regs = _load_registries(home)
    if regs.default is not None and regs.default in regs.registries:
        return _Target(regs.registries[regs.default], local=False)
    url = read_api_url(home)
    if url is None:
        raise DreError(_no_node(home))
    return _Target(url, local=True)


def _no_node(home: Path) -> str:
    return f"no node is running for {home} (start one with `dre node start`)"


def api_call(home: Path, target: _Target, path: str, *, method: str = "GET",
             body: Any = None, timeout: float = _TIMEOUT) -> Any:
    """Call the target node's API: its JSON answer, or DreError as one line."""
    url = f"{target.url}{path}"
    content = msgspec.json.encode(body) if body is not None else None
    # A local node is on loopback: a proxy from the environment would only get in the way.
    try:
        with (
            httpx.Client(timeout=timeout, trust_env=not target.local) as client,
            client.stream(method, url, headers={"Accept": "application/json"},
                          content=content) as response,
        ):
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _MAX_RESPONSE_BYTES:
                    raise DreError(f"the node at {target.url} sent an oversized answer")
            status = response.status_code
    except httpx.ConnectError as exc:
        if target.local:
            raise DreError(_no_node(home)) from None
        raise DreError(f"cannot reach the node at {target.url}: {exc}") from None
    except httpx.TimeoutException:
        raise DreError(f"the node at {target.url} did not answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise DreError(f"talking to the node at {target.url} failed: {exc}") from None
    try:
        doc = msgspec.json.decode(bytes(body))
    except msgspec.DecodeError:
        raise DreError(f"the node at {target.url} answered HTTP {status} with non-JSON") from None
    if status != 200:
        message = doc.get("error") if isinstance(doc, dict) else None
        raise DreError(f"the node at {target.url}: {message or 'error'} (HTTP {status})")
    return doc


# -- dre node --------------------------------------------------------------------------------------


@click.group("node")
def node_group() -> None:
    """Run a node in the foreground, or ask a running one."""


@node_group.command("start")
@click.option("--listen", "listen", multiple=True, metavar="MULTIADDR",
              help=f"libp2p listen address; repeat for several (default {DEFAULT_LISTEN}).")
@click.option("--bootstrap", "bootstrap", multiple=True, metavar="MULTIADDR",
              help="Peer to connect to on start (…/p2p/12D3Koo…); repeat for several.")
@click.option("--http", "http_addr", metavar="HOST:PORT", default=None,
              help=f"HTTP API address (default {DEFAULT_HTTP}; port 0 picks a free one).")
@click.option("--network", default=None, metavar="NAME",
              help=f"Network to join (default {DEFAULT_NETWORK}).")
def start(listen: tuple[str, ...], bootstrap: tuple[str, ...], http_addr: str | None,
          network: str | None) -> None:
    """Run the node in the foreground until Ctrl+C or SIGTERM.

    Settings come from <home>/node.json (written with the defaults on first start); these
    options override it for this run only.
    """
    # Imported here: the runtime pulls in libp2p, hypercorn and starlette (~1 s), which no other
    # command needs.
    import trio  # noqa: PLC0415
    from dre.node.runtime import Node  # noqa: PLC0415

    home = _ctx().home
    config = load_config(home).with_overrides(
        listen=listen, bootstrap=bootstrap, http=http_addr, network=network
    )
    node = Node(home, config, handle_signals=True, echo=click.echo)
    trio.run(node.run)


_STATUS_LABELS = (
    ("peer_id", "peer ID"),
    ("network", "network"),
    ("http", "HTTP API"),
    ("verify", "verify"),
    ("blocks", "blocks"),
    ("packages", "packages"),
    ("peers", "peers"),
    ("version", "version"),
)


@node_group.command("status")
@click.option("--api", default=None, metavar="URL|NAME",
              help="Node API to ask: a URL or a registry name (default: the default registry, "
                   "else the node running for this home).")
@json_option
def status(api: str | None, as_json: bool) -> None:
    """Show a running node's peer ID, addresses, uptime and counts."""
    home = _ctx().home
    doc = api_call(home, _target(home, api), "/api/v1/node/status")
    if as_json:
        emit_json(doc)
        return
    if not isinstance(doc, dict):
        raise DreError("the node sent a status that is not a JSON object")
    for key, label in _STATUS_LABELS:
        click.echo(f"{label:<9} {doc.get(key)}")
    click.echo(f"{'uptime':<9} {doc.get('uptime_seconds')} s")
    for addr in doc.get("addrs") or ["(libp2p off)"]:
        click.echo(f"{'libp2p':<9} {addr}")


# -- dre registry ----------------------------------------------------------------------------------


@click.group("registry")
def registry_group() -> None:
    """Named node APIs the CLI can talk to (stored in <home>/registries.json)."""


@registry_group.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--replace", is_flag=True, help="Replace the URL of an existing NAME.")
@json_option
def registry_add(name: str, url: str, replace: bool, as_json: bool) -> None:
    """Remember the node API at URL as NAME."""
    home = _ctx().home
    name = _check_registry_name(name)
    url = _check_url(url)
    regs = _load_registries(home)
    if name in regs.registries and not replace and regs.registries[name] != url:
        raise ValidationError(
            f"registry {name!r} already exists ({regs.registries[name]}); use --replace"
        )
    if name not in regs.registries and len(regs.registries) >= _MAX_REGISTRIES:
        raise ValidationError(f"at most {_MAX_REGISTRIES} registries")
    _save_registries(
        home,
        msgspec.structs.replace(regs, registries={**regs.registries, name: url}),
    )
    if as_json:
        emit_json({"name": name, "url": url})
    else:
        click.echo(f"added registry {name} {url}")


@registry_group.command("set-default")
@click.argument("name")
@json_option
def registry_set_default(name: str, as_json: bool) -> None:
    """Make NAME the node API commands talk to when not given --api."""
    home = _ctx().home
    name = _check_registry_name(name)
    regs = _load_registries(home)
    if name not in regs.registries:
        raise NotFoundError(f"no registry named {name!r} (add it with `dre registry add`)")
    _save_registries(home, msgspec.structs.replace(regs, default=name))
    if as_json:
        emit_json({"default": name, "url": regs.registries[name]})
    else:
        click.echo(f"default registry: {name} {regs.registries[name]}")


@registry_group.command("remove")
@click.argument("name")
@json_option
def registry_remove(name: str, as_json: bool) -> None:
    """Forget the registry NAME (and stop using it as the default)."""
    home = _ctx().home
    name = _check_registry_name(name)
    regs = _load_registries(home)
    if name not in regs.registries:
        raise NotFoundError(f"no registry named {name!r}")
    remaining = {k: v for k, v in regs.registries.items() if k != name}
    default = None if regs.default == name else regs.default
    _save_registries(home, _Registries(default=default, registries=remaining))
    if as_json:
        emit_json({"removed": name})
    else:
        click.echo(f"removed registry {name}")


@registry_group.command("list")
@json_option
def registry_list(as_json: bool) -> None:
    """List the named registries; the default is marked with *."""
    home = _ctx().home
    regs = _load_registries(home)
    rows = [
        {"name": name, "url": url, "default": name == regs.default}
        for name, url in sorted(regs.registries.items())
    ]
    if as_json:
        emit_json({"default": regs.default, "registries": rows})
        return
    if not rows:
        click.echo("no registries (add one with `dre registry add NAME URL`)")
    for row in rows:
        mark = "*" if row["default"] else " "
        click.echo(f"{mark} {row['name']:<16} {row['url']}")


def node_target(api: str | None = None) -> tuple[Path, _Target]:
    """The home and the node the CLI talks to (``--api``, the default registry, or the node
    running on the local home)."""
    home = _ctx().home
    return home, _target(home, api)


def local_node_running() -> bool:
    """Whether a node runs on the local home (its api file and live pid)."""
    return read_api_url(_ctx().home) is not None


def fetch_from_network(cid: str) -> dict[str, Any]:
    """Have the local node fetch the DAG under ``cid`` from its peers (verified, pinned)."""
    home, target = node_target()
    result: dict[str, Any] = api_call(home, target, f"/api/v1/fetch/{cid}", method="POST",
                                      timeout=600.0)
    return result


def resolve_on_network(name: str) -> dict[str, Any]:
    """Have the local node find peers that hold ``name`` and sync their records."""
    home, target = node_target()
    result: dict[str, Any] = api_call(home, target, f"/api/v1/resolve/{name}", method="POST",
                                      timeout=120.0)
    return result


api_option = click.option("--api", default=None,
                          help="Node API URL or registry name (default: the local node).")


@registry_group.command("peers")
@api_option
@json_option
def registry_peers(api: str | None, as_json: bool) -> None:
    """Peers the node is connected to."""
    home, target = node_target(api)
    doc = api_call(home, target, "/api/v1/registry/peers")
    if as_json:
        emit_json(doc)
        return
    for peer in doc["peers"]:
        click.echo(peer)


@registry_group.command("federate")
@click.argument("multiaddr")
@api_option
@json_option
def registry_federate(multiaddr: str, api: str | None, as_json: bool) -> None:
    """Connect the node to a peer by address, sync with it, and remember it."""
    home, target = node_target(api)
    doc = api_call(home, target, "/api/v1/registry/federate", method="POST",
                   body={"addr": multiaddr}, timeout=120.0)
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"federated with {doc['peer']}: {doc['received']} new records")


@registry_group.command("sync")
@api_option
@json_option
def registry_sync(api: str | None, as_json: bool) -> None:
    """Reconcile records with every connected peer now."""
    home, target = node_target(api)
    doc = api_call(home, target, "/api/v1/registry/sync", method="POST", timeout=300.0)
    if as_json:
        emit_json(doc)
        return
    for peer, result in doc["peers"].items():
        outcome = result["error"] or f"{result['received']} new records"
        click.echo(f"{peer}: {outcome}")


def register(group: click.Group) -> None:
    """Add `dre node …` and `dre registry …` to the top-level group."""
    group.add_command(node_group)
    group.add_command(registry_group)
