"""The node's HTTP API (``/api/v1/…``): a Starlette app over the running node's state.

The app is built by :func:`make_app` from a :class:`NodeState`, so tests serve it with an ASGI
transport and no socket; the runtime serves it with hypercorn inside the node's nursery.

Every operation is an :class:`~dre.node.api_common.ApiRoute` in one table, from which both the
Starlette routes and the OpenAPI document (``/api/v1/openapi.json``) are made. Every answer is
JSON encoded by msgspec, errors included (``{"error": "one line"}`` with the right status),
except blocks, downloads and documents, which are their bytes. Bounds: each route has its own
body limit, checked before the body is read (413); lists are paged (``?limit=&after=``); every
client address and every token has a rate limit (429 with ``Retry-After``). Writes need a bearer
token (:mod:`dre.node.api_auth`) and are recorded in the audit trail.

Handlers call the LMDB store directly for lookups: a read is a memory-mapped lookup of
microseconds, cheaper than a hop to a worker thread. Anything heavy (generation, verification,
publishing, archives) goes through ``trio.to_thread.run_sync`` (:func:`api_common.run_heavy`).
The routes and their shapes are described in ``specs/http-api.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import msgspec
import trio
from dre.protocol.cid import cid_text, parse_cid
from dre.protocol.docformat import check_name
from dre.protocol.errors import DreError, NotFoundError, ValidationError
from dre.protocol.keys import PublisherKey
from dre.protocol.links import links_of
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo
from dre.storage.tokens import AuditTrail, TokenStore
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import discovery_api
from .api_auth import AccessControl, AddressRateLimit, rate_limited_response, status_of
from .api_common import (
    API_PREFIX,
    ApiRoute,
    ErrorBody,
    JSONResponse,
    QueryParam,
    RateLimited,
    Unavailable,
    decode_body,
    error_response,
    int_param,
    read_body,
    starlette_path,
)
from .api_generation import generation_routes
from .api_packages import VersionRef, package_routes
from .config import NodeConfig
from .discovery_api import discovery_routes
from .gateway import gateway_routes
from .metrics import RequestMetrics, metrics_routes
from .openapi import openapi_document
from .peers import remember_peer
from .ratelimit import RateLimits, load_rate_limits
from .web import web_routes

__all__ = [
    "API_PREFIX",
    "MAX_PAGE",
    "MAX_REQUEST_BODY",
    "RAW_BLOCK_TYPE",
    "NodeState",
    "NodeStatus",
    "api_routes",
    "make_app",
]

RAW_BLOCK_TYPE = "application/vnd.ipld.raw"
#: Floor of the app-wide body backstop (the largest route limit wins; see make_app).
MAX_REQUEST_BODY = 1 << 20
#: Largest page of package names one request returns.
MAX_PAGE = 1000

#: Kept for the modules that import it from here.
_JSON = JSONResponse
_Error = ErrorBody


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
    #: Federated search (:class:`dre.node.search_protocol.SearchService`) while libp2p runs.
    federation: Any = None
    started: float = field(default_factory=time.monotonic)
    #: The node's signing key (API publishes, scope changes, attestations); loaded from the
    #: home (``keys/node.key``, the node's identity) on first use when None.
    key: PublisherKey | None = None
    #: Rate limits; None reads ``<home>/api.json`` (defaults when absent) when the app is made.
    limits: RateLimits | None = None

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


class _PackageList(msgspec.Struct, frozen=True):
    packages: list[str]
    #: Pass as ``?after=`` for the next page; None on the last page.
    next: str | None


class PeerList(msgspec.Struct, frozen=True):
    """``GET /api/v1/registry/peers``."""

    peers: list[str]
    stats: dict[str, Any]


class FederateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /api/v1/registry/federate``."""

    addr: str


class Federated(msgspec.Struct, frozen=True):
    """A peer connected and synced."""

    peer: str
    received: int


class PeerSync(msgspec.Struct, frozen=True):
    """One peer's result of a sync round."""

    received: int
    error: str | None


class SyncRound(msgspec.Struct, frozen=True):
    """``POST /api/v1/registry/sync``."""

    peers: dict[str, PeerSync]


class Fetched(msgspec.Struct, frozen=True):
    """``POST /api/v1/fetch/{cid}``."""

    cid: str
    fetched_blocks: int


class Resolved(msgspec.Struct, frozen=True):
    """``POST /api/v1/resolve/{name}``."""

    name: str
    received: int
    versions: list[VersionRef]


def _dre_version() -> str:
    try:
        return metadata.version("dre-registry")
    except metadata.PackageNotFoundError:
        return "unknown"


def _node_routes(state: NodeState, version: str) -> list[ApiRoute]:
    """Node status, blocks, the package list and the network operations."""

    async def node_status(request: Request) -> Response:
        # Counting names walks the index; fine at registry sizes of thousands. A counter in the
        # index is the fix if this shows up in a profile.
        return JSONResponse(
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
                "ETag": f'"{cid_text(cid)}"',
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def list_packages(request: Request) -> Response:
        limit = int_param(request, "limit", MAX_PAGE, 1, MAX_PAGE)
        after = request.query_params.get("after")
        names = state.repo.index.names()
        if after is not None:
            names = [n for n in names if n > after]
        page = names[:limit]
        more = len(names) > limit
        return JSONResponse(_PackageList(packages=page, next=page[-1] if more else None))

    def _network() -> Any:
        if state.network is None:
            raise Unavailable("this node runs without libp2p (started with networking off)")
        return state.network

    async def list_peers(request: Request) -> Response:
        network = _network()
        peers = network.handle.connected_peers() if network.handle else []
        return JSONResponse(PeerList(peers=sorted(peers), stats=dict(network.stats)))

    async def federate(request: Request) -> Response:
        body = decode_body(await read_body(request, 4096), FederateRequest)
        if not body.addr or len(body.addr) > 1024:
            raise ValidationError("give the peer's multiaddr as {\"addr\": \"/ip4/.../p2p/...\"}")
        network = _network()
        peer = await network.handle.connect(body.addr)
        summary = await network.sync.sync_with(peer)
        state.remember_peer(body.addr)
        return JSONResponse(Federated(peer=peer, received=summary.received))

    async def sync_now(request: Request) -> Response:
        network = _network()
        results = {}
        for peer in sorted(network.handle.connected_peers()):
            try:
                summary = await network.sync.sync_with(peer)
                results[peer] = PeerSync(received=summary.received, error=None)
            except DreError as exc:
                results[peer] = PeerSync(received=0, error=str(exc))
        return JSONResponse(SyncRound(peers=results))

    async def fetch(request: Request) -> Response:
        cid = parse_cid(request.path_params["cid"])
        network = _network()
        fetched = await network.fetch(cid)
        await trio.to_thread.run_sync(
            lambda: state.repo.store.pin_add(cid, recursive=True, links_of=links_of))
        return JSONResponse(Fetched(cid=str(cid), fetched_blocks=fetched))

    async def resolve(request: Request) -> Response:
        name = request.path_params["name"]
        check_name(name)
        received = await _network().resolve_name(name)
        versions = LocalRegistry(state.repo).versions(name)
        if not versions:
            raise NotFoundError(f"no peer in the network announced {name!r}")
        return JSONResponse(Resolved(name=name, received=received,
                                     versions=[VersionRef(v, str(c)) for v, c in versions]))

    cid_param = {"cid": ("A CID (v0 or v1, any multibase)",
                         {"type": "string", "minLength": 1, "maxLength": 256})}
    name_param = {"name": ("Package name: `name` or `@scope/name`",
                           {"type": "string", "minLength": 1, "maxLength": 214})}
    net_errors: dict[int, Any] = {400: None, 404: None, 429: None, 503: None}
    return [
        ApiRoute("GET", f"{API_PREFIX}/node/status", node_status, "The node's status", "node",
                 {200: NodeStatus, 429: None}),
        ApiRoute("GET", f"{API_PREFIX}/blocks/{{cid}}", get_block, "One raw block by CID",
                 "node", {200: (RAW_BLOCK_TYPE,), 400: None, 404: None, 429: None},
                 path_params=cid_param),
        ApiRoute("GET", f"{API_PREFIX}/packages", list_packages, "Package names, paged",
                 "packages", {200: _PackageList, 400: None, 429: None},
                 query=(QueryParam("limit", f"At most this many (1 to {MAX_PAGE})",
                                   {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
                        QueryParam("after", "Names after this one (the previous page's next)",
                                   {"type": "string", "maxLength": 214}))),
        ApiRoute("GET", f"{API_PREFIX}/registry/peers", list_peers, "Connected peers and "
                 "network counters", "node", {200: PeerList, 429: None, 503: None}),
        ApiRoute("POST", f"{API_PREFIX}/registry/federate", federate,
                 "Connect to a peer, sync, remember it", "node",
                 {200: Federated, **net_errors}, body=FederateRequest, body_limit=4096),
        ApiRoute("POST", f"{API_PREFIX}/registry/sync", sync_now, "Sync with every peer now",
                 "node", {200: SyncRound, 429: None, 503: None}),
        ApiRoute("POST", f"{API_PREFIX}/fetch/{{cid}}", fetch,
                 "Fetch a DAG from the network and pin it", "node",
                 {200: Fetched, **net_errors}, path_params=cid_param),
        ApiRoute("POST", f"{API_PREFIX}/resolve/{{name}}", resolve,
                 "Find a package by name on the network", "node",
                 {200: Resolved, **net_errors}, path_params=name_param),
    ]


def api_routes(state: NodeState, access: AccessControl) -> list[ApiRoute]:
    """Every operation of this node's ``/api/v1`` (the discovery API's are added by
    :func:`make_app` when its module publishes a table)."""
    version = _dre_version()
    return [*_node_routes(state, version), *package_routes(state, access),
            *generation_routes()]


async def _not_a_package_path(request: Request) -> Response:
    # After every package route (and the discovery API's `/packages/{name}/similar`): a path
    # that none of them took. A bad name is the likely cause, and says so (400).
    check_name(request.path_params["rest"])
    raise HTTPException(404)


def make_app(state: NodeState) -> Starlette:
    """The API app over ``state``."""
    home = state.repo.home
    limits = state.limits if state.limits is not None else load_rate_limits(home)
    access = AccessControl(TokenStore(home), AuditTrail(home), limits)
    table = api_routes(state, access)
    max_body = max(MAX_REQUEST_BODY, *(r.body_limit for r in table))
    # The discovery module may publish its operations (a list of ApiRoute) for the document.
    discovery_table = getattr(discovery_api, "discovery_operations", None)
    documented = [*table, *(discovery_table(state) if callable(discovery_table) else [])]
    document = msgspec.json.encode(openapi_document(documented, version=_dre_version()))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def on_dre_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DreError)
        if isinstance(exc, RateLimited):
            return rate_limited_response(exc)
        status = status_of(exc)
        message = f"store integrity error: {exc}" if status == 500 else str(exc)
        return error_response(status, message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "no such API route", 405: "method not allowed"}.get(
            exc.status_code, str(exc.detail))
        return JSONResponse(ErrorBody(message), status_code=exc.status_code,
                            headers=exc.headers)

    async def on_crash(request: Request, exc: Exception) -> Response:
        # Starlette logs the traceback; the client gets a line, not our internals.
        return error_response(500, "internal error")

    routes: list[BaseRoute] = [
        Route(f"{API_PREFIX}/openapi.json", openapi, methods=["GET"]),
    ]
    # Each route's own body limit is checked by its handler as it reads (a JSON 413 line);
    # the app-wide limit (AddressRateLimit's max_body) only backstops the largest of them.
    routes += [Route(starlette_path(r.path), access.serve(r), methods=[r.method])
               for r in table]
    # Order matters: the API's routes first, then the IPFS gateway (`/ipfs/…`), the Prometheus
    # endpoint, and last the web pages (their `/…` paths are the catch-all).
    routes += discovery_routes(state)
    routes.append(Route(f"{API_PREFIX}/packages/{{rest:path}}", _not_a_package_path,
                        methods=["GET", "POST", "DELETE"]))
    routes += gateway_routes(state)
    routes += metrics_routes(state)
    routes += web_routes(state)
    return Starlette(
        routes=routes,
        # Metrics first, so answers of the rate limiter (429, 413) are counted too.
        middleware=[Middleware(RequestMetrics, state=state),
                    Middleware(AddressRateLimit, limiter=access.by_address,
                               max_body=max_body)],
        exception_handlers={
            DreError: on_dre_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
        # No Starlette max_body_size: its 413 is plain text; AddressRateLimit enforces
        # max_body with a JSON answer.
    )
