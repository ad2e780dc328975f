"""Benchmark: our `add` and `cat` against their limits and against embedded Kubo, in one run.

Same inputs for everyone, measured back to back on this machine (it is shared and noisy, so only
the ratios within one run mean anything):

* inputs: a 256 MiB random file, and a real tree (this venv's site-packages);
* ``sha256``: hashing the bytes in 256 KiB chunks (read from the page cache) — the hashing limit;
* ``sha256+lmdb``: read, chunk, hash and put every chunk into a fresh LMDB in one synced
  transaction — the ingest limit of this design;
* ``dre add``: our importer into our LMDB store, pinned (the library path the CLI runs);
* ``kubo add``: embedded Kubo 0.22's ``ipfs add`` (CIDv0 defaults) of the same path, timed as
  the wall time of a subprocess minus that of the same subprocess adding a 1-byte file (start-up);
* ``cat`` vs ``get+verify``: reading the 256 MiB file back through our exporter with
  its per-block verification, against a bare loop of LMDB get + sha256 over the same blocks.

Usage: ``python simulations/bench_add.py [--size-mib 256] [--tree PATH] [--repeat 3]``.
Writes ``simulations/results/bench_add.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
from dre.protocol import exporter
from dre.protocol.cid import parse_cid
from dre.protocol.importer import PROFILE_V1
from dre.protocol.links import iter_dag
from dre.storage.importing import import_path, scan_path
from dre.storage.lmdb_store import LmdbBlockStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KUBO_ADD = ROOT / "tests" / "interop" / "kubo_add.py"
CHUNK = 262144


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def iter_files(path: Path) -> list[Path]:
    return [e.path for e in scan_path(path) if e.kind == "file"]


def sha256_only(files: list[Path]) -> None:
    for file in files:
        with file.open("rb", buffering=0) as fh:
            while chunk := fh.read(CHUNK):
                hashlib.sha256(chunk).digest()


def sha256_lmdb(files: list[Path], workdir: Path) -> None:
    db_dir = workdir / "limit-lmdb"
    shutil.rmtree(db_dir, ignore_errors=True)
    db_dir.mkdir()
    env = lmdb.open(str(db_dir), map_size=4 << 30, sync=True)
    with env.begin(write=True) as txn:
        for file in files:
            with file.open("rb", buffering=0) as fh:
                while chunk := fh.read(CHUNK):
                    txn.put(hashlib.sha256(chunk).digest(), chunk)
    env.close()


def dre_add(path: Path, workdir: Path) -> str:
    store_dir = workdir / "dre-store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store_dir.mkdir()
    with LmdbBlockStore(store_dir, map_size=4 << 30) as store:
        result = import_path(store, path, PROFILE_V1)
    return str(result.root.cid)


def kubo_add_seconds(path: Path, tiny: Path) -> float | None:
    """Wall time of embedded Kubo adding ``path``, less its start-up (adding a 1-byte file)."""
    if not KUBO_ADD.exists():
        return None

    def run(target: Path) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(KUBO_ADD), str(target)], check=True,
                       capture_output=True, timeout=600)
        return time.perf_counter() - start

    try:
        baseline = min(run(tiny) for _ in range(2))
        return max(run(path) - baseline, 1e-6)
    except (subprocess.SubprocessError, OSError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--tree", type=Path,
                        default=Path(sysconfig.get_paths()["purelib"]))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_add.json")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="dre-bench-"))
    try:
        big = workdir / "random.bin"
        rng = random.Random(256)
        with big.open("wb") as fh:
            for _ in range(args.size_mib):
                fh.write(rng.randbytes(1 << 20))
        tiny = workdir / "tiny.txt"
        tiny.write_bytes(b"x")
        inputs = {"random_file": big, "tree": args.tree}
        report: dict[str, object] = {"repeat": args.repeat, "inputs": {}}
        for label, path in inputs.items():
            files = iter_files(path)
            nbytes = sum(f.stat().st_size for f in files)
            sha256_only(files)  # warm the page cache so everyone reads from memory
            t_sha = median_time(lambda f=files: sha256_only(f), args.repeat)
            t_limit = median_time(lambda f=files: sha256_lmdb(f, workdir), args.repeat)
            t_dre = median_time(lambda p=path: dre_add(p, workdir), args.repeat)
            t_kubo = kubo_add_seconds(path, tiny)
            mb = nbytes / 1e6
            row = {
                "path": str(path),
                "files": len(files),
                "bytes": nbytes,
                "sha256_MBps": mb / t_sha,
                "sha256_lmdb_MBps": mb / t_limit,
                "dre_add_MBps": mb / t_dre,
                "kubo_add_MBps": (mb / t_kubo) if t_kubo else None,
                "dre_vs_limit": t_limit / t_dre,
                "dre_vs_kubo": (t_kubo / t_dre) if t_kubo else None,
            }
            report["inputs"][label] = row  # type: ignore[index]

        # cat: our exporter with verify-on-read vs. bare LMDB get + sha256 over the same DAG.
        store_dir = workdir / "dre-store"
        root_text = dre_add(big, workdir)
        # The exporter checks every block against its CID itself (as `dre cat` does).
        with LmdbBlockStore(store_dir) as store:
            root = parse_cid(root_text)
            cids = [cid for cid, _ in iter_dag(store.get, root)]

            def cat() -> None:
                for _chunk in exporter.read_file(store.get, root):
                    pass

            t_cat = median_time(cat, args.repeat)
        mb = big.stat().st_size / 1e6
        with LmdbBlockStore(store_dir, verify_on_read=False) as raw_store:
            def raw_get_verify() -> None:
                for cid in cids:
                    hashlib.sha256(raw_store.get(cid)).digest()

            t_limit_cat = median_time(raw_get_verify, args.repeat)
        report["cat"] = {
            "bytes": big.stat().st_size,
            "dre_cat_MBps": mb / t_cat,
            "get_verify_MBps": mb / t_limit_cat,
            "dre_vs_limit": t_limit_cat / t_cat,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'input':<12} {'files':>6} {'MB':>8} {'sha256':>9} {'sha+lmdb':>9} {'dre add':>9} "
          f"{'kubo add':>9} {'dre/limit':>9} {'dre/kubo':>9}")
    for label, row in report["inputs"].items():  # type: ignore[attr-defined]
        kubo = f"{row['kubo_add_MBps']:9.0f}" if row["kubo_add_MBps"] else f"{'n/a':>9}"
        ratio = f"{row['dre_vs_kubo']:8.2f}x" if row["dre_vs_kubo"] else f"{'n/a':>9}"
        print(f"{label:<12} {row['files']:>6} {row['bytes'] / 1e6:8.1f} {row['sha256_MBps']:9.0f} "
              f"{row['sha256_lmdb_MBps']:9.0f} {row['dre_add_MBps']:9.0f} {kubo} "
              f"{row['dre_vs_limit']:8.0%} {ratio}")
    cat_row = report["cat"]
    print(f"cat 256 MiB: dre cat {cat_row['dre_cat_MBps']:.0f} MB/s (every block verified), "  # type: ignore[index]
          f"LMDB get+sha256 {cat_row['get_verify_MBps']:.0f} MB/s, "  # type: ignore[index]
          f"ratio {cat_row['dre_vs_limit']:.0%}")  # type: ignore[index]
    print(f"(MB = 10^6 bytes; JSON in {args.out})")
    os.sync()


if __name__ == "__main__":
    main()
