"""LMDB-specific behaviour: persistence, map growth, crash safety, several processes at once."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import lmdb
import pytest
from dre.protocol.cid import multihash_of
from dre.protocol.errors import DreError, IntegrityError, ValidationError
from dre.storage.blockstore import PinKind
from dre.storage.lmdb_store import LmdbBlockStore

from .conftest import links_of, make_dag, raw_block

# Run by child processes: a writer that reports progress on stdout, one line per commit.
_CHILD_PRELUDE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from dre.protocol.cid import Block, cid_for, RAW
    from dre.storage.lmdb_store import LmdbBlockStore

    def raw(data):
        return Block(cid_for(data, RAW), data)

    path = Path(sys.argv[1])
    """
)


def spawn(tmp_path: Path, body: str, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / f"child{time.monotonic_ns()}.py"
    script.write_text(_CHILD_PRELUDE + textwrap.dedent(body))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        assert proc.stderr is not None
        raise AssertionError(f"child exited early: {proc.wait()} {proc.stderr.read()}")
    return line.strip()


def kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_persists_across_reopen(tmp_path: Path) -> None:
    root, dag = make_dag(1)
    extra = raw_block(b"extra")
    with LmdbBlockStore(tmp_path / "s") as store:
        store.put_many([*dag, extra, extra])
        store.pin_add(root.cid, links_of=links_of)
        stats = store.stats()
    with LmdbBlockStore(tmp_path / "s") as store:
        assert store.stats() == stats
        assert store.get(extra.cid) == b"extra"
        assert store.pins() == [(root.cid, PinKind.RECURSIVE)]
        assert store.verify_all() == []
        assert store.gc(links_of).removed_blocks == 1


def test_map_grows_and_is_remembered(tmp_path: Path) -> None:
    path = tmp_path / "s"
    blocks = [raw_block(os.urandom(256 * 1024)) for _ in range(40)]  # 10 MiB into a 1 MiB map
    with LmdbBlockStore(path, map_size=1 << 20, sync=False) as store:
        assert store.put_many(blocks) == 40
        grown = store._env.info()["map_size"]
        assert grown > 10 << 20
    with LmdbBlockStore(path, map_size=1 << 20, sync=False) as store:
        assert store._env.info()["map_size"] >= grown
        assert store.verify_all() == []


def test_map_full_aborts_and_retries_the_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LmdbBlockStore(tmp_path / "s", map_size=1 << 20, sync=False) as store:
        # Without the pre-flight estimate, the write must hit MapFullError and recover.
        monkeypatch.setattr(store, "_ensure_room", lambda nbytes: None)
        blocks = [raw_block(os.urandom(64 * 1024)) for _ in range(100)]
        assert store.put_many(blocks) == 100
        for i in range(100):
            store.put(raw_block(os.urandom(32 * 1024) + bytes([i])))
        assert store.stats().blocks == 200
        assert store.verify_all() == []


def test_verify_all_finds_corruption_and_bad_counters(tmp_path: Path) -> None:
    path = tmp_path / "s"
    good, victim = raw_block(b"good"), raw_block(b"victim")
    with LmdbBlockStore(path) as store:
        store.put_many([good, victim])
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(multihash_of(victim.cid), b"victin", db=env.open_db(b"blocks", txn=txn))
    env.close()
    with LmdbBlockStore(path) as store:
        assert store.verify_all() == [multihash_of(victim.cid)]
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(b"blocks", struct.pack(">Q", 7), db=env.open_db(b"counters", txn=txn))
    env.close()
    with LmdbBlockStore(path) as store, pytest.raises(IntegrityError, match="counters"):
        store.verify_all()


def test_open_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a directory")
    with pytest.raises(DreError):
        LmdbBlockStore(tmp_path / "file")
    with pytest.raises(ValidationError):
        LmdbBlockStore(tmp_path / "s", map_size=10)
    with pytest.raises(ValidationError):
        LmdbBlockStore(42)  # type: ignore[arg-type]
    with LmdbBlockStore(tmp_path / "s"):
        pass
    env = lmdb.open(str(tmp_path / "s"), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(b"format", struct.pack(">Q", 99), db=env.open_db(b"counters", txn=txn))
    env.close()
    with pytest.raises(DreError, match="format 99"):
        LmdbBlockStore(tmp_path / "s")


def test_kill9_during_put_many_loop_leaves_a_consistent_store(tmp_path: Path) -> None:
    path = tmp_path / "s"
    # Three writers in turn, each killed at a different point of its loop of transactions.
    for round_ in range(3):
        writer = spawn(
            tmp_path,
            """
            store = LmdbBlockStore(path, map_size=1 << 20)  # small: growth happens too
            for batch in range(100000):
                blocks = [raw(os.urandom(4096 + batch % 7)) for _ in range(50)]
                blocks.append(raw(b"shared"))  # a dedup hit in every batch
                store.put_many(blocks)
                print(batch, flush=True)
            """,
            str(path),
        )
        try:
            for _ in range(10 + 7 * round_):
                read_line(writer)
        finally:
            kill9(writer)
    with LmdbBlockStore(path) as store:
        assert store.verify_all() == []  # also raises if counters disagree with the data
        stats = store.stats()
        batches = (stats.blocks - 1) // 50
        assert batches >= 10 + 17 + 24
        assert stats.blocks == 50 * batches + 1
        assert stats.dedup_saved_bytes == (batches - 1) * len(b"shared")
        store.put(raw_block(b"still writable"))
        assert store.leases() == []


def test_gc_in_another_process_spares_a_running_import_until_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LmdbBlockStore(path, sync=False) as store:
        store.put(raw_block(b"old junk"))
        importer = spawn(
            tmp_path,
            """
            store = LmdbBlockStore(path, sync=False)
            with store.import_session() as session:
                session.put_many([raw(b"in flight %d" % i) for i in range(10)])
                print("written", flush=True)
                time.sleep(60)  # killed before it can pin
            """,
            str(path),
        )
        try:
            assert read_line(importer) == "written"
            [lease] = store.leases()
            assert lease.pid == importer.pid
            assert store.gc(links_of).removed_blocks == 1  # only the junk
            assert store.stats().blocks == 10
        finally:
            kill9(importer)
        result = store.gc(links_of)
        assert result.removed_blocks == 10
        assert store.leases() == []
        assert store.verify_all() == []


def test_map_grown_by_another_process_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LmdbBlockStore(path, map_size=1 << 20, sync=False) as store:
        store.put(raw_block(b"first"))
        grower = spawn(
            tmp_path,
            """
            with LmdbBlockStore(path, map_size=1 << 20, sync=False) as store:
                store.put_many([raw(os.urandom(256 * 1024)) for _ in range(200)])
            print("done", flush=True)
            """,
            str(path),
        )
        assert read_line(grower) == "done"
        assert grower.wait(timeout=30) == 0
        # Our map is now smaller than the data: LMDB reports MDB_MAP_RESIZED until we adopt it.
        sizes: list[int] = []
        set_mapsize = store._set_mapsize

        def spy(size: int) -> None:
            sizes.append(size)
            set_mapsize(size)

        store._set_mapsize = spy  # type: ignore[method-assign]
        assert store.stats().blocks == 201
        assert sizes == [0]
        assert sum(1 for _ in store.iter_multihashes()) == 201
        store.put_many([raw_block(os.urandom(1024)) for _ in range(10)])
        assert store.verify_all() == []
        assert store.gc(links_of).removed_blocks == 211


def test_readers_do_not_block_a_writer_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LmdbBlockStore(path, sync=False) as store:
        store.put_many([raw_block(b"%d" % i) for i in range(3000)])
        writer = spawn(
            tmp_path,
            """
            with LmdbBlockStore(path, sync=False) as store:
                print(store.put_many([raw(b"child %d" % i) for i in range(100)]), flush=True)
            """,
            str(path),
        )
        # A long read transaction stays open while the child commits.
        txn = store._env.begin()
        try:
            assert read_line(writer) == "100"
            assert writer.wait(timeout=30) == 0
        finally:
            txn.abort()
        assert store.stats().blocks == 3100


def test_threads_share_one_store_while_the_map_grows(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with LmdbBlockStore(tmp_path / "s", map_size=1 << 20, sync=False) as store:
        first = raw_block(b"first")
        store.put(first)

        def writer(n: int) -> None:
            try:
                for i in range(20):
                    store.put_many([raw_block(os.urandom(64 * 1024)) for _ in range(8)])
                    store.put(raw_block(b"w%d-%d" % (n, i)))
            except BaseException as exc:
                errors.append(exc)

        def reader() -> None:
            try:
                for _ in range(200):
                    assert store.get(first.cid) == b"first"
                    store.stats()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        threads += [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert store.stats().blocks == 1 + 3 * 20 * 9
        assert store.verify_all() == []
