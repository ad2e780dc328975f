"""Federated search across three real node processes on loopback (``dre node start``).

Each node publishes different packages, and the packages under test stay on their publisher.
That needs care, because sync copies *every* record a node's rules accept, on connect and every
30 s. So a package can only stay on its publisher if the others' rules refuse it, which is also
the case where federated search matters most in a real network (next to records not synced yet):

* Before anyone connects, A creates the scopes ``@beta`` and ``@gamma`` with its own key.
* B, on its own, creates *its* ``@beta`` and publishes ``@beta/slugify`` in it; C does the same
  with ``@gamma`` and ``@gamma/dotfiles-kit``. Each also publishes one unscoped package, which
  A accepts: seeing it arrive proves that sync between A and that peer has run.
* Then B and C federate with A (``dre registry federate``: connect, sync, remember). A refuses
  their scope records (``@beta`` and ``@gamma`` are A's here: only an owner may change a scope)
  and so every manifest under them, by sync and gossip alike (``specs/registry.md`` §2–§3).

A plain search on A therefore cannot find ``@beta/slugify`` or ``@gamma/dotfiles-kit``; a
federated one does, each with ``source`` naming the peer that holds it. Then C is frozen with
SIGSTOP (its process holds its connections but answers nothing, a real hang) and a federated
search with a 1.5 s deadline still answers at the deadline, with B's hits and C reported as timed
out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

DRE = str(Path(sys.executable).parent / "dre")
EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
NETWORK = "fedsearch"
QUERY = {"q": "string slugs shell", "mode": "text", "limit": "20"}


def run(home: Path, *args: str, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([DRE, *args], capture_output=True, timeout=timeout, check=False,
                          env={**os.environ, "DRE_HOME": str(home)})
    if check and proc.returncode != 0:
        raise AssertionError(f"dre {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


class NodeProcess:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.log = (home.parent / f"{home.name}.log").open("wb")
        self.proc = subprocess.Popen(
            [DRE, "node", "start", "--http", "127.0.0.1:0", "--network", NETWORK],
            env={**os.environ, "DRE_HOME": str(home)}, stdout=self.log,
            stderr=subprocess.STDOUT)
        wait_for(lambda: (home / "api").exists() or self.proc.poll() is not None,
                 f"node {home.name} to start")
        assert self.proc.poll() is None, (home.parent / f"{home.name}.log").read_text()
        status = json.loads(run(home, "node", "status", "--json").stdout)
        self.addr: str = status["addrs"][0]
        self.peer_id: str = status["peer_id"]
        self.url: str = status["http"]

    def search(self, *, wait: float = 30.0, **params: str) -> dict[str, Any]:
        """``GET /api/v1/search`` with ``params``; an answer later than ``wait`` seconds is a
        ReadTimeout (what a user with that patience would see)."""
        response = httpx.get(f"{self.url}/api/v1/search", params={**QUERY, **params},
                             timeout=wait, trust_env=False)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def holds(self, spec: str) -> bool:
        return run(self.home, "info", spec, check=False).returncode == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test left it frozen
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(timeout=15) == 0
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
        self.log.close()


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in reversed(started):
        node.stop()


def renamed(tmp_path: Path, example: str, name: str) -> Path:
    """The example document published under another name (front matter only)."""
    text = (EXAMPLES / example).read_text(encoding="utf-8")
    old = text.split("\n", 2)[1]
    assert old.startswith("name: ")
    path = tmp_path / f"{name.replace('/', '_')}.md"
    path.write_text(text.replace(old, f'name: "{name}"', 1), encoding="utf-8")
    return path


def sources(answer: dict[str, Any]) -> dict[str, str | None]:
    return {hit["name"]: hit["source"] for hit in answer["hits"]}


@pytest.mark.slow
def test_federated_search_finds_what_only_peers_hold(tmp_path: Path,
                                                     nodes: list[NodeProcess]) -> None:
    a_home, b_home, c_home = (tmp_path / n for n in ("a", "b", "c"))
    a = NodeProcess(a_home)
    nodes.append(a)
    for scope in ("@beta", "@gamma"):
        run(a_home, "scope", "create", scope, "--key", "node")
    run(a_home, "publish", str(EXAMPLES / "left-pad.md"), "--key", "node")

    b = NodeProcess(b_home)
    nodes.append(b)
    run(b_home, "scope", "create", "@beta", "--key", "node")
    run(b_home, "publish", str(renamed(tmp_path, "slugify-lite.md", "@beta/slugify")),
        "--key", "node")
    run(b_home, "publish", str(EXAMPLES / "slugify-lite.md"), "--key", "node")

    c = NodeProcess(c_home)
    nodes.append(c)
    run(c_home, "scope", "create", "@gamma", "--key", "node")
    run(c_home, "publish", str(renamed(tmp_path, "dotfiles-kit.md", "@gamma/dotfiles-kit")),
        "--key", "node")
    run(c_home, "publish", str(EXAMPLES / "dotfiles-kit.md"), "--key", "node")

    probe = a.search(federated="1")
    assert "answered" in probe, (
        "the node does not serve /api/v1/search?federated=1: node/search_protocol.py is not "
        "wired into node/runtime.py and node/discovery_api.py")

    run(b_home, "registry", "federate", a.addr)
    run(c_home, "registry", "federate", a.addr)
    # Sync ran both ways: A has B's and C's unscoped packages ...
    wait_for(lambda: a.holds("slugify-lite") and a.holds("dotfiles-kit"),
             "A to sync the peers' unscoped packages")
    # ... and refused what they published in scopes that are A's here.
    assert not a.holds("@beta/slugify") and not a.holds("@gamma/dotfiles-kit")
    assert b.holds("@beta/slugify") and c.holds("@gamma/dotfiles-kit")

    expected = {"@beta/slugify": b.peer_id, "@gamma/dotfiles-kit": c.peer_id,
                "left-pad": None, "slugify-lite": None, "dotfiles-kit": None}
    answers: list[dict[str, Any]] = []

    def federated_complete() -> bool:
        # Each node's engine indexes what its registry holds as it arrives: poll until every
        # node's index has caught up.
        answer = a.search(federated="1", timeout_ms="5000")
        answers.append(answer)
        return sources(answer) == expected

    wait_for(federated_complete, "the federated answer to hold every package")
    answer = answers[-1]
    assert answer["answered"] == sorted([b.peer_id, c.peer_id])
    assert answer["timed_out"] == [] and answer["failed"] == []
    # A's own search knows only what A holds.
    local = a.search()
    assert set(sources(local)) == {"left-pad", "slugify-lite", "dotfiles-kit"}
    # A package several nodes hold is listed once, with this node's facts.
    assert len(answer["hits"]) == len(expected) == answer["total"]

    # C hangs: frozen, its connections open, nothing answered. The answer still comes at the
    # deadline, with B's hits; C is reported, not waited for.
    c.proc.send_signal(signal.SIGSTOP)
    try:
        # C cannot answer while stopped: an answer at all proves A did not wait for it, and
        # the client's patience (the deadline plus 1.5 s for HTTP on a busy machine) bounds it.
        frozen = a.search(federated="1", timeout_ms="1500", wait=1.5 + 1.5)
    finally:
        c.proc.send_signal(signal.SIGCONT)
    assert frozen["timed_out"] == [c.peer_id]
    assert frozen["answered"] == [b.peer_id]
    assert sources(frozen) == {k: v for k, v in expected.items() if k != "@gamma/dotfiles-kit"}
