"""What every part of the HTTP API shares: the JSON response, the error statuses, bounded body
reading, heavy work off the event loop, and the route table the OpenAPI document is made from.

Paths with a package name: a scoped name has a slash (``@acme/retry``), so ``{name}`` in a path is
matched by its own convertor (``@scope/name`` or ``name``) rather than by ``[^/]+``, and a
``{version}`` must start with a digit. That keeps ``/packages/@acme/retry/1.0.0/verify`` and
``/packages/@acme/retry/similar`` (discovery) apart without a catch-all.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import trio
from dre.protocol.errors import DreError, ValidationError
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "API_PREFIX",
    "SMALL_BODY",
    "ApiRoute",
    "ConflictError",
    "ErrorBody",
    "JSONResponse",
    "PayloadTooLarge",
    "QueryParam",
    "RateLimited",
    "Unavailable",
    "decode_body",
    "error_response",
    "int_param",
    "read_body",
    "run_heavy",
    "starlette_path",
]

API_PREFIX = "/api/v1"
#: Body limit of routes that take a small JSON object (scopes, grants).
SMALL_BODY = 64 * 1024

T = TypeVar("T")


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error the API answers: one readable line."""

    error: str


class JSONResponse(Response):
    """A response whose content is encoded by msgspec (Structs, dicts, lists)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def error_response(status: int, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    """``{"error": message}`` with ``status``."""
    return JSONResponse(ErrorBody(message), status_code=status, headers=headers)


class ConflictError(DreError):
    """The request is well-formed but conflicts with what is stored (HTTP 409): a version that
    exists with other content, a package tree that is not what its document generates."""


class PayloadTooLarge(DreError):
    """A request body over its route's limit (HTTP 413)."""


class Unavailable(DreError):
    """A part of the node this request needs is not running (HTTP 503)."""


class RateLimited(DreError):
    """Too many requests (HTTP 429); ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- path parameters -----------------------------------------------------------------------------


class _PackageNameConvertor(Convertor[str]):
    # Loose on purpose: the handler runs check_name, so a bad name is a 400 with the rule, not a
    # "no such route" 404.
    regex = r"@[^/]+/[^/]+|[^@/][^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _VersionConvertor(Convertor[str]):
    regex = r"[0-9][^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("dre_package", _PackageNameConvertor())
register_url_convertor("dre_version", _VersionConvertor())
_CONVERTORS = {"name": "dre_package", "version": "dre_version"}


def starlette_path(path: str) -> str:
    """An OpenAPI path template as a Starlette route path (``{name}`` -> ``{name:dre_package}``)."""
    for param, convertor in _CONVERTORS.items():
        path = path.replace(f"{{{param}}}", f"{{{param}:{convertor}}}")
    return path


# -- the route table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryParam:
    """A query parameter, as the OpenAPI document describes it."""

    name: str
    description: str
    schema: dict[str, Any]
    required: bool = False


@dataclass(frozen=True)
class ApiRoute:
    """One operation of the API: how it is served and how the OpenAPI document describes it."""

    method: str
    #: OpenAPI path template (``/api/v1/packages/{name}/{version}``).
    path: str
    handler: Callable[[Request], Awaitable[Response]]
    summary: str
    tag: str
    #: Status -> a msgspec Struct type (JSON), or a media type string for a binary body.
    responses: dict[int, Any]
    #: The JSON body's Struct type, if the operation takes one.
    body: type | None = None
    query: tuple[QueryParam, ...] = ()
    #: The right a bearer token needs (``publish``, ``scopes``, ``admin``); None: open.
    right: str | None = None
    #: Largest request body accepted, checked before it is read.
    body_limit: int = SMALL_BODY
    #: Costs :attr:`RateLimits.heavy_cost` and runs its work in a worker thread.
    heavy: bool = False
    #: Path parameter descriptions (name -> (description, JSON schema)).
    path_params: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    description: str = ""


# -- parameters and bodies ------------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]{1,18}")
_INTEGER = re.compile(r"-?[0-9]{1,18}")


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as an integer in [low, high] (ASCII digits only), else 400."""
    text = request.query_params.get(name)
    if text is None:
        return default
    if not _INTEGER.fullmatch(text) or not low <= int(text) <= high:
        raise ValidationError(f"{name} must be a number from {low} to {high}")
    return int(text)



async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``: by its
    Content-Length before anything is read, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _DIGITS.fullmatch(declared):
            raise ValidationError("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes is over this route's limit "
                                  f"of {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body is over this route's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(raw: bytes, kind: type[T]) -> T:
    """``raw`` decoded as JSON into ``kind``; a 400 line that says what is wrong."""
    if not raw:
        raise ValidationError("the request needs a JSON body")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}") from None


# -- heavy work -----------------------------------------------------------------------------------


async def run_heavy(function: Callable[[], T]) -> T:
    """Run CPU- or disk-heavy work (generate, verify, publish) in a worker thread, so the event
    loop keeps serving other requests meanwhile."""
    return await trio.to_thread.run_sync(function)
