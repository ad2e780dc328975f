"""Benchmark: publish and verify on one node, through the library path the CLI uses.

1. A ~100 KB package (python-library template, several source files): publish 200 distinct
   versions and verify each; medians and p95 of each operation, against the 50 ms target.
   For scale, the same run times the two floors every publish pays: generating the tree
   (pure CPU) and one fsync'd LMDB commit.
2. 1000 packages x 5 versions, end to end (generate, sign, store, index, audit log), then a
   verify of a sample: total time and per-publish rate.

Usage: ``python simulations/bench_publish.py [--versions 200] [--packages 1000] [--per 5]``.
Writes ``simulations/results/bench_publish.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import lmdb
from dre.protocol.generator import generate
from dre.protocol.keys import PublisherKey
from dre.protocol.packages import build_tree
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

HERE = Path(__file__).resolve().parent
KEY = PublisherKey.from_seed(bytes(range(32)))
VERIFIER = PublisherKey.from_seed(bytes(range(1, 33)))


def package_doc(name: str, version: str, size: int, seed: int) -> bytes:
    """A realistic-looking python-library document with about ``size`` bytes of code."""
    rng = random.Random(seed)
    words = ["retry", "backoff", "client", "parse", "token", "cache", "buffer", "stream",
             "window", "limit", "header", "frame", "queue", "event", "state", "value"]
    parts = [
        "---", f"name: {name}", f"version: {version}",
        "description: A benchmark package with several modules of generated code.",
        "license: MIT", "keywords: [bench, generated]", "category: utilities",
        "template: python-library", "---", "", f"# {name}", "",
        "This package exists to measure publishing. Each module below is tangled into a file.", "",
    ]
    written, module = 0, 0
    while written < size:
        lines = []
        for i in range(60):
            a, b = rng.choice(words), rng.choice(words)
            lines.append(f"def {a}_{b}_{module}_{i}(x):\n    return x * {rng.randint(1, 999)}"
                         f"  # {a} {b}\n")
        body = "".join(lines)
        parts += [f"## Module {module}", "", f"```python file=src/bench/mod{module}.py",
                  body.rstrip("\n"), "```", ""]
        written += len(body)
        module += 1
    return ("\n".join(parts) + "\n").encode()


def stats_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[int(len(ordered) * 0.95) - 1] * 1000,
        "n": len(ordered),
    }


def fsync_commit_floor(workdir: Path, rounds: int = 50) -> float:
    env = lmdb.open(str(workdir / "floor"), map_size=1 << 26, sync=True)
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        with env.begin(write=True) as txn:
            txn.put(str(i).encode(), b"x" * 512)
        times.append(time.perf_counter() - start)
    env.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--per", type=int, default=5)
    # ~50 KB of code: the README template repeats the prose and code, so the package is ~100 KB.
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_publish.json")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="dre-bench-publish-"))
    report: dict[str, object] = {}
    try:
        home = workdir / "home"
        Repo.init(home)
        docs = [package_doc("bench-pkg", f"1.0.{i}", args.size, seed=i)
                for i in range(args.versions)]
        report["doc_bytes"] = len(docs[0])
        report["package_bytes"] = generate(docs[0]).total_bytes
        gen_times = []
        for text in docs[:50]:
            start = time.perf_counter()
            build_tree(generate(text).files)
            gen_times.append(time.perf_counter() - start)
        publish_times, verify_times = [], []
        with Repo.open(home) as repo:
            registry = LocalRegistry(repo)
            for i, text in enumerate(docs):
                start = time.perf_counter()
                registry.publish(text, KEY, now=1_790_000_000 + i)
                publish_times.append(time.perf_counter() - start)
            for i in range(args.versions):
                start = time.perf_counter()
                result = registry.verify("bench-pkg", f"1.0.{i}", VERIFIER, now=1_790_100_000)
                verify_times.append(time.perf_counter() - start)
                assert result.reproduced and result.intact and result.signature_valid
        report["single_package"] = {
            "publish": stats_ms(publish_times),
            "verify": stats_ms(verify_times),
            "generate_and_build_floor": stats_ms(gen_times),
            "fsync_commit_floor_ms": fsync_commit_floor(workdir) * 1000,
        }

        home2 = workdir / "home2"
        Repo.init(home2)
        total = args.packages * args.per
        small = [package_doc(f"pkg-{p:04d}", f"1.{v}.0", 4000, seed=p * 10 + v)
                 for p in range(args.packages) for v in range(args.per)]
        with Repo.open(home2) as repo:
            registry = LocalRegistry(repo)
            start = time.perf_counter()
            for i, text in enumerate(small):
                registry.publish(text, KEY, now=1_790_000_000 + i)
            elapsed = time.perf_counter() - start
            sample = random.Random(1).sample(range(args.packages), min(50, args.packages))
            v_start = time.perf_counter()
            for p in sample:
                result = registry.verify(f"pkg-{p:04d}", None, VERIFIER, now=1_790_200_000)
                assert result.reproduced and result.intact
            v_elapsed = time.perf_counter() - v_start
            versions_ok = all(len(registry.versions(f"pkg-{p:04d}")) == args.per for p in sample)
        report["many_packages"] = {
            "packages": args.packages, "versions_each": args.per, "publishes": total,
            "total_s": elapsed, "per_publish_ms": elapsed / total * 1000,
            "publishes_per_s": total / elapsed,
            "verify_sample_ms": v_elapsed / len(sample) * 1000, "versions_ok": versions_ok,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    single = report["single_package"]
    many = report["many_packages"]
    print(f"package: {report['package_bytes']} bytes generated from a {report['doc_bytes']}"
          "-byte document")
    for op in ("publish", "verify", "generate_and_build_floor"):
        s = single[op]  # type: ignore[index]
        print(f"  {op:<26} median {s['median_ms']:7.1f} ms  p95 {s['p95_ms']:7.1f} ms  "
              f"(n={s['n']})")
    print(f"  fsync'd LMDB commit floor  median {single['fsync_commit_floor_ms']:7.1f} ms")  # type: ignore[index]
    print(f"{many['publishes']} publishes ({many['packages']} packages x "  # type: ignore[index]
          f"{many['versions_each']} versions): {many['total_s']:.1f} s, "  # type: ignore[index]
          f"{many['per_publish_ms']:.1f} ms each, {many['publishes_per_s']:.0f}/s; "  # type: ignore[index]
          f"verify {many['verify_sample_ms']:.1f} ms each")  # type: ignore[index]
    print(f"(JSON in {args.out}; target: publish and verify medians < 50 ms)")


if __name__ == "__main__":
    main()
