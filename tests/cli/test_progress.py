"""Long imports and exports show a progress bar on a terminal's stderr, and only there."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import DRE, Runner, run_on_terminal


def test_progress_bar_on_terminal_only(dre: Runner, home: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 << 20))
    code, out, screen, _ = run_on_terminal([DRE, "add", "-q", str(big)], home)
    assert code == 0
    cid = out.decode().strip()
    assert cid.startswith("bafybei")
    assert b"add:" in screen and b"/64.0M" in screen and b"B/s" in screen  # bytes of 64 MiB
    # Not a terminal: no bar, just the result.
    piped = dre("add", "-q", str(big))
    assert piped.text.strip() == cid and piped.err == ""
    code, _, screen, _ = run_on_terminal(
        [DRE, "dag", "export", cid, "-o", str(tmp_path / "b.car")], home)
    assert code == 0 and b"export:" in screen
