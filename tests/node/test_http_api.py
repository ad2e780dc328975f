"""The node's HTTP API against a real node home in a temporary directory (no socket)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from dre.node.config import NodeConfig
from dre.node.http_api import MAX_PAGE, RAW_BLOCK_TYPE, NodeState, make_app
from dre.protocol.cid import RAW, Block, cid_for
from dre.protocol.keys import PublisherKey
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
ALICE = PublisherKey.from_seed(bytes(range(32)))
NODE = PublisherKey.from_seed(bytes(range(2, 34)))
NOW = 1_790_000_000


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    Repo.init(tmp_path / "home")
    with Repo.open(tmp_path / "home") as opened:
        yield opened


@pytest.fixture
def state(repo: Repo) -> NodeState:
    return NodeState(repo=repo, peer_id=NODE.peer_id, config=NodeConfig(),
                     http_url="http://127.0.0.1:5860")


@pytest.fixture
async def client(state: NodeState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
        yield c


def publish_examples(repo: Repo) -> LocalRegistry:
    registry = LocalRegistry(repo)
    registry.create_scope("@acme", ALICE, now=NOW)
    for doc in ("left-pad.md", "acme-retry-1.0.0.md", "acme-retry-1.1.0.md"):
        registry.publish((EXAMPLES / doc).read_bytes(), ALICE, now=NOW)
    return registry


@pytest.mark.trio
async def test_status_counts_and_identity(client: httpx.AsyncClient, repo: Repo) -> None:
    empty = (await client.get("/api/v1/node/status")).json()
    assert empty["peer_id"] == NODE.peer_id and empty["network"] == "main"
    assert empty["blocks"] == 0 and empty["packages"] == 0 and empty["peers"] == 0
    assert empty["http"] == "http://127.0.0.1:5860" and empty["p2p"] is False
    assert empty["verify"] == "always" and empty["uptime_seconds"] >= 0
    publish_examples(repo)
    full = (await client.get("/api/v1/node/status")).json()
    assert full["packages"] == 2 and full["blocks"] == repo.store.stats().blocks > 0


@pytest.mark.trio
async def test_block_raw_bytes(client: httpx.AsyncClient, repo: Repo) -> None:
    data = b"hello registry\n"
    cid = cid_for(data, RAW)
    repo.store.put(Block(cid, data))
    response = await client.get(f"/api/v1/blocks/{cid}")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == RAW_BLOCK_TYPE
    assert "immutable" in response.headers["cache-control"]


@pytest.mark.trio
async def test_block_errors_are_json_lines(client: httpx.AsyncClient) -> None:
    bad = await client.get("/api/v1/blocks/not-a-cid")
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/json"
    assert bad.json()["error"].startswith("invalid CID 'not-a-cid'")
    missing_cid = cid_for(b"never stored", RAW)
    missing = await client.get(f"/api/v1/blocks/{missing_cid}")
    assert missing.status_code == 404
    assert missing.json() == {"error": f"block {missing_cid} not found"}


@pytest.mark.trio
async def test_package_list_and_paging(client: httpx.AsyncClient, repo: Repo) -> None:
    assert (await client.get("/api/v1/packages")).json() == {"packages": [], "next": None}
    publish_examples(repo)
    assert (await client.get("/api/v1/packages")).json() == {
        "packages": ["@acme/retry", "left-pad"], "next": None,
    }
    first = (await client.get("/api/v1/packages", params={"limit": 1})).json()
    assert first == {"packages": ["@acme/retry"], "next": "@acme/retry"}
    second = (await client.get("/api/v1/packages", params={"limit": 1, "after": first["next"]}))
    assert second.json() == {"packages": ["left-pad"], "next": None}
    for limit in ("0", str(MAX_PAGE + 1), "x"):
        response = await client.get("/api/v1/packages", params={"limit": limit})
        assert response.status_code == 400 and "limit" in response.json()["error"]


@pytest.mark.trio
async def test_scoped_package_in_the_path(client: httpx.AsyncClient, repo: Repo) -> None:
    publish_examples(repo)
    registry = LocalRegistry(repo)
    response = await client.get("/api/v1/packages/@acme/retry")
    assert response.status_code == 200
    doc = response.json()
    assert doc["name"] == "@acme/retry"
    assert [v["version"] for v in doc["versions"]] == ["1.0.0", "1.1.0"]
    _, latest = registry.resolve_version("@acme/retry", None)
    assert doc["latest"]["manifest"] == str(latest)
    assert doc["latest"]["version"] == "1.1.0" and doc["latest"]["publisher"] == ALICE.peer_id
    # The scope's `@` percent-encoded, as some clients send it, is the same package.
    encoded = await client.get("/api/v1/packages/%40acme/retry")
    assert encoded.json() == doc
    plain = (await client.get("/api/v1/packages/left-pad")).json()
    assert plain["latest"]["version"] == "1.3.0"


@pytest.mark.trio
async def test_package_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/packages/@acme/nothing")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no package named '@acme/nothing' on this node"}
    bad = await client.get("/api/v1/packages/Not_A_Name!")
    assert bad.status_code == 400 and "is not a package name" in bad.json()["error"]
    too_deep = await client.get("/api/v1/packages/@a/b/c")
    assert too_deep.status_code == 400


@pytest.mark.trio
async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    nowhere = await client.get("/api/v1/nowhere")
    assert nowhere.status_code == 404 and nowhere.json() == {"error": "no such API route"}
    post = await client.post("/api/v1/node/status", content=b"{}")
    assert post.status_code == 405 and post.json() == {"error": "method not allowed"}

