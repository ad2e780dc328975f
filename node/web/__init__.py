"""The web package browser and dashboard, server-rendered (issue 6).

``/`` searches and lists packages, ``/packages/NAME`` shows one (documentation, versions,
verification, files, install instructions), ``/dashboard`` the registry's numbers; ``/static/``
serves the stylesheet and the one small script. See :mod:`.pages` for the security headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..metrics import CATCH_ALL_ROUTE
from .pages import STATIC_DIR, SecureHeaders, WebPages

if TYPE_CHECKING:
    from dre.node.http_api import NodeState

__all__ = ["web_routes"]


def web_routes(state: NodeState) -> list[BaseRoute]:
    """The routes of this part of the node's HTTP server."""
    pages = WebPages(state)
    return [
        Route("/", pages.page(pages.browse), methods=["GET", "HEAD"]),
        Route("/dashboard", pages.page(pages.dashboard), methods=["GET", "HEAD"]),
        # `:path` so a scoped name's slash (`@acme/retry`) and `/versions/1.0.0` fit.
        Route("/packages/{name:path}", pages.page(pages.package), methods=["GET", "HEAD"]),
        Mount("/static", app=SecureHeaders(StaticFiles(directory=str(STATIC_DIR))),
              name="static"),
        # Last of all the node's routes: whatever nothing else answered. GET and HEAD only,
        # so another method on a known path still gets its 405 (a partial match).
        Route("/{path:path}", pages.not_found, methods=["GET", "HEAD"], name=CATCH_ALL_ROUTE),
    ]
