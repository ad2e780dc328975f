"""Generation API: generate, preview and validate a posted document; nothing is stored."""

from __future__ import annotations

import base64

import httpx
import pytest
from dre.protocol.generator import generate
from dre.protocol.packages import build_file, build_tree
from dre.storage.repo import Repo

from .test_api_fixtures import EXAMPLES, client, repo, state

#: pytest fixtures used by name below (imported, so this marks them used).
_FIXTURES = (client, repo, state)

DOC = (EXAMPLES / "acme-retry-1.0.0.md").read_text()


@pytest.mark.trio
async def test_generate_gives_every_file(client: httpx.AsyncClient, repo: Repo) -> None:
    blocks_before = repo.store.stats().blocks
    response = await client.post("/api/v1/generate", json={"documentation": DOC})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = generate(DOC)
    tree = build_tree(expected.files)
    assert body["root"] == str(tree.root) and body["name"] == "@acme/retry"
    assert body["doc"] == str(build_file(DOC.encode()).root)
    assert {f["path"]: base64.b64decode(f["content"]) for f in body["files"]} == expected.files
    assert all(f["cid"] == str(tree.paths[f["path"]]) for f in body["files"])
    assert repo.store.stats().blocks == blocks_before  # nothing stored


@pytest.mark.trio
async def test_preview_lists_without_content(client: httpx.AsyncClient) -> None:
    body = (await client.post("/api/v1/generate/preview", json={"documentation": DOC})).json()
    assert body["version"] == "1.0.0" and body["template"] == "python-library"
    assert all(set(f) == {"path", "size", "cid"} for f in body["files"])
    assert body["total_bytes"] == sum(f["size"] for f in body["files"])


@pytest.mark.trio
async def test_options_must_agree_with_the_document(client: httpx.AsyncClient) -> None:
    same = await client.post("/api/v1/generate", json={
        "documentation": DOC, "options": {"packageName": "@acme/retry", "version": "1.0.0"}})
    assert same.status_code == 200
    other = await client.post("/api/v1/generate", json={
        "documentation": DOC, "options": {"packageName": "@dre/generated"}})
    assert other.status_code == 400
    assert "options.packageName is '@dre/generated'" in other.json()["error"]


@pytest.mark.trio
async def test_validate_reports_every_problem(client: httpx.AsyncClient) -> None:
    ok = (await client.post("/api/v1/generate/validate", json={"documentation": DOC})).json()
    assert ok == {"valid": True, "diagnostics": []}
    broken = DOC.replace("license: Apache-2.0", "license: Not-A-License").replace(
        "version: 1.0.0", "version: one")
    response = await client.post("/api/v1/generate/validate", json={"documentation": broken})
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False
    errors = [d for d in body["diagnostics"] if d["severity"] == "error"]
    assert len(errors) >= 2 and all(d["line"] >= 1 for d in errors)
    # generate refuses the same document with its first error, as a 400 line.
    refused = await client.post("/api/v1/generate", json={"documentation": broken})
    assert refused.status_code == 400 and refused.json()["error"].startswith("line ")


@pytest.mark.trio
async def test_generation_input_errors(client: httpx.AsyncClient) -> None:
    for body, message in ((b"{", "not valid JSON"), (b'{"doc": "x"}', "invalid request body"),
                          (b'{"documentation": "x", "options": {"colour": 1}}', "unknown field")):
        response = await client.post("/api/v1/generate/preview", content=body,
                                     headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and message in response.json()["error"]
    huge = {"documentation": "a" * (1_048_577)}
    response = await client.post("/api/v1/generate/validate", json=huge)
    assert response.status_code == 400 and "larger than" in response.json()["error"]
