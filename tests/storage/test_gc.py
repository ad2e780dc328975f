"""GC helpers, and GC racing with writers in the middle of its mark phase."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dre.protocol.cid import CID, DAG_PB, RAW, cid_for, multihash_of
from dre.protocol.errors import IntegrityError, ValidationError
from dre.storage import gc
from dre.storage.blockstore import PinKind
from dre.storage.lmdb_store import LmdbBlockStore

from .conftest import encode_node, links_of, make_dag, raw_block


def test_find_missing_and_mark_live() -> None:
    root, dag = make_dag(1, leaves=3)
    blocks = {multihash_of(b.cid): b.data for b in dag}
    assert gc.find_missing(root.cid, blocks.get, links_of) is None
    del blocks[multihash_of(dag[2].cid)]
    assert gc.find_missing(root.cid, blocks.get, links_of) == dag[2].cid
    with pytest.raises(IntegrityError, match="missing under recursive pin"):
        gc.mark_live([(root.cid, PinKind.RECURSIVE)], blocks.get, links_of)
    live = gc.mark_live([(root.cid, PinKind.DIRECT)], blocks.get, links_of)
    assert live == {multihash_of(root.cid)}


def test_mark_walks_shared_subtrees_once() -> None:
    leaf = raw_block(b"leaf")
    mid = encode_node([leaf.cid, leaf.cid])
    top = encode_node([mid.cid, mid.cid, leaf.cid])
    blocks = {multihash_of(b.cid): b.data for b in (leaf, mid, top)}
    calls: list[CID] = []

    def counting(cid: CID, data: bytes) -> list[CID]:
        calls.append(cid)
        return links_of(cid, data)

    live = gc.mark_live([(top.cid, PinKind.RECURSIVE)], blocks.get, counting)
    assert len(live) == 3
    assert len(calls) == 3


def test_links_of_errors_become_integrity_errors() -> None:
    b = raw_block(b"x")
    blocks = {multihash_of(b.cid): b.data}

    def broken(cid: CID, data: bytes) -> list[CID]:
        raise ValidationError("bad node")

    with pytest.raises(IntegrityError, match="cannot be decoded"):
        gc.find_missing(b.cid, blocks.get, broken)
    with pytest.raises(ValidationError):
        gc.find_missing(b.cid, blocks.get, lambda c, d: ["not a cid"])  # type: ignore[list-item]


def test_cid_text_is_canonical() -> None:
    v1 = cid_for(b"x", RAW)
    assert gc.cid_text(CID.decode(bytes(v1))) == str(v1)
    assert gc.cid_text(cid_for(b"x", DAG_PB, 0)).startswith("Qm")


def test_process_alive() -> None:
    me = os.getpid()
    assert gc.process_alive(me, gc.process_start_ticks(me))
    assert gc.process_alive(me, 0)
    assert not gc.process_alive(0, 0)
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    assert not gc.process_alive(int(proc.stdout), 0)
    if os.path.exists("/proc/self/stat"):
        assert not gc.process_alive(me, gc.process_start_ticks(me) + 1)


def test_pin_added_during_mark_restarts_the_sweep(tmp_path: Path) -> None:
    with LmdbBlockStore(tmp_path / "s", sync=False) as store:
        root, dag = make_dag(1)
        late = raw_block(b"pinned while gc marks")
        junk = raw_block(b"junk")
        store.put_many([*dag, late, junk])
        store.pin_add(root.cid, links_of=links_of)
        done = False

        def racing(cid: CID, data: bytes) -> list[CID]:
            nonlocal done
            if not done:  # another writer pins between the mark's snapshot and the sweep
                done = True
                store.pin_add(late.cid, recursive=False, links_of=links_of)
            return links_of(cid, data)

        result = store.gc(racing)
        assert store.has(late.cid)
        assert not store.has(junk.cid)
        assert result.removed_blocks == 1
        assert store.verify_all() == []


def test_block_written_during_mark_survives(tmp_path: Path) -> None:
    with LmdbBlockStore(tmp_path / "s", sync=False) as store:
        root, dag = make_dag(1)
        store.put_many(dag)
        store.pin_add(root.cid, links_of=links_of)
        late = raw_block(b"written while gc marks")

        def racing(cid: CID, data: bytes) -> list[CID]:
            store.put(late)
            return links_of(cid, data)

        assert store.gc(racing).removed_blocks == 0
        assert store.has(late.cid)
        assert store.gc(links_of).removed_blocks == 1
