"""Access control: tokens (hashed at rest, revoked, expired, wrong scope), scope ownership by
signature, rate limits with Retry-After, body limits, and the audit trail."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from pathlib import Path

import httpx
import pytest
from dre.node.config import NodeConfig
from dre.node.http_api import NodeState, make_app
from dre.node.ratelimit import RateLimiter, RateLimits, load_rate_limits
from dre.protocol.errors import DreError, ValidationError
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo
from dre.storage.tokens import MAX_TOKENS, AuditEntry, AuditTrail, AuthenticationError, TokenStore
from hypothesis import given
from hypothesis import strategies as st

from .test_api_fixtures import (
    ALICE,
    NODE,
    NOW,
    bearer,
    client,
    doc_b64,
    make_token,
    node_owns_acme,
    repo,
    state,
)

#: pytest fixtures used by name below (imported, so this marks them used).
_FIXTURES = (client, repo, state)

RETRY_DOC = "acme-retry-1.0.0.md"
RETRY_TEXT = (Path(__file__).resolve().parents[2] / "specs/examples" / RETRY_DOC).read_text()


def publish_body(doc: str = RETRY_DOC) -> dict[str, str]:
    return {"documentation": doc_b64(doc)}


# -- the token store ----------------------------------------------------------------------------


def test_tokens_are_stored_hashed_and_private(tmp_path: Path) -> None:
    Repo.init(tmp_path)
    store = TokenStore(tmp_path)
    info, secret = store.create(name="ci", rights=["publish"], scopes=["@acme"], now=NOW)
    raw = (tmp_path / "tokens.json").read_bytes()
    assert secret.encode() not in raw and secret.split("_")[2].encode() not in raw
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in raw
    assert stat.S_IMODE(os.stat(tmp_path / "tokens.json").st_mode) == 0o600
    assert store.authenticate(secret, now=NOW).id == info.id
    # Listings never carry the hash.
    assert all(t.sha256 == "0" * 64 for t in store.list())
    # One character off is refused, as is another token's id with this secret.
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    with pytest.raises(AuthenticationError, match="unknown token"):
        store.authenticate(tampered, now=NOW)
    with pytest.raises(AuthenticationError, match="malformed"):
        store.authenticate("Bearer nonsense", now=NOW)


def test_revoked_and_expired_tokens_are_refused(tmp_path: Path) -> None:
    Repo.init(tmp_path)
    store = TokenStore(tmp_path)
    info, secret = store.create(name="a", rights=["publish"], scopes=["*"], now=NOW)
    store.revoke(info.id, now=NOW + 1)
    with pytest.raises(AuthenticationError, match="revoked"):
        store.authenticate(secret, now=NOW + 2)
    with pytest.raises(ValidationError, match="already revoked"):
        store.revoke(info.id, now=NOW + 3)
    _, short = store.create(name="b", rights=["admin"], scopes=["*"], now=NOW, expires=NOW + 10)
    assert store.authenticate(short, now=NOW + 9)
    with pytest.raises(AuthenticationError, match="expired"):
        store.authenticate(short, now=NOW + 10)
    for bad in ({"rights": ["root"], "scopes": ["*"]}, {"rights": ["publish"], "scopes": ["x"]},
                {"rights": [], "scopes": ["*"]}, {"rights": ["publish"], "scopes": []}):
        with pytest.raises(ValidationError):
            store.create(name="c", now=NOW, **bad)  # type: ignore[arg-type]


def test_token_count_is_bounded(tmp_path: Path) -> None:
    Repo.init(tmp_path)
    store = TokenStore(tmp_path)
    ids = [store.create(name="t", rights=["publish"], scopes=["*"], now=NOW)[0].id
           for _ in range(MAX_TOKENS)]
    with pytest.raises(ValidationError, match="live tokens"):
        store.create(name="t", rights=["publish"], scopes=["*"], now=NOW)
    store.revoke(ids[0], now=NOW)
    store.create(name="t", rights=["publish"], scopes=["*"], now=NOW)  # the revoked one goes
    assert len(store.list()) == MAX_TOKENS and ids[0] not in {t.id for t in store.list()}


@given(st.text(max_size=200))
def test_any_header_text_is_refused_cleanly(tmp_path_factory: pytest.TempPathFactory,
                                            text: str) -> None:
    home = tmp_path_factory.mktemp("h")
    with pytest.raises(AuthenticationError):
        TokenStore(home).authenticate(text, now=NOW)


# -- over HTTP -----------------------------------------------------------------------------------


@pytest.mark.trio
async def test_missing_malformed_unknown_tokens_get_401(client: httpx.AsyncClient,
                                                        repo: Repo) -> None:
    node_owns_acme(repo)
    cases = [
        ({}, "needs a token"),
        ({"Authorization": "Basic abc"}, "must be 'Bearer <token>'"),
        ({"Authorization": "Bearer not-a-token"}, "malformed token"),
        (bearer("dre_000000000000_" + "A" * 43), "unknown token"),
    ]
    for headers, message in cases:
        response = await client.post("/api/v1/packages", json=publish_body(), headers=headers)
        assert response.status_code == 401, response.text
        assert message in response.json()["error"]
    assert repo.index.names() == []


@pytest.mark.trio
async def test_revoked_token_refused_by_a_running_app(client: httpx.AsyncClient,
                                                      repo: Repo) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    token_id = secret.split("_")[1]
    TokenStore(repo.home).revoke(token_id, now=int(time.time()))
    response = await client.post("/api/v1/packages", json=publish_body(), headers=bearer(secret))
    assert response.status_code == 401 and "revoked" in response.json()["error"]
    assert repo.index.names() == []


@pytest.mark.trio
async def test_wrong_scope_or_right_gets_403(client: httpx.AsyncClient, repo: Repo) -> None:
    node_owns_acme(repo)
    other_scope = make_token(repo.home, "publish", scopes=("@other",))
    response = await client.post("/api/v1/packages", json=publish_body(),
                                 headers=bearer(other_scope))
    assert response.status_code == 403
    assert "lacks the 'publish' right for @acme" in response.json()["error"]
    # An unscoped name needs scope *.
    unscoped = await client.post("/api/v1/packages", json=publish_body("left-pad.md"),
                                 headers=bearer(other_scope))
    assert unscoped.status_code == 403 and "unscoped" in unscoped.json()["error"]
    # A scopes-only token cannot publish; a publish token cannot read the audit trail.
    scopes_only = make_token(repo.home, "scopes")
    assert (await client.post("/api/v1/packages", json=publish_body(),
                              headers=bearer(scopes_only))).status_code == 403
    audit = await client.get("/api/v1/audit", headers=bearer(other_scope))
    assert audit.status_code == 403 and "admin" in audit.json()["error"]
    assert repo.index.names() == []


@pytest.mark.trio
async def test_scope_not_owned_by_the_node_key_gets_403(client: httpx.AsyncClient,
                                                        repo: Repo) -> None:
    # @acme belongs to Alice: a token may ask, but the node's key may not sign into it.
    LocalRegistry(repo).create_scope("@acme", ALICE, now=NOW)
    secret = make_token(repo.home, "publish")
    response = await client.post("/api/v1/packages", json=publish_body(), headers=bearer(secret))
    assert response.status_code == 403
    assert f"key {NODE.peer_id} is not an owner of @acme" in response.json()["error"]
    assert repo.index.names() == []
    # Once Alice grants the node's key, the same request publishes.
    LocalRegistry(repo).grant("@acme", ALICE, NODE.peer_id, now=NOW + 1)
    granted = await client.post("/api/v1/packages", json=publish_body(), headers=bearer(secret))
    assert granted.status_code == 201


@pytest.mark.trio
async def test_scope_writes(client: httpx.AsyncClient, repo: Repo) -> None:
    secret = make_token(repo.home, "scopes", scopes=("@team",))
    created = await client.post("/api/v1/scopes", json={"scope": "@team"},
                                headers=bearer(secret))
    assert created.status_code == 201 and created.json()["owners"] == [NODE.peer_id]
    again = await client.post("/api/v1/scopes", json={"scope": "@team"}, headers=bearer(secret))
    assert again.status_code == 400 and "already exists" in again.json()["error"]
    elsewhere = await client.post("/api/v1/scopes", json={"scope": "@else"},
                                  headers=bearer(secret))
    assert elsewhere.status_code == 403
    granted = await client.post("/api/v1/scopes/@team/owners", json={"owner": ALICE.peer_id},
                                headers=bearer(secret))
    assert granted.status_code == 200 and granted.json()["owners"] == [NODE.peer_id,
                                                                       ALICE.peer_id]
    bad_peer = await client.post("/api/v1/scopes/@team/owners", json={"owner": "nobody"},
                                 headers=bearer(secret))
    assert bad_peer.status_code == 400
    revoked = await client.delete(f"/api/v1/scopes/@team/owners/{ALICE.peer_id}",
                                  headers=bearer(secret))
    assert revoked.status_code == 200 and revoked.json()["owners"] == [NODE.peer_id]
    assert revoked.json()["version"] == 3


@pytest.mark.trio
async def test_malformed_and_oversized_bodies(client: httpx.AsyncClient, repo: Repo) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    headers = {**bearer(secret), "Content-Type": "application/json"}
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 400, "invalid request body"),
        (b'{"documentation": 5}', 400, "Expected `str`"),
        (b'{"documentation": "%%%"}', 400, "documentation is not base64"),
        (b'{"documentation": "aGk=", "surprise": 1}', 400, "unknown field"),
        (json.dumps({"documentation": base64.b64encode(b"# no front matter\n").decode()})
         .encode(), 400, "line 1"),
        (b"", 400, "needs a JSON body"),
    ]
    for body, status, message in cases:
        response = await client.post("/api/v1/packages", content=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["error"], (body, response.json())
    # Over the route's limit, refused by its Content-Length before the body is read...
    big = b"x" * (2 << 20)
    response = await client.post("/api/v1/scopes", content=big, headers=headers)
    assert response.status_code == 413 and "limit" in response.json()["error"]

    # ...and without one (chunked), while it streams in.
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(64):
            yield b"x" * 65536

    streamed = await client.post("/api/v1/generate/validate", content=chunks(),
                                 headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and "limit" in streamed.json()["error"]
    assert repo.index.names() == []


@pytest.mark.trio
async def test_version_exists_with_other_content_is_409(client: httpx.AsyncClient,
                                                        repo: Repo) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    assert (await client.post("/api/v1/packages", json=publish_body(),
                              headers=bearer(secret))).status_code == 201
    changed = RETRY_TEXT.replace("Retry a flaky call", "Retry any flaky call")
    response = await client.post(
        "/api/v1/packages", headers=bearer(secret),
        json={"documentation": base64.b64encode(changed.encode()).decode()})
    assert response.status_code == 409 and "versions are immutable" in response.json()["error"]
    mismatch = await client.post("/api/v1/packages", headers=bearer(secret),
                                 json={**publish_body(), "version": "2.0.0"})
    assert mismatch.status_code == 400 and "differs from the document" in mismatch.json()["error"]


# -- rate limits ------------------------------------------------------------------------------


def test_token_bucket_refills_and_says_how_long() -> None:
    bucket = RateLimiter(rate=2.0, burst=3.0)
    assert [bucket.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a", 100.0) == pytest.approx(0.5)
    assert bucket.take("b", 100.0) == 0.0  # keys are independent
    assert bucket.take("a", 100.5) == 0.0  # half a second refilled one unit
    assert bucket.take("a", 100.5, cost=3.0) == pytest.approx(1.5)
    assert RateLimiter(rate=0, burst=0).take("a", 0.0) == 0.0  # 0 turns it off
    small = RateLimiter(rate=1.0, burst=1.0, max_buckets=10)
    for i in range(50):
        small.take(str(i), 0.0)
    assert len(small) == 10


def test_limits_file(tmp_path: Path) -> None:
    assert load_rate_limits(tmp_path) == RateLimits()
    (tmp_path / "api.json").write_text('{"per_address_rate": 5, "per_address_burst": 10}')
    assert load_rate_limits(tmp_path).per_address_burst == 10
    (tmp_path / "api.json").write_text('{"per_address_rate": -1}')
    with pytest.raises(DreError, match="per_address_rate"):
        load_rate_limits(tmp_path)
    (tmp_path / "api.json").write_text('{"typo": 1}')
    with pytest.raises(DreError, match="typo"):
        load_rate_limits(tmp_path)


@pytest.mark.trio
async def test_rate_limit_429_with_retry_after(repo: Repo) -> None:
    limits = RateLimits(per_address_rate=0.5, per_address_burst=3, per_token_rate=0.1,
                        per_token_burst=1, heavy_cost=1)
    state = NodeState(repo=repo, peer_id=NODE.peer_id, config=NodeConfig(), key=NODE,
                      limits=limits)
    transport = httpx.ASGITransport(app=make_app(state), client=("192.0.2.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        codes = [(await client.get("/api/v1/node/status")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = await client.get("/api/v1/node/status")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "too many requests" in limited.json()["error"]
    # Another address has its own bucket; one token's bucket is shared by every address.
    secret = make_token(repo.home, "admin", scopes=("*",))
    app = make_app(state)
    first = httpx.ASGITransport(app=app, client=("198.51.100.1", 1))
    second = httpx.ASGITransport(app=app, client=("198.51.100.2", 1))
    async with httpx.AsyncClient(transport=first, base_url="http://node") as one, \
            httpx.AsyncClient(transport=second, base_url="http://node") as two:
        assert (await one.get("/api/v1/audit", headers=bearer(secret))).status_code == 200
        by_token = await two.get("/api/v1/audit", headers=bearer(secret))
        assert by_token.status_code == 429 and "with token" in by_token.json()["error"]
        assert int(by_token.headers["retry-after"]) >= 1


# -- the audit trail ----------------------------------------------------------------------------


@pytest.mark.trio
async def test_every_write_is_audited(client: httpx.AsyncClient, repo: Repo) -> None:
    node_owns_acme(repo)
    publisher = make_token(repo.home, "publish")
    admin = make_token(repo.home, "admin", scopes=("*",))
    assert (await client.post("/api/v1/packages", json=publish_body())).status_code == 401
    ok = await client.post("/api/v1/packages", json=publish_body(), headers=bearer(publisher))
    assert ok.status_code == 201
    denied = await client.post("/api/v1/packages", json=publish_body("left-pad.md"),
                               headers=bearer(publisher))
    assert denied.status_code == 403
    no_token = await client.get("/api/v1/audit")
    assert no_token.status_code == 401
    page = (await client.get("/api/v1/audit", headers=bearer(admin))).json()
    entries = page["entries"]
    writes = [e for e in entries if e["method"] == "POST"]
    assert [e["status"] for e in writes] == [401, 201, 403]
    assert writes[0]["token"] is None and "needs a token" in writes[0]["result"]
    assert writes[1]["token"] == publisher.split("_")[1]
    assert writes[1]["action"] == "publish @acme/retry@1.0.0"
    assert writes[1]["record"] == ok.json()["manifest"] and writes[1]["result"] == "ok"
    assert writes[2]["action"] == "publish left-pad@1.3.0" and writes[2]["address"]
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    # The same write is in the registry's hash-linked log under the same record.
    log = list(LocalRegistry(repo).log())
    assert str(log[-1].record) == writes[1]["record"]
    # Paging.
    first = (await client.get("/api/v1/audit", params={"limit": 1},
                              headers=bearer(admin))).json()
    assert len(first["entries"]) == 1 and first["next"] == first["entries"][0]["seq"]
    rest = (await client.get("/api/v1/audit", params={"after": first["next"]},
                             headers=bearer(admin))).json()
    assert rest["entries"][0]["seq"] == first["next"] + 1


def test_audit_trail_rotates_and_keeps_order(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path, max_bytes=2000)
    for i in range(40):
        trail.record(AuditEntry(seq=0, time=NOW, token=None, address="127.0.0.1",
                                method="POST", path="/api/v1/packages", action=f"a{i}",
                                status=201, result="ok"))
    assert (tmp_path / "audit-http.jsonl").stat().st_size <= 2000
    kept = trail.entries(limit=1000)
    assert kept and kept[-1].action == "a39"
    assert [e.seq for e in kept] == list(range(kept[0].seq, 40))
    # A new process continues the numbering.
    again = AuditTrail(tmp_path, max_bytes=2000)
    written = again.record(AuditEntry(seq=0, time=NOW, token=None, address="x", method="POST",
                                      path="/", action="b", status=200, result="ok"))
    assert written.seq == 40
