"""Run the real `dre` executable in a subprocess, the way a user does."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DRE = str(Path(sys.executable).parent / "dre")


@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()

    def json(self) -> Any:
        return json.loads(self.out)


Runner = Callable[..., Result]


def run_dre(home: Path, *args: str, cwd: Path | None = None, check: bool = True,
            input: bytes | None = None) -> Result:
    env = {**os.environ, "DRE_HOME": str(home)}
    proc = subprocess.run([DRE, *args], capture_output=True, env=env, cwd=cwd, input=input,
                          timeout=120, check=False)
    result = Result(proc.returncode, proc.stdout, proc.stderr.decode())
    if check and proc.returncode != 0:
        raise AssertionError(f"dre {' '.join(args)} failed ({proc.returncode}): {result.err}")
    return result


def run_on_terminal(args: list[str], home: Path, *, cwd: Path | None = None,
                    stdout_on_terminal: bool = False) -> tuple[int, bytes, bytes, str]:
    """Run ``args`` with stderr (and stdout if asked) on a 100-column pseudo-terminal.

    Returns (exit code, stdout if piped, what the terminal showed, stderr if piped).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        args, stdin=slave, cwd=cwd, env={**os.environ, "DRE_HOME": str(home)},
        stdout=slave if stdout_on_terminal else subprocess.PIPE,
        stderr=subprocess.PIPE if stdout_on_terminal else slave,
    )
    os.close(slave)
    screen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read().decode() if proc.stderr else ""
    os.close(master)
    return proc.wait(timeout=30), out, screen, err


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    run_dre(home, "init")
    return home


@pytest.fixture
def dre(home: Path, tmp_path: Path) -> Runner:
    def runner(*args: str, check: bool = True, input: bytes | None = None) -> Result:
        return run_dre(home, *args, cwd=tmp_path, check=check, input=input)

    return runner


def start_node(home: Path, *args: str) -> subprocess.Popen[bytes]:
    """``dre node start --http 127.0.0.1:0 ARGS…`` for ``home``, returned once its api file
    appears (stdout and stderr are pipes the test may read)."""
    proc = subprocess.Popen(
        [DRE, "node", "start", "--http", "127.0.0.1:0", *args],
        env={**os.environ, "DRE_HOME": str(home)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not (home / "api").exists():
        if proc.poll() is not None:
            raise AssertionError(f"node exited {proc.returncode}: {proc.stderr.read()!r}")
        if time.monotonic() > deadline:
            stop_node(proc)
            raise AssertionError("the node did not start within 30 s")
        time.sleep(0.05)
    return proc


def stop_node(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s; nothing if it already stopped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
