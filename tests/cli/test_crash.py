"""A `kill -9` in the middle of a large import leaves a store that opens and checks out whole."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import DRE, Runner

BIG = 384 << 20


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        for _ in range(size >> 20):
            fh.write(os.urandom(1 << 20))


@pytest.mark.slow
def test_kill_9_during_import(dre: Runner, home: Path, tmp_path: Path) -> None:
    (tmp_path / "small.txt").write_bytes(b"pinned before the crash\n")
    small = dre("add", "-q", "small.txt").text.strip()
    big = tmp_path / "big.bin"
    _write_random(big, BIG)
    data_file = home / "blocks" / "data.mdb"
    start_size = data_file.stat().st_size

    proc = subprocess.Popen([DRE, "add", str(big)], env={**os.environ, "DRE_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    # Kill once a good part of the file has been committed, well before the end.
    while data_file.stat().st_size < start_size + BIG // 4:
        assert proc.poll() is None, "the import finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL

    verify = dre("repo", "verify", "--json").json()
    assert verify["ok"] is True and verify["blocks"] > 1
    assert dre("cat", small).out == b"pinned before the crash\n"
    # The dead import's lease must not protect its orphans forever.
    gc = dre("repo", "gc", "--json").json()
    assert gc["removed_blocks"] >= 1
    assert dre("repo", "stat", "--json").json()["blocks"] == 1
    # And the store still takes the whole file afterwards.
    expected = dre("add", "--only-hash", "-q", str(big)).text.strip()
    assert dre("add", "-q", str(big)).text.strip() == expected
    assert dre("repo", "verify", "--json").json()["ok"] is True
