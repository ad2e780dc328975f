"""Peers a node remembers (`dre registry federate`), dialed again at every start."""

from __future__ import annotations

import json
from pathlib import Path

from dre.storage.fsutil import write_atomically

__all__ = ["PEERS_FILE", "load_peers", "remember_peer"]

PEERS_FILE = "peers.json"
_MAX_PEERS = 256
_MAX_FILE = 256 * 1024


def load_peers(home: Path) -> list[str]:
    """The remembered peer multiaddrs (an unreadable or malformed file counts as none)."""
    path = home / PEERS_FILE
    try:
        raw = path.read_bytes()[:_MAX_FILE]
        value = json.loads(raw)
    except (OSError, ValueError):
        return []
    if not isinstance(value, list):
        return []
    return [a for a in value if isinstance(a, str) and len(a) <= 1024][:_MAX_PEERS]


def remember_peer(home: Path, addr: str) -> None:
    """Add ``addr`` to the remembered peers (most recent first, bounded)."""
    peers = [addr, *(a for a in load_peers(home) if a != addr)][:_MAX_PEERS]
    data = (json.dumps(peers, indent=2) + "\n").encode()
    write_atomically(home / PEERS_FILE, lambda fh: fh.write(data))
