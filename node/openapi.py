"""The OpenAPI 3.1 document of the node's API, made from the route table and the msgspec Structs
each operation takes and answers (``msgspec.json.schema_components``), never written by hand: a
route added to the table is in the document, and a field added to a Struct is in its schema.

Served at ``GET /api/v1/openapi.json``; schemathesis tests the API against it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from .api_common import ApiRoute, ErrorBody

__all__ = ["OPENAPI_VERSION", "openapi_document"]

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{name}"
_PARAM_RE = re.compile(r"\{([a-z_]+)\}")

_STATUS_TEXT = {
    200: "OK", 201: "Created", 400: "Bad request: malformed JSON, a bad document, an invalid "
    "name, version or CID", 401: "Missing, unknown, expired or revoked token",
    403: "The token lacks the right, or this node's key may not do it (scope not owned)",
    404: "No such package, version, scope, block or route", 409: "Conflicts with what is "
    "stored: the version exists with other content, or the tree diverges from its document",
    413: "Request body over this route's limit", 429: "Rate limited: see Retry-After",
    500: "Internal error", 503: "The part of the node this needs is not running",
}


def _operation_id(route: ApiRoute) -> str:
    words = re.sub(r"[{}]", "", route.path.removeprefix("/api/v1/")).replace(".", "_")
    return route.method.lower() + "_" + re.sub(r"[^a-zA-Z0-9]+", "_", words).strip("_")


def _content(kind: Any, schemas: dict[type, dict[str, Any]]) -> dict[str, Any]:
    if isinstance(kind, tuple):  # media types of a binary or text body
        return {media: {"schema": {}} for media in kind}
    return {"application/json": {"schema": schemas[kind]}}


def openapi_document(routes: Sequence[ApiRoute], *, version: str) -> dict[str, Any]:
    """The OpenAPI document describing ``routes``."""
    types: list[type] = [ErrorBody]
    for route in routes:
        if route.body is not None:
            types.append(route.body)
        types.extend(k for k in route.responses.values() if isinstance(k, type))
    unique = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(unique, ref_template=_REF)
    schemas = dict(zip(unique, refs, strict=True))
    error = {"application/json": {"schema": schemas[ErrorBody]}}

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        parameters: list[dict[str, Any]] = []
        for name in _PARAM_RE.findall(route.path):
            description, schema = route.path_params.get(name, (name, {"type": "string"}))
            parameters.append({"name": name, "in": "path", "required": True,
                               "description": description, "schema": schema})
        for query in route.query:
            parameters.append({"name": query.name, "in": "query", "required": query.required,
                               "description": query.description, "schema": query.schema})
        responses: dict[str, Any] = {}
        for status, kind in sorted(route.responses.items()):
            entry: dict[str, Any] = {"description": _STATUS_TEXT.get(status, str(status))}
            entry["content"] = error if kind is None else _content(kind, schemas)
            if status == 429:
                entry["headers"] = {"Retry-After": {
                    "description": "Seconds to wait", "schema": {"type": "integer"}}}
            responses[str(status)] = entry
        operation: dict[str, Any] = {
            "operationId": _operation_id(route),
            "summary": route.summary,
            "tags": [route.tag],
            "parameters": parameters,
            "responses": responses,
        }
        if route.description:
            operation["description"] = route.description
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schemas[route.body]}},
                "description": f"JSON, at most {route.body_limit} bytes",
            }
        if route.right is not None:
            operation["security"] = [{"bearer": []}]
            operation["x-dre-right"] = route.right
        paths.setdefault(route.path, {})[route.method.lower()] = operation

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "DRE Registry node API",
            "version": version,
            "description": (
                "Packages generated from documentation, content-addressed (IPFS CIDs). Reads are "
                "open; writes need `Authorization: Bearer <token>` (`dre token create`). A "
                "package name in a path keeps its slash: `/api/v1/packages/@acme/retry/1.0.0`. "
                "Every error is `{\"error\": \"one line\"}`."),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "dre_<id>_<secret>"}},
        },
    }
