"""Issue 6's list in one table: malformed JSON, oversized bodies, invalid CIDs, unknown packages,
missing or wrong tokens, conflicts and rate limits each get their status and a readable line."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from dre.node.config import NodeConfig
from dre.node.http_api import NodeState, make_app
from dre.node.ratelimit import RateLimits
from dre.storage.repo import Repo

from .test_api_fixtures import EXAMPLES, NODE, bearer, doc_b64, make_token, node_owns_acme, repo

_FIXTURES = (repo,)

CHANGED = (EXAMPLES / "acme-retry-1.0.0.md").read_text().replace("flaky", "shaky")


@pytest.mark.trio
async def test_each_error_has_its_status_and_one_line(repo: Repo) -> None:
    node_owns_acme(repo)
    good = make_token(repo.home, "publish")
    other = make_token(repo.home, "publish", scopes=("@other",))
    state = NodeState(repo=repo, peer_id=NODE.peer_id, config=NodeConfig(), key=NODE,
                      limits=RateLimits(per_address_rate=0, per_token_rate=0.01,
                                        per_token_burst=12))
    transport = httpx.ASGITransport(app=make_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        assert (await client.post("/api/v1/packages", headers=bearer(good),
                                  json={"documentation": doc_b64("acme-retry-1.0.0.md")})
                ).status_code == 201
        json_headers = {**bearer(good), "Content-Type": "application/json"}
        cases: list[tuple[str, str, dict[str, Any], int, str]] = [
            ("POST", "/api/v1/packages", {"content": b'{"documentation": ',
                                          "headers": json_headers},
             400, "request body is not valid JSON"),
            ("POST", "/api/v1/packages", {"content": b"x" * (25 << 20), "headers": json_headers},
             413, "over the limit"),
            ("POST", "/api/v1/generate/preview", {"content": b"x" * (4 << 20)},
             413, "over this route's limit"),
            ("GET", "/api/v1/blocks/bafy-not-a-cid", {}, 400, "invalid CID"),
            ("POST", "/api/v1/fetch/zzz", {}, 400, "invalid CID"),
            ("GET", "/api/v1/packages/@acme/unknown", {}, 404, "no package named"),
            ("GET", "/api/v1/packages/left-pad/1.0.0/download", {}, 404, "no package named"),
            ("POST", "/api/v1/packages", {"json": {"documentation": doc_b64("left-pad.md")}},
             401, "needs a token"),
            ("POST", "/api/v1/packages", {"json": {"documentation": doc_b64("left-pad.md")},
                                          "headers": bearer(good[:-2] + "xx")},
             401, "unknown token"),
            ("POST", "/api/v1/packages", {"json": {"documentation": doc_b64(
                "acme-retry-1.1.0.md")}, "headers": bearer(other)},
             403, "lacks the 'publish' right for @acme"),
            ("POST", "/api/v1/packages", {"json": {"documentation": base64.b64encode(
                CHANGED.encode()).decode()}, "headers": bearer(good)},
             409, "already published with other content"),
        ]
        for method, path, kwargs, status, message in cases:
            response = await client.request(method, path, **kwargs)
            assert response.status_code == status, (path, status, response.text)
            assert response.headers.get("content-type") == "application/json", (path, response)
            body = response.json()
            assert list(body) == ["error"] and message in body["error"], (path, body)
            assert "\n" not in body["error"] and "Traceback" not in body["error"]
        # The token's bucket (12, barely refilling) is empty after these requests: 429.
        statuses = []
        for _ in range(12):
            response = await client.get("/api/v1/audit", headers=bearer(good))
            statuses.append(response.status_code)
        assert 429 in statuses
        limited = response
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "too many requests with token" in limited.json()["error"]
    assert repo.index.versions("@acme/retry").keys() == {"1.0.0"}


@pytest.mark.trio
async def test_odd_numbers_in_queries_are_400(repo: Repo) -> None:
    admin = make_token(repo.home, "admin", scopes=("*",))
    state = NodeState(repo=repo, peer_id=NODE.peer_id, config=NodeConfig(), key=NODE,
                      limits=RateLimits(per_address_rate=0, per_token_rate=0))
    transport = httpx.ASGITransport(app=make_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        for value in ("²", "--1", "1e3", "", " 5", "0x10", "9" * 40, "-2"):
            listed = await client.get("/api/v1/packages", params={"limit": value})
            assert listed.status_code == 400 and "limit must be" in listed.json()["error"]
            audit = await client.get("/api/v1/audit", params={"after": value},
                                     headers=bearer(admin))
            assert audit.status_code == 400 and "after must be" in audit.json()["error"]
        # A Content-Length that is not ASCII digits (httpx sends header bytes as given).
        response = await client.post("/api/v1/generate/validate", content=b"{}",
                                     headers={"Content-Length": "\xb2".encode("latin-1")})
        assert response.status_code == 400 and "Content-Length" in response.json()["error"]
