"""The discovery API: search, categories, similar, recommendations, trending, recent (issue 5).

Routes (all ``GET``, JSON by msgspec, errors ``{"error": "…"}`` through make_app's handlers)::

    /api/v1/search?q=&category=&sort=&mode=&limit=&offset=    -> SearchResult
    /api/v1/categories                                        -> {"categories": [{name, packages}]}
    /api/v1/similar/{name}?limit=                             -> {"name", "hits": [SearchHit]}
    /api/v1/recommendations?based_on=a&based_on=b&limit=      -> {"based_on", "hits"}
    /api/v1/trending?period=day|week|month&limit=             -> {"period", "hits"}
    /api/v1/recent?type=created|updated&limit=                -> {"type", "hits"}

The engine's calls run on a worker thread (a query may embed its text, ~10 ms of CPU), so the
node's event loop keeps serving while one is computed. Query parameters are validated here
(numbers, lengths) and by the engine (:func:`dre.protocol.search.validate_query`); anything
wrong is a 400 with one line.

Federated search plugs in at :func:`_answer_search`: a ``federated=1`` parameter can fan the
parsed :class:`SearchQuery` out to peers and merge with the local result there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from dre.protocol.errors import DreError, ValidationError
from dre.protocol.search import MAX_QUERY_CHARS, SearchHit, SearchQuery, SearchResult
from dre.protocol.search_wire import DEFAULT_DEADLINE, FederatedResult
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .search_protocol import search_with_peers

if TYPE_CHECKING:
    from dre.node.http_api import NodeState

__all__ = ["DEFAULT_LIMIT", "discovery_routes", "parse_search_query"]

DEFAULT_LIMIT = 20
_PREFIX = "/api/v1"
_MAX_PARAM_CHARS = 256
_MAX_INT_CHARS = 6


def _param(request: Request, name: str, default: str | None = None, *,
           max_chars: int = _MAX_PARAM_CHARS, label: str | None = None) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationError(f"give {name} once")
    if not values:
        return default
    if len(values[0]) > max_chars:
        raise ValidationError(f"{label or name} is longer than {max_chars} characters")
    return values[0]


def _int_param(request: Request, name: str, default: int) -> int:
    values = request.query_params.getlist(name)
    if len(values) == 1 and len(values[0]) > _MAX_INT_CHARS:
        raise ValidationError(f"{name} is too large")
    text = _param(request, name, max_chars=_MAX_INT_CHARS)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit():
        raise ValidationError(f"{name} must be a whole number")
    return int(text)


def parse_search_query(request: Request) -> SearchQuery:
    """The :class:`SearchQuery` of ``/api/v1/search``'s parameters (not yet validated)."""
    return SearchQuery(
        text=_param(request, "q", "", max_chars=MAX_QUERY_CHARS, label="query") or "",
        category=_param(request, "category") or None,
        sort=_param(request, "sort", "relevance") or "relevance",
        mode=_param(request, "mode", "hybrid") or "hybrid",
        limit=_int_param(request, "limit", DEFAULT_LIMIT),
        offset=_int_param(request, "offset", 0),
    )


class _Category(msgspec.Struct, frozen=True):
    name: str
    packages: int


def discovery_routes(state: NodeState) -> list[BaseRoute]:
    """The routes of this part of the node's HTTP server."""
    from .http_api import _JSON  # noqa: PLC0415 (http_api imports this module)

    def engine() -> Any:
        if state.search is None:
            raise DreError("the search engine is not running on this node")
        return state.search

    async def run(call: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(call)

    async def _answer_search(request: Request,
                             query: SearchQuery) -> SearchResult | FederatedResult:
        federated = _param(request, "federated", "0")
        if federated not in ("0", "1"):
            raise ValidationError("federated must be 0 or 1")
        if federated == "1":
            # Peers late by the deadline are reported in the answer, never waited for.
            timeout_ms = _int_param(request, "timeout_ms", int(DEFAULT_DEADLINE * 1000))
            return await search_with_peers(state.federation, engine(), query,
                                           timeout=timeout_ms / 1000)
        result: SearchResult = await run(lambda: engine().search(query))
        return result

    async def search(request: Request) -> Response:
        query = parse_search_query(request)
        return _JSON(await _answer_search(request, query))

    async def categories(request: Request) -> Response:
        found = await run(lambda: engine().categories())
        return _JSON({"categories": [_Category(name, count) for name, count in found]})

    async def similar(request: Request) -> Response:
        name = request.path_params["name"]
        if len(name) > _MAX_PARAM_CHARS:
            raise ValidationError(f"name is longer than {_MAX_PARAM_CHARS} characters")
        limit = _int_param(request, "limit", 10)
        hits: list[SearchHit] = await run(lambda: engine().similar(name, limit))
        return _JSON({"name": name, "hits": hits})

    async def recommendations(request: Request) -> Response:
        based_on = request.query_params.getlist("based_on")
        if any(len(n) > _MAX_PARAM_CHARS for n in based_on):
            raise ValidationError(f"based_on names are at most {_MAX_PARAM_CHARS} characters")
        limit = _int_param(request, "limit", 10)
        hits: list[SearchHit] = await run(lambda: engine().recommend(based_on, limit))
        return _JSON({"based_on": based_on, "hits": hits})

    async def trending(request: Request) -> Response:
        period = _param(request, "period", "week") or "week"
        limit = _int_param(request, "limit", 10)
        hits: list[SearchHit] = await run(lambda: engine().trending(period, limit))
        return _JSON({"period": period, "hits": hits})

    async def recent(request: Request) -> Response:
        kind = _param(request, "type", "created") or "created"
        limit = _int_param(request, "limit", 10)
        hits: list[SearchHit] = await run(lambda: engine().recent(kind, limit))
        return _JSON({"type": kind, "hits": hits})

    handlers: list[tuple[str, Callable[[Request], Awaitable[Response]]]] = [
        ("/search", search),
        ("/categories", categories),
        # `:path` so a scoped name's slash (`@acme/retry`) stays part of the name.
        ("/similar/{name:path}", similar),
        ("/recommendations", recommendations),
        ("/trending", trending),
        ("/recent", recent),
    ]
    return [Route(f"{_PREFIX}{path}", handler, methods=["GET"]) for path, handler in handlers]
