"""One conformance suite, run against every BlockStore implementation (see conftest.make_store)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from dre.protocol.cid import CID, DAG_PB, RAW, Block, cid_for, multihash_of
from dre.protocol.errors import DreError, IntegrityError, NotFoundError, ValidationError
from dre.storage.blockstore import (
    MAX_BLOCK_SIZE,
    BlockStore,
    GcResult,
    ImportSession,
    PinKind,
    StoreStats,
)

from .conftest import StoreFactory, encode_node, links_of, make_dag, raw_block


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, check=True, text=True)
    return int(proc.stdout)


def assert_healthy(store: BlockStore) -> None:
    assert store.verify_all() == []


# -- blocks -------------------------------------------------------------------------------------


def test_put_get_has_size(store: BlockStore) -> None:
    b = raw_block(b"hello registry\n")
    assert not store.has(b.cid)
    assert store.size_of(b.cid) is None
    assert store.put(b) is True
    assert store.put(b) is False
    assert store.has(b.cid)
    assert store.get(b.cid) == b"hello registry\n"
    assert isinstance(store.get(b.cid), bytes)
    assert store.size_of(b.cid) == 15
    assert_healthy(store)


def test_get_missing_names_the_cid(store: BlockStore) -> None:
    cid = raw_block(b"nope").cid
    with pytest.raises(NotFoundError, match=f"block {cid} not found"):
        store.get(cid)


def test_keyed_by_multihash_not_cid(store: BlockStore) -> None:
    data = b"same bytes, two CIDs"
    v1 = cid_for(data, RAW)
    v0 = cid_for(data, DAG_PB, version=0)
    assert store.put(Block(v1, data)) is True
    assert store.put(Block(v0, data)) is False
    assert store.get(v0) == data
    assert list(store.iter_multihashes()) == [multihash_of(v1)]
    s = store.stats()
    assert (s.blocks, s.physical_bytes, s.logical_bytes, s.dedup_saved_bytes) == (
        1, len(data), 2 * len(data), len(data))


def test_empty_block(store: BlockStore) -> None:
    b = raw_block(b"")
    assert store.put(b)
    assert store.get(b.cid) == b""
    assert store.size_of(b.cid) == 0


def test_verify_rejects_wrong_bytes(store: BlockStore) -> None:
    cid = raw_block(b"right").cid
    with pytest.raises(IntegrityError):
        store.put(Block(cid, b"wrong"))
    assert not store.has(cid)
    assert store.stats().blocks == 0


def test_verify_false_stores_as_told_and_verify_all_finds_it(store: BlockStore) -> None:
    good = raw_block(b"good")
    cid = raw_block(b"right").cid
    store.put(good)
    assert store.put(Block(cid, b"wrong"), verify=False)
    assert store.verify_all() == [multihash_of(cid)]


def test_verify_on_read(make_store: StoreFactory) -> None:
    store = make_store(verify_on_read=True)
    cid = raw_block(b"right").cid
    store.put(Block(cid, b"wrong"), verify=False)
    with pytest.raises(IntegrityError):
        store.get(cid)
    ok = raw_block(b"fine")
    store.put(ok)
    assert store.get(ok.cid) == b"fine"


def test_put_many_counts_new_and_duplicates(store: BlockStore) -> None:
    blocks = [raw_block(bytes([i]) * 10) for i in range(5)]
    assert store.put_many(blocks) == 5
    assert store.put_many([*blocks[:2], raw_block(b"x"), raw_block(b"x")]) == 1
    s = store.stats()
    assert s.blocks == 6
    assert s.physical_bytes == 51
    assert s.logical_bytes == 50 + 20 + 2
    assert s.dedup_saved_bytes == 21
    assert store.put_many([]) == 0
    assert store.put_many(iter([raw_block(b"gen")])) == 1
    assert_healthy(store)


def test_put_many_is_all_or_nothing(store: BlockStore) -> None:
    store.put(raw_block(b"before"))
    before = store.stats()
    good = [raw_block(bytes([i])) for i in range(10)]
    bad = Block(raw_block(b"claimed").cid, b"actual")
    with pytest.raises(IntegrityError):
        store.put_many([*good[:5], bad, *good[5:]])
    assert store.stats() == before
    assert not any(store.has(b.cid) for b in good)
    with pytest.raises(ValidationError):
        store.put_many([*good, "not a block"])  # type: ignore[list-item]
    assert store.stats() == before


def test_delete_keeps_counters_exact(store: BlockStore) -> None:
    a, b = raw_block(b"a" * 100), raw_block(b"b" * 10)
    store.put_many([a, a, a, b])
    assert store.delete(a.cid) is True
    assert store.delete(a.cid) is False
    assert not store.has(a.cid)
    assert store.stats() == StoreStats(blocks=1, physical_bytes=10, logical_bytes=10,
                                       dedup_saved_bytes=0, pins_direct=0, pins_recursive=0)
    assert_healthy(store)


def test_iter_multihashes_sorted_and_safe_to_interleave(store: BlockStore) -> None:
    blocks = [raw_block(i.to_bytes(4, "big")) for i in range(2500)]
    store.put_many(blocks)
    expected = sorted(multihash_of(b.cid) for b in blocks)
    seen = []
    for i, mh in enumerate(store.iter_multihashes()):
        seen.append(mh)
        if i == 10:
            store.put(raw_block(b"written while iterating"))
    assert seen[:11] == expected[:11]
    assert set(expected) <= set(seen)


def test_block_size_limit(store: BlockStore) -> None:
    big = bytes(MAX_BLOCK_SIZE + 1)
    with pytest.raises(ValidationError):
        store.put(raw_block(big))
    assert store.put(raw_block(bytes(MAX_BLOCK_SIZE)))


def test_bytes_like_data_accepted(store: BlockStore) -> None:
    data = b"bytes-like"
    cid = cid_for(data, RAW)
    assert store.put(Block(cid, bytearray(data)))  # type: ignore[arg-type]
    assert store.get(cid) == data


# -- validation and lifecycle -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, "bafy...", b"\x01\x55", 42])
def test_wrong_cid_types(store: BlockStore, bad: object) -> None:
    for call in (store.get, store.has, store.size_of, store.delete, store.pin_rm):
        with pytest.raises(ValidationError):
            call(bad)  # type: ignore[operator]
    with pytest.raises(ValidationError):
        store.pin_add(bad, links_of=links_of)  # type: ignore[arg-type]


def test_wrong_block_types(store: BlockStore) -> None:
    cid = raw_block(b"x").cid
    for bad in [b"x", (cid,), (cid, "text"), ("cid", b"x"), None]:
        with pytest.raises(ValidationError):
            store.put(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.put(raw_block(b"x"), verify="yes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.pin_add(cid, recursive=1, links_of=links_of)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.gc(None)  # type: ignore[arg-type]
    sha512 = CID("base32", 1, RAW, ("sha2-512", bytes(64)))
    with pytest.raises(ValidationError):
        store.put(Block(sha512, b"x"), verify=False)


def test_closed_store_refuses_everything(make_store: StoreFactory) -> None:
    store = make_store()
    b = raw_block(b"x")
    store.put(b)
    store.close()
    store.close()  # idempotent
    calls = [
        lambda: store.put(b),
        lambda: store.put_many([b]),
        lambda: store.get(b.cid),
        lambda: store.has(b.cid),
        lambda: store.size_of(b.cid),
        lambda: store.delete(b.cid),
        lambda: list(store.iter_multihashes()),
        store.stats,
        store.verify_all,
        lambda: store.pin_add(b.cid, links_of=links_of),
        lambda: store.pin_rm(b.cid),
        store.pins,
        store.leases,
        lambda: store.gc(links_of),
        lambda: store.import_session().__enter__(),
    ]
    for call in calls:
        with pytest.raises(DreError, match="store is closed"):
            call()


def test_context_manager_closes(make_store: StoreFactory) -> None:
    with make_store() as store:
        store.put(raw_block(b"x"))
    with pytest.raises(DreError, match="store is closed"):
        store.stats()


# -- pins ---------------------------------------------------------------------------------------


def test_pin_recursive_and_direct(store: BlockStore) -> None:
    root, blocks = make_dag(1)
    store.put_many(blocks)
    store.pin_add(root.cid, links_of=links_of)
    leaf = blocks[1]
    store.pin_add(leaf.cid, recursive=False, links_of=links_of)
    assert store.pins() == sorted(
        [(root.cid, PinKind.RECURSIVE), (leaf.cid, PinKind.DIRECT)], key=lambda p: bytes(p[0]))
    s = store.stats()
    assert (s.pins_direct, s.pins_recursive) == (1, 1)
    # Re-pinning is idempotent; direct over recursive keeps recursive; recursive upgrades direct.
    store.pin_add(root.cid, links_of=links_of)
    store.pin_add(root.cid, recursive=False, links_of=links_of)
    store.pin_add(leaf.cid, recursive=True, links_of=links_of)
    assert {k for _, k in store.pins()} == {PinKind.RECURSIVE}
    s = store.stats()
    assert (s.pins_direct, s.pins_recursive) == (0, 2)
    store.pin_rm(leaf.cid)
    store.pin_rm(root.cid)
    assert store.pins() == []
    with pytest.raises(NotFoundError):
        store.pin_rm(root.cid)
    assert_healthy(store)


def test_pins_keep_the_codec(store: BlockStore) -> None:
    data = b"dag-pb bytes"
    v0 = cid_for(data, DAG_PB, version=0)
    store.put(Block(v0, data))
    store.pin_add(v0, recursive=False, links_of=links_of)
    [(cid, _)] = store.pins()
    assert cid == v0 and cid.version == 0
    with pytest.raises(NotFoundError):
        store.pin_rm(cid_for(data, RAW))  # same multihash, different pin


def test_recursive_pin_requires_whole_dag(store: BlockStore) -> None:
    root, blocks = make_dag(2, leaves=4)
    missing = blocks[3]
    store.put_many([b for b in blocks if b is not missing])
    before = store.stats()
    with pytest.raises(NotFoundError, match=f"block {missing.cid} not found"):
        store.pin_add(root.cid, links_of=links_of)
    assert store.pins() == []
    assert store.stats() == before
    # The first missing CID in link order is named.
    store.delete(blocks[2].cid)
    with pytest.raises(NotFoundError, match=f"block {blocks[2].cid} not found"):
        store.pin_add(root.cid, links_of=links_of)
    with pytest.raises(NotFoundError):
        store.pin_add(raw_block(b"absent").cid, recursive=False, links_of=links_of)


# -- garbage collection -------------------------------------------------------------------------


def test_gc_keeps_pinned_dags_and_removes_the_rest(store: BlockStore) -> None:
    root1, dag1 = make_dag(1)
    _root2, dag2 = make_dag(2)
    shared = raw_block(b"shared leaf")
    root3 = encode_node([shared.cid, dag1[1].cid])  # shares a leaf with dag1
    direct_root, direct_dag = make_dag(4)
    junk = [raw_block(b"junk%d" % i) for i in range(20)]
    store.put_many([*dag1, *dag2, shared, root3, *direct_dag, *junk])
    store.pin_add(root1.cid, links_of=links_of)
    store.pin_add(root3.cid, links_of=links_of)
    store.pin_add(direct_root.cid, recursive=False, links_of=links_of)

    result = store.gc(links_of)

    kept = {*dag1, shared, root3, direct_root}
    removed = {*dag2, *direct_dag[1:], *junk}
    assert result == GcResult(removed_blocks=len(removed),
                              freed_bytes=sum(len(b.data) for b in removed),
                              kept_blocks=len(kept))
    assert all(store.has(b.cid) for b in kept)
    assert not any(store.has(b.cid) for b in removed)
    assert store.stats().blocks == len(kept)
    assert_healthy(store)
    assert store.gc(links_of).removed_blocks == 0


def test_gc_counts_logical_bytes_of_removed_blocks(store: BlockStore) -> None:
    a = raw_block(b"a" * 50)
    store.put_many([a, a])
    store.gc(links_of)
    s = store.stats()
    assert (s.blocks, s.physical_bytes, s.logical_bytes) == (0, 0, 0)
    assert_healthy(store)


def test_gc_tolerates_missing_block_under_direct_pin(store: BlockStore) -> None:
    b = raw_block(b"pinned then deleted")
    store.put(b)
    store.put(raw_block(b"junk"))
    store.pin_add(b.cid, recursive=False, links_of=links_of)
    store.delete(b.cid)
    assert store.gc(links_of).removed_blocks == 1


def test_gc_refuses_incomplete_recursive_pin(store: BlockStore) -> None:
    root, dag = make_dag(5)
    junk = raw_block(b"junk")
    store.put_many([*dag, junk])
    store.pin_add(root.cid, links_of=links_of)
    store.delete(dag[1].cid)
    with pytest.raises(IntegrityError, match=str(dag[1].cid)):
        store.gc(links_of)
    assert store.has(junk.cid)


def test_gc_spares_blocks_of_a_running_import(store: BlockStore) -> None:
    old = raw_block(b"existed before the import, unpinned")
    stale = raw_block(b"stale")
    store.put_many([old, stale])
    with store.import_session() as session:
        assert isinstance(session, ImportSession)
        assert [lease.lease_id for lease in store.leases()] == [session.lease.lease_id]
        root, dag = make_dag(6)
        session.put_many(dag[1:], verify=False)
        session.put(old)  # dedup: a re-put inside the session protects the existing block
        store.put(dag[0])  # writes through the store itself are protected too
        result = store.gc(links_of)
        assert result.removed_blocks == 1  # only `stale`
        assert all(store.has(b.cid) for b in [*dag, old])
        session.pin_add(root.cid, links_of=links_of)
    assert store.leases() == []
    store.gc(links_of)
    assert all(store.has(b.cid) for b in dag)
    assert not store.has(old.cid)
    assert_healthy(store)


def test_lease_released_on_error(store: BlockStore) -> None:
    with pytest.raises(RuntimeError), store.import_session():
        raise RuntimeError("import failed")
    assert store.leases() == []


def test_gc_drops_leases_of_dead_processes(store: BlockStore) -> None:
    b = raw_block(b"orphan of a killed import")
    store._inject_lease(dead_pid())  # type: ignore[attr-defined]
    store.put(b)
    assert len(store.leases()) == 1
    assert store.gc(links_of).removed_blocks == 1
    assert store.leases() == []


def test_gc_honours_leases_of_live_processes(store: BlockStore) -> None:
    before = raw_block(b"before the lease")
    store.put(before)
    store._inject_lease(os.getppid())  # type: ignore[attr-defined]
    after = raw_block(b"after the lease")
    store.put(after)
    assert store.gc(links_of).removed_blocks == 1
    assert store.has(after.cid) and not store.has(before.cid)


def test_gc_treats_recycled_pid_as_dead(store: BlockStore) -> None:
    store._inject_lease(os.getpid(), start_ticks=1)  # type: ignore[attr-defined]
    store.put(raw_block(b"x"))
    if os.path.exists("/proc/self/stat"):
        assert store.gc(links_of).removed_blocks == 1


def test_with_block_passes_the_bytes_and_not_found(store: BlockStore) -> None:
    block = raw_block(b"viewed without a copy")
    store.put(block)
    assert store.with_block(block.cid, bytes) == block.data
    assert store.with_block(block.cid, len) == len(block.data)
    missing = raw_block(b"never stored")
    with pytest.raises(NotFoundError, match="not found"):
        store.with_block(missing.cid, bytes)
