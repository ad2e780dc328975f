"""Three real node processes on loopback, driven through the `dre` CLI as a user would.

Publish on A; B finds the package by name and fetches it (and a file by CID), byte-identical; C
starts later, knowing only B, and catches up through sync alone.
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

import pytest

DRE = str(Path(sys.executable).parent / "dre")
EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
NETWORK = "three"


def run(home: Path, *args: str, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([DRE, *args], capture_output=True, timeout=timeout, check=False,
                          env={**os.environ, "DRE_HOME": str(home)})
    if check and proc.returncode != 0:
        raise AssertionError(f"dre {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc


def run_json(home: Path, *args: str) -> Any:
    return json.loads(run(home, *args, "--json").stdout)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class NodeProcess:
    def __init__(self, home: Path, *bootstrap: str) -> None:
        self.home = home
        args = [DRE, "node", "start", "--http", "127.0.0.1:0", "--network", NETWORK]
        for addr in bootstrap:
            args += ["--bootstrap", addr]
        self.log = (home.parent / f"{home.name}.log").open("wb")
        self.proc = subprocess.Popen(args, env={**os.environ, "DRE_HOME": str(home)},
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: (home / "api").exists() or self.proc.poll() is not None,
                 f"node {home.name} to start")
        assert self.proc.poll() is None, (home.parent / f"{home.name}.log").read_text()
        self.status = run_json(home, "node", "status")
        self.addr = self.status["addrs"][0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(timeout=15) == 0
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
        self.log.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in reversed(started):
        node.stop()


@pytest.mark.slow
def test_publish_find_fetch_and_catch_up(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    a_home, b_home, c_home = (tmp_path / n for n in ("a", "b", "c"))
    a = NodeProcess(a_home)
    nodes.append(a)
    run(a_home, "scope", "create", "@acme", "--key", "node")
    for doc in ("acme-retry-1.0.0.md", "acme-retry-1.1.0.md", "left-pad.md"):
        run(a_home, "publish", str(EXAMPLES / doc), "--key", "node")
    published = run_json(a_home, "info", "@acme/retry")

    b = NodeProcess(b_home, a.addr)
    nodes.append(b)
    # B finds the package by name and installs it: the files are A's, byte for byte.
    installed = run_json(b_home, "install", "@acme/retry", "-o", str(tmp_path / "b-install"))
    assert installed["installed"][0]["package"] == published["package"]
    run(a_home, "get", published["package"], "-o", str(tmp_path / "a-tree"))
    for path in (tmp_path / "a-tree").rglob("*"):
        if path.is_file():
            rel = path.relative_to(tmp_path / "a-tree")
            assert (tmp_path / "b-install" / "@acme" / "retry" / rel).read_bytes() == \
                path.read_bytes()
    # ... and any file by CID.
    readme = f"{published['package']}/README.md"
    assert run(b_home, "cat", readme).stdout == run(a_home, "cat", readme).stdout

    # A publishes while B is connected: gossip brings it to B.
    (tmp_path / "late.md").write_text((EXAMPLES / "left-pad.md").read_text().replace(
        "version: 1.3.0", "version: 1.4.0"))
    run(a_home, "publish", str(tmp_path / "late.md"), "--key", "node")
    wait_for(lambda: run(b_home, "info", "left-pad@1.4.0", check=False).returncode == 0,
             "B to receive left-pad@1.4.0 by gossip")

    # C starts later and knows only B: it catches up through sync alone.
    c = NodeProcess(c_home, b.addr)
    nodes.append(c)
    wait_for(lambda: run(c_home, "info", "@acme/retry@1.0.0", check=False).returncode == 0,
             "C to catch up on @acme/retry")
    versions = run_json(c_home, "info", "@acme/retry", "--versions")["versions"]
    assert [v["version"] for v in versions] == ["1.0.0", "1.1.0"]
    assert run_json(c_home, "info", "left-pad")["version"] == "1.4.0"
    # C's copy of a manifest is A's signed record, byte for byte.
    assert run_json(c_home, "info", "@acme/retry")["manifest"] == published["manifest"]
