"""The discovery API: search, categories, similar, recommendations, trending, recent (issue 5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from dre.node.http_api import NodeState


def discovery_routes(state: NodeState) -> list[BaseRoute]:
    """The routes of this part of the node's HTTP server."""
    return []
