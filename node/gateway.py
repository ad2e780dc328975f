"""The IPFS trustless gateway: ``GET /ipfs/{cid}[/path]`` (issue 6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from dre.node.http_api import NodeState


def gateway_routes(state: NodeState) -> list[BaseRoute]:
    """The routes of this part of the node's HTTP server."""
    return []
