"""The OpenAPI document is made from the route table, and the API conforms to it: schemathesis
generates requests for every operation against the ASGI app in-process and checks that none
gets a 5xx and that every response (status, content type, headers, body) is what the document
says."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import trio
from dre.node import discovery_api
from dre.node.api_common import ApiRoute, ErrorBody, JSONResponse
from dre.node.api_packages import PeersView
from dre.node.config import NodeConfig
from dre.node.http_api import NodeState, api_routes, make_app
from dre.node.ratelimit import RateLimits
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from .test_api_fixtures import EXAMPLES, NODE, NOW, make_token

_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
           response_headers_conformance, response_schema_conformance]


_NETWORK_PATHS = {"/api/v1/registry/peers", "/api/v1/registry/federate", "/api/v1/registry/sync",
                  "/api/v1/fetch/{cid}", "/api/v1/resolve/{name}"}


class _Node:
    def __init__(self, home: Path) -> None:
        Repo.init(home)
        self.repo = Repo.open(home)
        registry = LocalRegistry(self.repo)
        registry.create_scope("@acme", NODE, now=NOW)
        for doc in ("left-pad.md", "acme-retry-1.0.0.md", "acme-retry-1.1.0.md"):
            registry.publish((EXAMPLES / doc).read_bytes(), NODE, now=NOW)
        self.state = NodeState(repo=self.repo, peer_id=NODE.peer_id, config=NodeConfig(),
                               key=NODE, limits=RateLimits(per_address_rate=0,
                                                           per_token_rate=0))
        self.app: Starlette = make_app(self.state)
        self.admin = make_token(home, "admin", scopes=("*",))


@pytest.fixture(scope="module")
def node() -> Iterator[_Node]:
    with tempfile.TemporaryDirectory() as tmp:
        made = _Node(Path(tmp) / "home")
        try:
            yield made
        finally:
            made.repo.close()


def _send(app: Starlette, kwargs: dict[str, Any]) -> httpx.Response:
    """Send a request built by schemathesis to the app, on trio (the node's event loop), with
    httpx's in-process ASGI transport."""
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            content = kwargs.get("data")
            response = await client.request(
                kwargs["method"], kwargs["url"], params=kwargs.get("params"),
                headers=kwargs.get("headers"),
                json=kwargs.get("json"), content=content if content is not None else None)
            await response.aread()
            return response

    return trio.run(go)


def _fuzz(app: Starlette, operation: Any, headers: dict[str, str] | None,
          mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=20, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://node", headers=headers)
        response = _send(app, kwargs)
        checks = _CHECKS
        if response.status_code == 503 and operation.path in _NETWORK_PATHS:
            # This node runs without libp2p: 503 is the documented answer of the network
            # operations, the one 5xx that is not a server error.
            checks = [c for c in _CHECKS if c is not not_a_server_error]
        case.validate_response(response, checks=checks)

    check()


def test_api_conforms_to_its_openapi_document(node: _Node) -> None:
    # Loaded from the app itself, in-process. (schemathesis' own pytest plugin does not run
    # on pytest 9, so each operation's hypothesis strategy is driven here directly.)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", node.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        secured = bool(operation.definition.raw.get("security"))
        headers = {"Authorization": f"Bearer {node.admin}"} if secured else None

        # Valid requests, then invalid ones (wrong types, missing fields, bad parameters) for
        # the operations that take any input.
        raw = operation.definition.raw
        takes_input = bool(raw.get("parameters")) or "requestBody" in raw
        modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if takes_input else [])]
        for mode in modes:
            try:
                _fuzz(node.app, operation, headers, mode)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations >= 20
    assert not failures, "\n\n".join(failures)


def test_document_lists_every_route_with_its_shapes(node: _Node) -> None:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=node.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            return await client.get("/api/v1/openapi.json")

    document = trio.run(get).json()
    assert document["openapi"] == "3.1.0"
    table = api_routes(node.state, None)  # type: ignore[arg-type]
    for route in table:
        assert route.method.lower() in document["paths"][route.path], route.path
    publish = document["paths"]["/api/v1/packages"]["post"]
    assert publish["security"] == [{"bearer": []}]
    assert set(publish["responses"]) >= {"201", "400", "401", "403", "409", "413", "429"}
    assert "Retry-After" in publish["responses"]["429"]["headers"]
    body = publish["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PublishRequest"}
    fields = document["components"]["schemas"]["PublishRequest"]["properties"]
    assert set(fields) == {"documentation", "package", "name", "version", "allow_divergent"}
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    version = document["paths"]["/api/v1/packages/{name}/{version}/download"]["get"]
    assert set(version["responses"]["200"]["content"]) == {"application/gzip",
                                                          "application/vnd.ipld.car"}


def test_discovery_operations_join_the_document(node: _Node,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async def handler(request: Any) -> JSONResponse:
        return JSONResponse(ErrorBody("unused"))

    monkeypatch.setattr(discovery_api, "discovery_operations", lambda state: [
        ApiRoute("GET", "/api/v1/trending", handler, "Trending packages", "discovery",
                 {200: PeersView, 400: None})], raising=False)
    app = make_app(node.state)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            return await client.get("/api/v1/openapi.json")

    document = trio.run(get).json()
    trending = document["paths"]["/api/v1/trending"]["get"]
    assert trending["tags"] == ["discovery"] and set(trending["responses"]) == {"200", "400"}
