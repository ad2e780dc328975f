"""`dre node start|status` as real processes, and `dre registry` targets."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Runner, run_dre, start_node, stop_node


@pytest.fixture
def node(home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `dre node start` on a free HTTP port; yields once its api file appears."""
    proc = start_node(home)
    try:
        yield proc
    finally:
        stop_node(proc)


def test_start_status_and_sigterm(node: subprocess.Popen[bytes], dre: Runner,
                                  home: Path) -> None:
    api = (home / "api").read_text().strip()
    assert api.startswith("http://127.0.0.1:")
    status = dre("node", "status", "--json").json()
    assert status["http"] == api and status["network"] == "main"
    assert status["peer_id"].startswith("12D3KooW")
    # The node's identity is the keystore key "node", usable to sign publishes.
    assert dre("key", "export", "node").text.strip() == status["peer_id"]
    human = dre("node", "status").text
    assert status["peer_id"] in human and api in human
    # Through --api with the URL itself, too.
    assert dre("node", "status", "--json", "--api", api).json()["peer_id"] == status["peer_id"]

    node.send_signal(signal.SIGTERM)
    out, err = node.communicate(timeout=10)
    assert node.returncode == 0, err
    text = out.decode()
    assert f"peer ID  {status['peer_id']}" in text and f"HTTP API {api}/api/v1" in text
    assert f"web page {api}/\n" in text
    assert "stopped" in text
    assert not (home / "api").exists() and not (home / "node.pid").exists()

    gone = dre("node", "status", check=False)
    assert gone.code == 1 and gone.out == b""
    assert gone.err == (
        f"dre: error: no node is running for {home} (start one with `dre node start`)\n"
    )


def test_sigint_stops_too(node: subprocess.Popen[bytes]) -> None:
    node.send_signal(signal.SIGINT)
    assert node.wait(timeout=10) == 0


def test_second_start_on_the_same_home_is_refused(node: subprocess.Popen[bytes],
                                                  dre: Runner) -> None:
    second = dre("node", "start", "--http", "127.0.0.1:0", check=False)
    assert second.code == 1
    assert second.err.startswith("dre: error: a node is already running for ")
    assert second.err.count("\n") == 1


def test_status_without_a_node_is_one_line(dre: Runner, home: Path) -> None:
    result = dre("node", "status", "--json", check=False)
    assert result.code == 1 and result.out == b""
    assert result.err == (
        f"dre: error: no node is running for {home} (start one with `dre node start`)\n"
    )


def test_bad_start_options_are_one_line(dre: Runner) -> None:
    for args, message in [
        (["--http", "nonsense"], "invalid HTTP address 'nonsense'"),
        (["--listen", "/ip4/999/tcp/1"], "invalid listen address"),
        (["--bootstrap", "/ip4/127.0.0.1/tcp/1"], "needs the peer's ID"),
        (["--network", "Main Net"], "invalid network name"),
    ]:
        result = dre("node", "start", *args, check=False)
        assert result.code == 1 and result.err.startswith("dre: error: "), result.err
        assert message in result.err and result.err.count("\n") == 1


def test_registry_add_set_default_list(dre: Runner, home: Path, tmp_path: Path) -> None:
    assert dre("registry", "list", "--json").json() == {"default": None, "registries": []}
    dre("registry", "add", "team", "http://127.0.0.1:9/")
    dre("registry", "add", "public", "https://registry.example.org")
    refused = dre("registry", "add", "team", "http://127.0.0.1:10", check=False)
    assert refused.code == 1 and "already exists" in refused.err
    unknown = dre("registry", "set-default", "nope", check=False)
    assert unknown.code == 1 and "no registry named 'nope'" in unknown.err
    dre("registry", "set-default", "team")
    assert dre("registry", "list", "--json").json() == {
        "default": "team",
        "registries": [
            {"name": "public", "url": "https://registry.example.org", "default": False},
            {"name": "team", "url": "http://127.0.0.1:9", "default": True},
        ],
    }
    assert "* team" in dre("registry", "list").text
    # The default is now what `node status` asks: an unreachable URL is one clear line.
    down = dre("node", "status", check=False)
    assert down.code == 1 and down.err.startswith("dre: error: cannot reach the node at "
                                                  "http://127.0.0.1:9")
    bad = dre("registry", "add", "x", "ftp://example.org", check=False)
    assert bad.code == 1 and "expected http://HOST:PORT" in bad.err
    dre("registry", "remove", "team")
    assert dre("registry", "list", "--json").json()["default"] is None
    fresh = run_dre(tmp_path / "nohome", "registry", "add", "a", "http://x:1", check=False)
    assert fresh.code == 1 and "run `dre init` first" in fresh.err
