"""The node's HTTP API (``/api/v1/…``): a Starlette app over the running node's state.

The app is built by :func:`make_app` from a :class:`NodeState`, so tests serve it with an ASGI
transport and no socket; the runtime serves it with hypercorn inside the node's nursery.

Every answer is JSON encoded by msgspec, errors included (``{"error": "one line"}`` with the
right status), except a block, which is its raw bytes. Bounds: request bodies are capped by
Starlette (``max_body_size``), a block is at most the store's 4 MiB block limit, a package list is
paged (``?limit=&after=``).

Handlers call the LMDB store directly: a read is a memory-mapped lookup of microseconds, cheaper
than a hop to a worker thread. Anything heavy (regeneration, verification) must go through
``trio.to_thread.run_sync`` when it arrives here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import msgspec
import trio
from dre.protocol.cid import parse_cid
from dre.protocol.docformat import check_name
from dre.protocol.errors import DreError, IntegrityError, NotFoundError, ValidationError
from dre.protocol.links import links_of
from dre.protocol.packages import manifest_summary
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .config import NodeConfig
from .discovery_api import discovery_routes
from .gateway import gateway_routes
from .metrics import metrics_routes
from .peers import remember_peer
from .web import web_routes

__all__ = [
    "API_PREFIX",
    "MAX_PAGE",
    "MAX_REQUEST_BODY",
    "RAW_BLOCK_TYPE",
    "NodeState",
    "NodeStatus",
    "make_app",
]

API_PREFIX = "/api/v1"
RAW_BLOCK_TYPE = "application/vnd.ipld.raw"
#: No route takes a body yet; publishing will raise this per route.
MAX_REQUEST_BODY = 1 << 20
#: Largest page of package names one request returns.
MAX_PAGE = 1000


@dataclass
class NodeState:
    """What the API reads of the running node. The runtime fills in what services learn at
    start (addresses, the HTTP URL) and replaces the hooks when the services that know arrive."""

    repo: Repo
    peer_id: str
    config: NodeConfig
    #: libp2p addresses, each ending in ``/p2p/<peer id>``; empty while no host runs.
    addrs: list[str] = field(default_factory=list)
    #: The HTTP API's base URL once bound (``http://127.0.0.1:5860``).
    http_url: str | None = None
    #: Whether a libp2p host runs in this node.
    p2p: bool = False
    #: Connected peers; the libp2p host service replaces this hook.
    peer_count: Callable[[], int] = lambda: 0
    #: The network side of the registry (gossip, DHT, block exchange, sync) once it runs.
    network: Any = None
    #: The search engine (:class:`dre.node.search_engine.SearchEngine`) once it runs.
    search: Any = None
    started: float = field(default_factory=time.monotonic)

    def remember_peer(self, addr: str) -> None:
        """Remember a federated peer in the home, to dial it again at the next start."""
        remember_peer(self.repo.home, addr)


class NodeStatus(msgspec.Struct, frozen=True):
    """``GET /api/v1/node/status``."""

    peer_id: str
    addrs: list[str]
    network: str
    http: str | None
    p2p: bool
    verify: str
    uptime_seconds: float
    blocks: int
    packages: int
    peers: int
    version: str


class _Error(msgspec.Struct, frozen=True):
    error: str


class _VersionRef(msgspec.Struct, frozen=True):
    version: str
    manifest: str


class _PackageList(msgspec.Struct, frozen=True):
    packages: list[str]
    #: Pass as ``?after=`` for the next page; None on the last page.
    next: str | None


class _PackageInfo(msgspec.Struct, frozen=True):
    name: str
    versions: list[_VersionRef]
    latest: dict[str, Any]


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def _error(status: int, message: str) -> _JSON:
    return _JSON(_Error(message), status_code=status)


def _dre_version() -> str:
    try:
        return metadata.version("dre-registry")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_app(state: NodeState) -> Starlette:
    """The API app over ``state``."""
    version = _dre_version()

    async def node_status(request: Request) -> Response:
        # Counting names walks the index; fine at registry sizes of thousands. A counter in the
        # index is the fix if this shows up in a profile.
        return _JSON(
            NodeStatus(
                peer_id=state.peer_id,
                addrs=list(state.addrs),
                network=state.config.network,
                http=state.http_url,
                p2p=state.p2p,
                verify=state.config.verify,
                uptime_seconds=round(time.monotonic() - state.started, 3),
                blocks=state.repo.store.stats().blocks,
                packages=len(state.repo.index.names()),
                peers=state.peer_count(),
                version=version,
            )
        )

    async def get_block(request: Request) -> Response:
        cid = parse_cid(request.path_params["cid"])
        data = state.repo.store.get(cid)
        # Content-addressed: the bytes under a CID never change, so caches may keep them forever.
        return Response(
            data,
            media_type=RAW_BLOCK_TYPE,
            headers={
                "Cache-Control": "public, max-age=29030400, immutable",
                "ETag": f'"{cid}"',
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def list_packages(request: Request) -> Response:
        limit_text = request.query_params.get("limit", str(MAX_PAGE))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise ValidationError(f"limit must be a number from 1 to {MAX_PAGE}")
        limit = int(limit_text)
        after = request.query_params.get("after")
        names = state.repo.index.names()
        if after is not None:
            names = [n for n in names if n > after]
        page = names[:limit]
        more = len(names) > limit
        return _JSON(_PackageList(packages=page, next=page[-1] if more else None))

    async def get_package(request: Request) -> Response:
        name = request.path_params["name"]
        check_name(name)
        registry = LocalRegistry(state.repo)
        versions = registry.versions(name)
        if not versions:
            raise NotFoundError(f"no package named {name!r} on this node")
        _, latest_cid = versions[-1]
        manifest = registry.manifest(latest_cid)
        return _JSON(
            _PackageInfo(
                name=name,
                versions=[_VersionRef(v, str(c)) for v, c in versions],
                latest={"manifest": str(latest_cid), **manifest_summary(manifest)},
            )
        )

    def _network() -> Any:
        if state.network is None:
            raise DreError("this node runs without libp2p (started with networking off)")
        return state.network

    async def _json_body(request: Request) -> dict[str, Any]:
        body = await request.body()
        try:
            value = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError as exc:
            raise ValidationError(f"request body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValidationError("request body must be a JSON object")
        return value

    async def list_peers(request: Request) -> Response:
        network = _network()
        peers = network.handle.connected_peers() if network.handle else []
        return _JSON({"peers": sorted(peers), "stats": network.stats})

    async def federate(request: Request) -> Response:
        body = await _json_body(request)
        addr = body.get("addr")
        if not isinstance(addr, str) or not addr or len(addr) > 1024:
            raise ValidationError("give the peer's multiaddr as {\"addr\": \"/ip4/.../p2p/...\"}")
        network = _network()
        peer = await network.handle.connect(addr)
        summary = await network.sync.sync_with(peer)
        state.remember_peer(addr)
        return _JSON({"peer": peer, "received": summary.received})

    async def sync_now(request: Request) -> Response:
        network = _network()
        results = {}
        for peer in sorted(network.handle.connected_peers()):
            try:
                summary = await network.sync.sync_with(peer)
                results[peer] = {"received": summary.received, "error": None}
            except DreError as exc:
                results[peer] = {"received": 0, "error": str(exc)}
        return _JSON({"peers": results})

    async def fetch(request: Request) -> Response:
        cid = parse_cid(request.path_params["cid"])
        network = _network()
        fetched = await network.fetch(cid)
        await trio.to_thread.run_sync(
            lambda: state.repo.store.pin_add(cid, recursive=True, links_of=links_of))
        return _JSON({"cid": str(cid), "fetched_blocks": fetched})

    async def resolve(request: Request) -> Response:
        name = request.path_params["name"]
        check_name(name)
        received = await _network().resolve_name(name)
        versions = LocalRegistry(state.repo).versions(name)
        if not versions:
            raise NotFoundError(f"no peer in the network announced {name!r}")
        return _JSON({"name": name, "received": received,
                      "versions": [_VersionRef(v, str(c)) for v, c in versions]})

    async def on_dre_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ValidationError):
            return _error(400, str(exc))
        if isinstance(exc, NotFoundError):
            return _error(404, str(exc))
        if isinstance(exc, IntegrityError):
            # Our own store returned bad data: the server is at fault, not the request.
            return _error(500, f"store integrity error: {exc}")
        return _error(500, str(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "no such API route", 405: "method not allowed"}.get(
            exc.status_code, str(exc.detail)
        )
        return _JSON(_Error(message), status_code=exc.status_code, headers=exc.headers)

    async def on_crash(request: Request, exc: Exception) -> Response:
        # Starlette logs the traceback; the client gets a line, not our internals.
        return _error(500, "internal error")

    routes = [
        Route(f"{API_PREFIX}/node/status", node_status, methods=["GET"]),
        Route(f"{API_PREFIX}/blocks/{{cid}}", get_block, methods=["GET"]),
        Route(f"{API_PREFIX}/packages", list_packages, methods=["GET"]),
        # `:path` so a scoped name's slash (`@acme/retry`) stays part of the name.
        Route(f"{API_PREFIX}/packages/{{name:path}}", get_package, methods=["GET"]),
        Route(f"{API_PREFIX}/registry/peers", list_peers, methods=["GET"]),
        Route(f"{API_PREFIX}/registry/federate", federate, methods=["POST"]),
        Route(f"{API_PREFIX}/registry/sync", sync_now, methods=["POST"]),
        Route(f"{API_PREFIX}/fetch/{{cid}}", fetch, methods=["POST"]),
        Route(f"{API_PREFIX}/resolve/{{name:path}}", resolve, methods=["POST"]),
    ]
    # Order matters: the API's routes first, then the IPFS gateway (`/ipfs/…`), the Prometheus
    # endpoint, and last the web pages (their `/…` paths are the catch-all).
    routes += discovery_routes(state)
    routes += gateway_routes(state)
    routes += metrics_routes(state)
    routes += web_routes(state)
    return Starlette(
        routes=routes,
        exception_handlers={
            DreError: on_dre_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
        max_body_size=MAX_REQUEST_BODY,
    )
