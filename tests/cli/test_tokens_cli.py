"""`dre token create|list|revoke` through the real `dre` executable, and a created token used
against the API of the same home."""

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
import trio
from dre.cli.tokens_cli import parse_expiry
from dre.node.config import NodeConfig
from dre.node.http_api import NodeState, make_app
from dre.node.ratelimit import RateLimits
from dre.protocol.errors import ValidationError
from dre.protocol.keys import PublisherKey
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

from .conftest import run_dre

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"


def test_create_prints_the_secret_once_and_stores_its_hash(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_dre(home, "init")
    created = run_dre(home, "token", "create", "--scope", "@acme", "--can", "publish",
                      "--name", "ci", "--expires", "30d")
    secret = created.text.strip()
    assert secret.startswith("dre_") and len(secret.splitlines()) == 1
    assert "shown only now" in created.err
    stored = (home / "tokens.json").read_text()
    assert secret not in stored and hashlib.sha256(secret.encode()).hexdigest() in stored
    assert stat.S_IMODE(os.stat(home / "tokens.json").st_mode) == 0o600

    listed = run_dre(home, "token", "list", "--json").json()
    assert len(listed) == 1 and listed[0]["name"] == "ci"
    assert listed[0]["rights"] == ["publish"] and listed[0]["scopes"] == ["@acme"]
    assert 29 * 86400 < listed[0]["expires"] - listed[0]["created"] <= 30 * 86400
    assert "secret" not in json.dumps(listed) and "sha256" not in listed[0]
    assert "live" in run_dre(home, "token", "list").text

    revoked = run_dre(home, "token", "revoke", listed[0]["id"])
    assert revoked.text.startswith(f"revoked token {listed[0]['id']}")
    assert "revoked" in run_dre(home, "token", "list").text
    again = run_dre(home, "token", "revoke", listed[0]["id"], check=False)
    assert again.code == 1 and again.err.strip() == (
        f"dre: error: token {listed[0]['id']} is already revoked")


@pytest.mark.parametrize(("args", "message"), [
    (["--scope", "acme", "--can", "publish"], "invalid scope 'acme'"),
    (["--scope", "@acme", "--can", "root"], "unknown right 'root'"),
    (["--scope", "@acme"], "Missing option '--can'"),
    (["--scope", "@acme", "--can", "publish", "--expires", "soon"], "invalid --expires"),
    (["--scope", "@acme", "--can", "publish", "--expires", "2001-01-01"], "in the past"),
])
def test_create_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str],
                                              message: str) -> None:
    home = tmp_path / "home"
    run_dre(home, "init")
    result = run_dre(home, "token", "create", *args, check=False)
    assert result.code != 0 and message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (home / "tokens.json").exists()


def test_revoke_unknown_and_no_home(tmp_path: Path) -> None:
    missing = run_dre(tmp_path / "nohome", "token", "list", check=False)
    assert missing.code == 1 and "dre init" in missing.err
    home = tmp_path / "home"
    run_dre(home, "init")
    unknown = run_dre(home, "token", "revoke", "0123456789ab", check=False)
    assert unknown.code == 1 and "no token with id 0123456789ab" in unknown.err
    bad = run_dre(home, "token", "revoke", "../etc", check=False)
    assert bad.code == 1 and "invalid token id" in bad.err


def test_expiry_forms() -> None:
    now = 1_800_000_000
    assert parse_expiry("12h", now) == now + 12 * 3600
    assert parse_expiry("2w", now) == now + 14 * 86400
    assert parse_expiry("2027-01-31", now) == 1_801_353_600
    with pytest.raises(ValidationError):
        parse_expiry("0d", now)


def test_a_cli_token_publishes_through_the_api_until_revoked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_dre(home, "init")
    secret = run_dre(home, "token", "create", "--scope", "@acme", "--can", "publish").text.strip()
    node = PublisherKey.from_seed(bytes(range(2, 34)))
    body = {"documentation": base64.b64encode(
        (EXAMPLES / "acme-retry-1.0.0.md").read_bytes()).decode()}

    async def publish(repo: Repo) -> int:
        state = NodeState(repo=repo, peer_id=node.peer_id, config=NodeConfig(), key=node,
                          limits=RateLimits(per_address_rate=0, per_token_rate=0))
        transport = httpx.ASGITransport(app=make_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            response = await client.post("/api/v1/packages", json=body,
                                         headers={"Authorization": f"Bearer {secret}"})
            return response.status_code

    with Repo.open(home) as repo:
        LocalRegistry(repo).create_scope("@acme", node, now=int(time.time()))
        assert trio.run(publish, repo) == 201
    token_id = secret.split("_")[1]
    run_dre(home, "token", "revoke", token_id)
    with Repo.open(home) as repo:
        assert trio.run(publish, repo) == 401
