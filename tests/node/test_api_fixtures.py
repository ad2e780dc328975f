"""Shared fixtures and helpers of the API tests (no tests here): a node home, its app, tokens."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from dre.node.config import NodeConfig
from dre.node.http_api import NodeState, make_app
from dre.node.ratelimit import RateLimits
from dre.protocol.keys import PublisherKey
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo
from dre.storage.tokens import TokenStore

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
NODE = PublisherKey.from_seed(bytes(range(2, 34)))
ALICE = PublisherKey.from_seed(bytes(range(32)))
NOW = 1_790_000_000
#: Limits that never get in the way of a functional test.
UNLIMITED = RateLimits(per_address_rate=0, per_token_rate=0)


def doc_b64(name: str) -> str:
    return base64.b64encode((EXAMPLES / name).read_bytes()).decode()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make_token(home: Path, *rights: str, scopes: tuple[str, ...] = ("@acme",),
               expires: int | None = None) -> str:
    _info, secret = TokenStore(home).create(name="test", rights=rights, scopes=scopes,
                                            now=int(time.time()), expires=expires)
    return secret


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    Repo.init(tmp_path / "home")
    with Repo.open(tmp_path / "home") as opened:
        yield opened


@pytest.fixture
def state(repo: Repo) -> NodeState:
    return NodeState(repo=repo, peer_id=NODE.peer_id, config=NodeConfig(), key=NODE,
                     limits=UNLIMITED)


@pytest.fixture
async def client(state: NodeState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
        yield c


def node_owns_acme(repo: Repo) -> LocalRegistry:
    """The scope @acme created by the node's own key (so API publishes into it are allowed)."""
    registry = LocalRegistry(repo)
    registry.create_scope("@acme", NODE, now=NOW)
    return registry
