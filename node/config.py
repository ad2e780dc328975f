"""Node settings: what ``dre node start`` runs with, persisted in ``<home>/node.json``.

The file is written with the defaults on a node's first start so a person has something to edit;
command-line flags override it for one run and are never written back (a one-off
``--http 127.0.0.1:0`` must not become the node's permanent address).

Defaults, and why:

- libp2p ``listen``: ``/ip4/127.0.0.1/tcp/0`` — loopback and a free port, so a fresh node exposes
  nothing to the network until someone asks for a public address.
- ``http``: ``127.0.0.1:5860`` — loopback only (the API will accept publishes, so it must not be
  reachable from elsewhere by accident); 5860 is unassigned by IANA and close to no popular
  service. Port 0 is allowed (tests, several nodes on one machine): the bound address is written
  to ``<home>/api`` either way, which is how the CLI finds the node.
- ``network``: ``main`` — the name goes into gossip topics and the DHT protocol id, so nodes of
  different networks never mix.
- ``verify``: ``always`` — a node regenerates every package it receives and attests the result;
  attestations from independent nodes are what trust is built on. ``on-demand`` is for small
  machines: verify only when asked (``dre verify``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import multiaddr  # py-libp2p's own multiaddr parser (a dependency of libp2p==0.8.1)
from dre.protocol.errors import DreError, ValidationError
from dre.storage.fsutil import read_json_file, write_atomically

__all__ = [
    "API_FILE",
    "CONFIG_FILE",
    "DEFAULT_HTTP",
    "DEFAULT_LISTEN",
    "DEFAULT_NETWORK",
    "MAX_API_FILE",
    "NODE_CONFIG_VERSION",
    "PID_FILE",
    "NodeConfig",
    "VerifyPolicy",
    "check_bootstrap",
    "check_listen",
    "check_network",
    "load_config",
    "parse_http_address",
    "pid_alive",
    "read_api_url",
    "read_pid",
    "save_config",
]

NODE_CONFIG_VERSION = 1
CONFIG_FILE = "node.json"
DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/0"
DEFAULT_HTTP = "127.0.0.1:5860"
DEFAULT_NETWORK = "main"
#: Run files a running node keeps in its home (see dre.node.runtime); the CLI reads them, and
#: they live here so it can without importing the node's network stack.
PID_FILE = "node.pid"
API_FILE = "api"
#: A URL in the api file is short; anything longer is not ours.
MAX_API_FILE = 1024

#: A node.json is a few hundred bytes; a huge one is not ours and is not read whole.
_MAX_CONFIG_BYTES = 64 * 1024
_MAX_ADDR_CHARS = 512
_MAX_ADDRS = 64
# Lower case, digits and dashes: the name becomes part of topic names and protocol ids. The same
# rule as dre.node.compat.validate_network_name, repeated so the CLI need not import libp2p.
_NETWORK_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

VerifyPolicy = Literal["always", "on-demand"]

_Addr = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_ADDR_CHARS)]


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a node runs. Checked as a whole by :meth:`check` (msgspec checks only the shapes)."""

    version: int = NODE_CONFIG_VERSION
    #: libp2p listen addresses.
    listen: Annotated[tuple[_Addr, ...], msgspec.Meta(max_length=_MAX_ADDRS)] = (DEFAULT_LISTEN,)
    #: Peers to dial on start, each with its ``/p2p/<peer id>``.
    bootstrap: Annotated[tuple[_Addr, ...], msgspec.Meta(max_length=_MAX_ADDRS)] = ()
    #: ``HOST:PORT`` of the HTTP API (``[::1]:PORT`` for IPv6).
    http: _Addr = DEFAULT_HTTP
    network: Annotated[str, msgspec.Meta(min_length=1, max_length=63)] = DEFAULT_NETWORK
    verify: VerifyPolicy = "always"

    def check(self) -> NodeConfig:
        """``self`` if every value is valid, else ValidationError naming the bad one."""
        if self.version != NODE_CONFIG_VERSION:
            raise ValidationError(
                f"node config version {self.version} is not supported "
                f"(this dre reads {NODE_CONFIG_VERSION})"
            )
        for addr in self.listen:
            check_listen(addr)
        for addr in self.bootstrap:
            check_bootstrap(addr)
        parse_http_address(self.http)
        check_network(self.network)
        return self

    def with_overrides(
        self,
        *,
        listen: tuple[str, ...] | None = None,
        bootstrap: tuple[str, ...] | None = None,
        http: str | None = None,
        network: str | None = None,
        verify: VerifyPolicy | None = None,
    ) -> NodeConfig:
        """A copy with the given settings replaced (None or an empty tuple keeps the file's)."""
        changes: dict[str, object] = {}
        if listen:
            changes["listen"] = tuple(listen)
        if bootstrap:
            changes["bootstrap"] = tuple(bootstrap)
        if http is not None:
            changes["http"] = http
        if network is not None:
            changes["network"] = network
        if verify is not None:
            changes["verify"] = verify
        return msgspec.structs.replace(self, **changes).check()


def _parse_multiaddr(text: str, what: str) -> multiaddr.Multiaddr:
    if len(text) > _MAX_ADDR_CHARS:
        raise ValidationError(f"{what} is longer than {_MAX_ADDR_CHARS} characters")
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:  # the parser raises several exception types
        raise ValidationError(f"invalid {what} {text[:100]!r}: {exc}") from None


def check_listen(text: str) -> str:
    """``text`` if it is a multiaddr a node can listen on (no ``/p2p/`` part)."""
    addr = _parse_multiaddr(text, "listen address")
    if "p2p" in {proto.name for proto in addr.protocols()}:
        raise ValidationError(
            f"listen address {text!r} must not name a peer (/p2p/…): a node listens as itself"
        )
    return text


def check_bootstrap(text: str) -> str:
    """``text`` if it is a multiaddr with the peer's ID (``…/p2p/12D3Koo…``)."""
    addr = _parse_multiaddr(text, "bootstrap address")
    # Without the peer ID the Noise handshake cannot tell whether it reached the right peer.
    if "p2p" not in {proto.name for proto in addr.protocols()}:
        raise ValidationError(
            f"bootstrap address {text!r} needs the peer's ID: …/p2p/12D3Koo…"
        )
    return text


def check_network(name: str) -> str:
    """``name`` if it is a valid network name (1 to 63 of a-z 0-9 -, not starting with -)."""
    if not _NETWORK_RE.fullmatch(name):
        raise ValidationError(
            f"invalid network name {name[:70]!r}: use 1 to 63 of a-z 0-9 -, "
            "starting with a letter or digit"
        )
    return name


def parse_http_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as ``(host, port)``; port 0 means any free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or len(port_text) > 5:
        raise ValidationError(f"invalid HTTP address {text[:100]!r}: expected HOST:PORT")
    port = int(port_text)
    if port > 65535:
        raise ValidationError(f"invalid HTTP address {text!r}: port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValidationError(f"invalid HTTP address {text!r}: bad IPv6 address") from None
    elif ":" in host:
        raise ValidationError(f"invalid HTTP address {text!r}: write IPv6 as [ADDRESS]:PORT")
    return host, port


def load_config(home: Path) -> NodeConfig:
    """The node settings in ``<home>/node.json``, or the defaults if there is none."""
    path = home / CONFIG_FILE
    config = read_json_file(path, NodeConfig, max_bytes=_MAX_CONFIG_BYTES, default=NodeConfig())
    try:
        return config.check()
    except ValidationError as exc:
        raise DreError(f"invalid {path}: {exc}") from None


def save_config(home: Path, config: NodeConfig) -> None:
    """Write ``config`` to ``<home>/node.json`` atomically."""
    data = msgspec.json.format(msgspec.json.encode(config.check())) + b"\n"
    write_atomically(home / CONFIG_FILE, lambda fh: fh.write(data))


# -- run files of a running node -------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether a process with ID ``pid`` exists (it may be someone else's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def read_pid(path: Path) -> int | None:
    """The process ID in a pid file, or None if there is none (or it is not a number)."""
    try:
        text = path.read_bytes()[:32].decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def read_api_url(home: Path) -> str | None:
    """The API URL a node running for ``home`` wrote, or None if no node is (known) running."""
    try:
        raw = (home / API_FILE).read_bytes()[: MAX_API_FILE + 1]
    except FileNotFoundError:
        return None
    url = raw.decode("utf-8", "replace").strip()
    if len(raw) > MAX_API_FILE or not url.startswith(("http://", "https://")):
        return None
    pid = read_pid(home / PID_FILE)
    if pid is None or not pid_alive(pid):
        return None  # a crashed node's leftovers
    return url
