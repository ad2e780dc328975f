"""The API in a running node (hypercorn on loopback): a token publishes, signed by the node's
own key; settings come from the home; heavy work leaves the node responsive."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pytest
import trio
from dre.node.config import NodeConfig
from dre.node.identity import node_identity
from dre.node.runtime import Node
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

from .test_api_fixtures import EXAMPLES, NOW, bearer, make_token

HTTP_ONLY = NodeConfig(http="127.0.0.1:0")


def _big_document(lines: int) -> str:
    """A valid document with one large generated file (parsing it takes a while)."""
    body = "\n".join(f"value_{i} = {i}  # a line of generated code" for i in range(lines))
    return ("---\nname: big-doc\nversion: 1.0.0\nlicense: MIT\n---\n\n# big\n\n"
            f"```python file=big.py\n{body}\n```\n")


@pytest.mark.trio
async def test_publish_through_a_running_node(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Repo.init(home)
    key = node_identity(home)  # the key the node runs with, created as it would be
    with Repo.open(home) as repo:
        LocalRegistry(repo).create_scope("@acme", key, now=NOW)
    secret = make_token(home, "publish", scopes=("@acme",))
    (home / "api.json").write_text('{"per_address_rate": 1000, "per_address_burst": 5000}')
    async with trio.open_nursery() as nursery:
        state = await nursery.start(Node(home, HTTP_ONLY, p2p=False).run)
        async with httpx.AsyncClient(base_url=state.http_url, trust_env=False,
                                     timeout=30) as client:
            doc = base64.b64encode((EXAMPLES / "acme-retry-1.0.0.md").read_bytes()).decode()
            response = await client.post("/api/v1/packages", json={"documentation": doc},
                                         headers=bearer(secret))
            assert response.status_code == 201, response.text
            assert response.json()["publisher"] == key.peer_id == state.peer_id
            info = (await client.get("/api/v1/packages/@acme/retry")).json()
            assert info["latest"]["manifest"] == response.json()["manifest"]
            spec = (await client.get("/api/v1/openapi.json")).json()
            assert "/api/v1/packages/{name}/{version}/download" in spec["paths"]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_heavy_work_leaves_the_node_responsive(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home).mkdir()
    Repo.init(home)
    (home / "api.json").write_text('{"per_address_rate": 0}')
    document = _big_document(20_000)
    async with trio.open_nursery() as nursery:
        state = await nursery.start(Node(home, HTTP_ONLY, p2p=False).run)
        async with httpx.AsyncClient(base_url=state.http_url, trust_env=False,
                                     timeout=60) as client:
            heavy_done = trio.Event()
            heavy_seconds: list[float] = []
            status_seconds: list[float] = []

            async def heavy() -> None:
                # Several in a row: long enough to sample on a fast or a busy machine.
                for _ in range(4):
                    started = time.perf_counter()
                    response = await client.post("/api/v1/generate/preview",
                                                 json={"documentation": document})
                    assert response.status_code == 200, response.text
                    heavy_seconds.append(time.perf_counter() - started)
                heavy_done.set()

            async def status() -> None:
                await trio.sleep(0.05)
                while not heavy_done.is_set():
                    started = time.perf_counter()
                    assert (await client.get("/api/v1/node/status")).status_code == 200
                    status_seconds.append(time.perf_counter() - started)
                    await trio.sleep(0.01)

            async with trio.open_nursery() as inner:
                inner.start_soon(heavy)
                inner.start_soon(status)
        nursery.cancel_scope.cancel()
    # Several status requests were answered while the document was being generated, each far
    # faster than the generation itself.
    median_status = sorted(status_seconds)[len(status_seconds) // 2]
    print(f"generate {min(heavy_seconds):.3f} s (x4); status x{len(status_seconds)}, median "
          f"{median_status * 1000:.1f} ms")
    assert len(status_seconds) >= 5
    assert median_status < min(heavy_seconds) / 3
