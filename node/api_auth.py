"""Access control of the HTTP API: bearer tokens, rights, rate limits and the audit trail.

Reads are open; a route with a ``right`` needs ``Authorization: Bearer dre_<id>_<secret>`` of a
live token (401 otherwise) that holds that right for the scope concerned (403 otherwise). Every
request to such a route is recorded in the audit trail, refused ones included. Rate limits:
every request takes from its client address's bucket (a pure ASGI middleware, so the gateway and
the web pages are covered too); a request with a token also takes from the token's bucket.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dre.protocol.errors import (
    AuthorizationError,
    DreError,
    IntegrityError,
    NotFoundError,
    ValidationError,
)
from dre.storage.tokens import (
    AuditEntry,
    AuditTrail,
    AuthenticationError,
    TokenInfo,
    TokenStore,
    token_covers,
)
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api_common import (
    ApiRoute,
    ConflictError,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    error_response,
)
from .ratelimit import RateLimiter, RateLimits

__all__ = ["AccessControl", "AddressRateLimit", "client_address", "status_of"]

#: Longest action text kept in the audit trail.
_MAX_ACTION = 300


def status_of(exc: BaseException) -> int:
    """The HTTP status an error is answered with."""
    for kind, status in (
        (ValidationError, 400), (AuthenticationError, 401), (AuthorizationError, 403),
        (NotFoundError, 404), (ConflictError, 409), (PayloadTooLarge, 413), (RateLimited, 429),
        (Unavailable, 503), (IntegrityError, 500),
    ):
        if isinstance(exc, kind):
            return status
    # Any other error raised on purpose is a condition of this node (a part not running, a
    # busy log to retry), not a bug: 503. Only crashes and bad stored data are 500.
    return 503 if isinstance(exc, DreError) else 500


def client_address(scope: Scope) -> str:
    """The client's address as the server saw it (proxies' headers are not trusted)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _declared_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class AddressRateLimit:
    """ASGI middleware for every HTTP request: one token bucket per client address, and the
    app-wide body limit ``max_body`` (413): a declared Content-Length over it is refused before
    anything else, a chunked body as soon as it passes it.

    Routes check their own, smaller limits as they read (:func:`api_common.read_body`).
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter, max_body: int) -> None:
        self.app = app
        self.limiter = limiter
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            wait = self.limiter.take(client_address(scope), time.monotonic())
            if wait > 0:
                response = error_response(
                    429, f"too many requests from this address; retry in {math.ceil(wait)} s",
                    headers=_retry_after(wait))
                await response(scope, receive, send)
                return
            declared = _declared_length(scope)
            if declared is not None and declared > self.max_body:
                response = error_response(
                    413, f"request body of {declared} bytes is over the limit of "
                         f"{self.max_body} bytes")
                await response(scope, receive, send)
                return
            await self.app(scope, self._bounded(receive), send)
            return
        await self.app(scope, receive, send)

    def _bounded(self, receive: Receive) -> Receive:
        # A body without Content-Length (chunked) is counted as it arrives; the exception is
        # raised inside the handler's read, so the app's handler answers it as JSON.
        total = 0

        async def bounded() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_body:
                    raise HTTPException(413, f"request body is over the limit of "
                                             f"{self.max_body} bytes")
            return message

        return bounded


class AccessControl:
    """Tokens, rate limits and the audit trail of one node's API."""

    def __init__(self, tokens: TokenStore, audit: AuditTrail, limits: RateLimits) -> None:
        self.tokens = tokens
        self.audit = audit
        self.limits = limits
        self.by_address = RateLimiter(limits.per_address_rate, limits.per_address_burst)
        self.by_token = RateLimiter(limits.per_token_rate, limits.per_token_burst)

    def authenticate(self, request: Request) -> TokenInfo:
        """The request's live token; AuthenticationError (401) without one."""
        header = request.headers.get("authorization")
        if header is None:
            raise AuthenticationError(
                "this route needs a token: send 'Authorization: Bearer <token>' "
                "(create one with `dre token create`)")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
        return self.tokens.authenticate(secret.strip(), now=int(time.time()))

    @staticmethod
    def require(token: TokenInfo, right: str, scope: str | None, what: str) -> None:
        """Raise AuthorizationError (403) unless ``token`` holds ``right`` for ``scope``."""
        if not token_covers(token, right, scope):
            where = scope if scope is not None else "unscoped names (scope *)"
            raise AuthorizationError(
                f"token {token.id} may not {what}: it lacks the '{right}' right for {where}")

    def serve(self, route: ApiRoute) -> Callable[[Request], Awaitable[Response]]:
        """The Starlette endpoint of ``route``: rate limits, token check, audit, then the
        handler. Errors propagate to the app's handlers (one JSON line with the status)."""
        extra_cost = self.limits.heavy_cost - 1 if route.heavy else 0.0

        async def endpoint(request: Request) -> Response:
            address = client_address(request.scope)
            if extra_cost > 0:
                wait = self.by_address.take(address, time.monotonic(), extra_cost)
                if wait > 0:
                    raise RateLimited(f"too many heavy requests from this address; retry in "
                                      f"{math.ceil(wait)} s", wait)
            if route.right is None:
                return await route.handler(request)
            token: TokenInfo | None = None
            try:
                token = self.authenticate(request)
                # One unit per request: the address bucket already weighs heavy work, the
                # token's counts operations (a CI job publishing 100 packages is not abuse).
                wait = self.by_token.take(token.id, time.monotonic())
                if wait > 0:
                    raise RateLimited(f"too many requests with token {token.id}; retry in "
                                      f"{math.ceil(wait)} s", wait)
                request.state.token = token
                response = await route.handler(request)
            except DreError as exc:
                self._record(request, token, status_of(exc), str(exc))
                raise
            self._record(request, token, response.status_code, "ok")
            return response

        return endpoint

    def _record(self, request: Request, token: TokenInfo | None, status: int,
                result: str) -> None:
        state: Any = request.state
        action = getattr(state, "action", None) or f"{request.method} {request.url.path}"
        self.audit.record(AuditEntry(
            seq=0, time=int(time.time()), token=token.id if token is not None else None,
            address=client_address(request.scope), method=request.method,
            path=request.url.path[:_MAX_ACTION], action=str(action)[:_MAX_ACTION],
            status=status, result=result[:_MAX_ACTION], record=getattr(state, "record", None),
        ))


def rate_limited_response(exc: RateLimited) -> Response:
    """429 with Retry-After for a RateLimited error."""
    return error_response(429, str(exc), headers=_retry_after(exc.retry_after))
