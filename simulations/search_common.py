"""What the search simulations (``eval_search.py``, ``bench_search.py``) share: the index entry
of a data-set package and the commit of the engine code a result measured."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

from dre.storage.search_index import PackageEntry

ROOT = Path(__file__).resolve().parent.parent
#: The files whose code a search result measures.
ENGINE_FILES = ("node/search_engine.py", "node/embedder.py", "storage/search_index.py",
                "storage/vector_index.py", "protocol/search.py")


def entry_of(package: dict[str, Any], seq: int) -> PackageEntry:
    """The index entry of one data-set package (a synthetic version, manifest CID and time)."""
    name = package["name"]
    return PackageEntry(
        name=name, version="1.0.0",
        manifest="bafy" + hashlib.sha256(name.encode()).hexdigest()[:52],
        description=package["description"], category=package["category"],
        keywords=tuple(package["keywords"]), prose=package["prose"],
        time=1_700_000_000 + seq,
    )


def engine_commit() -> str:
    """The last commit of the engine's files, "+dirty" if the tree changes them (so a result
    names the code it measured)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args, "--", *ENGINE_FILES], cwd=ROOT, capture_output=True,
                              text=True, check=False).stdout.strip()

    commit = git("log", "-1", "--format=%h")
    return commit + ("+dirty" if git("status", "--porcelain") else "")
