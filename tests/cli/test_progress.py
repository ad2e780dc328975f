"""Long imports and exports show a progress bar on a terminal's stderr, and only there."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
from pathlib import Path

from .conftest import DRE, Runner


def _run_on_terminal(args: list[str], home: Path) -> tuple[int, bytes, bytes]:
    """Run with stderr on a pseudo-terminal of 100 columns; returns (code, stdout, terminal)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, stdin=slave,
                            env={**os.environ, "DRE_HOME": str(home)})
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
    os.close(master)
    return proc.wait(timeout=30), out, screen


def test_progress_bar_on_terminal_only(dre: Runner, home: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 << 20))
    code, out, screen = _run_on_terminal([DRE, "add", "-q", str(big)], home)
    assert code == 0
    cid = out.decode().strip()
    assert cid.startswith("bafybei")
    assert b"add:" in screen and b"/64.0M" in screen and b"B/s" in screen  # bytes of 64 MiB
    # Not a terminal: no bar, just the result.
    piped = dre("add", "-q", str(big))
    assert piped.text.strip() == cid and piped.err == ""
    code, _, screen = _run_on_terminal([DRE, "dag", "export", cid, "-o", str(tmp_path / "b.car")],
                                       home)
    assert code == 0 and b"export:" in screen
