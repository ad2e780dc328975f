"""Load test of a real node's HTTP server: many concurrent requests of mixed kinds, at once.

1. Starts ``dre node start --http 127.0.0.1:0`` (a real process, libp2p on loopback) in a fresh
   temporary home, with an API token created first (``dre token create --can publish``).
2. Publishes ``--packages`` documents through ``POST /api/v1/packages`` (not timed), collects the
   CIDs of every block of their trees from the gateway (``?format=car``), waits until the search
   engine answers, sends ``--baseline`` requests of each read kind one at a time (service time
   without queueing), and waits until the node's background work (indexing) is quiet.
3. Fires ``--requests`` requests *all at once*: searches, package info, gateway raw blocks
   (``?format=raw``), gateway files (path gateway) and ``--publishes`` new packages with the
   token, shared among ``--clients`` processes, each one async httpx client (one process alone
   spends more CPU in httpx's pool than the node spends answering). The pools hold
   ``--connections`` connections together: more new connections at once than the node's listen
   backlog (hypercorn's default, 100) wait on SYN retransmits. Every answer is checked: status,
   a block's bytes against its CID, a file's bytes against the document's generated tree.
4. Afterwards every publish must be visible: its package info lists the version with the
   manifest the publish answered, and its tree comes back through the gateway as a CAR whose
   files are exactly what the document generates. A publish that failed or is not so is *lost*.
5. With ``--costs N``: N requests of each kind alone, for the node's CPU per request of each
   kind (read from ``/proc``, so it does not depend on what else the machine runs).

Reports count, errors, p50 / p90 / p99 / max latency per kind and overall, throughput, node and
client CPU, and the node's own request counters from ``/metrics`` when the metrics middleware is
installed; writes ``simulations/results/load_http.json``; exits 1 on any error or lost publish.

Usage: ``python simulations/load_http.py [--requests 1000] [--publishes 20] [--packages 40]``.
The node's default rate limits stay on: 1000 requests from one address fit in its burst.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from dre.protocol import exporter
from dre.protocol.car import read_car
from dre.protocol.cid import CID, Block, parse_cid, verify_block
from dre.protocol.generator import generate

HERE = Path(__file__).resolve().parent
DRE = str(Path(sys.executable).parent / "dre")


class EXE:
    """The ``dre`` executable used (``--dre``; the venv's by default)."""

    dre = DRE
RESULTS = HERE / "results" / "load_http.json"

WORDS = ["retry", "backoff", "parser", "cache", "stream", "token", "queue", "json", "color",
         "string", "pad", "format", "http", "client", "config", "logging", "date", "time",
         "crypto", "hash", "image", "resize", "csv", "table", "markdown", "slug", "path"]
CATEGORIES = ["utilities", "text", "web", "data", "security", "media"]
QUERIES = ["retry with backoff", "string padding", "parse json", "http client", "cache",
           "markdown", "date and time", "hash", "resize images", "csv table", "slug", "logging"]
#: Publishes in the each-kind-alone phase (--costs).
PUBLISH_COSTS = 30
#: Share of each read kind in the mix (publishes are --publishes on top, taken from these).
MIX = {"search": 0.30, "info": 0.30, "block": 0.33, "file": 0.07}


def package_doc(name: str, seed: int) -> bytes:
    """A small node-library document whose words vary with ``seed`` (for search)."""
    rng = random.Random(seed)
    words = rng.sample(WORDS, 4)
    body = "\n".join(f"  // {rng.choice(WORDS)} step {i}: {rng.random():.6f}" for i in range(20))
    return f"""---
name: {name}
version: 1.0.{seed % 7}
description: {words[0].capitalize()} {words[1]} helpers with {words[2]} and {words[3]} support.
license: MIT
keywords: [{", ".join(words)}]
category: {rng.choice(CATEGORIES)}
template: node-library
---

# {name}

{words[0].capitalize()} and {words[1]} for small programs; {words[2]} included.

```js file=index.js
"use strict";
function run(input) {{
{body}
  return input;
}}
module.exports = run;
```
""".encode()


def dre(home: Path, *args: str) -> str:
    proc = subprocess.run([EXE.dre, *args], env={**os.environ, "DRE_HOME": str(home)},
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"dre {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Sample:
    kind: str
    seconds: float
    status: int | None
    error: str | None = None


@dataclass
class World:
    """What the load phase asks for, gathered while setting up."""

    api: str
    token: str
    names: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    #: (url path under the gateway, expected bytes)
    files: list[tuple[str, bytes]] = field(default_factory=list)


def start_node(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = (home.parent / "node.log").open("wb")
    proc = subprocess.Popen(
        [EXE.dre, "node", "start", "--http", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0"],
        env={**os.environ, "DRE_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (home / "api").exists():
        if proc.poll() is not None:
            raise SystemExit(f"the node exited {proc.returncode}: "
                             f"{(home.parent / 'node.log').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the node did not start within 120 s")
        time.sleep(0.1)
    return proc, (home / "api").read_text().strip()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, *, limit: float, quiet: float = 0.05) -> float | None:
    """Wait until process ``pid`` uses under ``quiet`` of a core over a second (at most
    ``limit`` seconds); the share it used in the last second, or None without ``/proc``."""
    deadline = time.monotonic() + limit
    while True:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        after = cpu_seconds(pid)
        if before is None or after is None:
            return None
        if after - before < quiet or time.monotonic() > deadline:
            return after - before


def publish_body(doc: bytes) -> dict[str, Any]:
    return {"documentation": base64.b64encode(doc).decode()}


async def setup(client: httpx.AsyncClient, world: World, packages: int) -> dict[str, Any]:
    """Publish the packages the load reads, collect their blocks and files."""
    headers = {"Authorization": f"Bearer {world.token}"}
    for i in range(packages):
        name = f"load-pkg-{i:03}"
        doc = package_doc(name, i)
        response = await client.post("/api/v1/packages", json=publish_body(doc), headers=headers)
        if response.status_code in (404, 405):
            raise SystemExit("POST /api/v1/packages does not exist on this node: "
                             "the publish route is missing, no load test possible")
        if response.status_code != 201:
            raise SystemExit(f"setup publish of {name}: {response.status_code} {response.text}")
        world.names.append(name)
        package = response.json()["package"]
        car = await client.get(f"/ipfs/{package}?format=car")
        car.raise_for_status()
        _header, blocks = read_car(car.content)
        world.blocks += [str(b.cid) for b in blocks]
        for path, data in generate(doc).files.items():
            world.files.append((f"/ipfs/{package}/{path}", data))
    # The search engine loads its model in the background: wait until it answers.
    deadline = time.monotonic() + 180
    while True:
        response = await client.get("/api/v1/search", params={"q": "retry"})
        if response.status_code == 200:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"search never answered: {response.status_code} {response.text}")
        await trio.sleep(0.5)
    return {"packages": packages, "blocks": len(world.blocks), "files": len(world.files)}


def plan(world: World, requests: int, publishes: int, seed: int,
         only: str | None = None) -> list[tuple[str, Any]]:
    rng = random.Random(seed)
    reads = requests - publishes
    if only is not None:  # one kind alone, to see what each costs the node
        counts = {kind: (reads if kind == only else 0) for kind in MIX}
    else:
        counts = {kind: int(reads * share) for kind, share in MIX.items()}
        counts["search"] += reads - sum(counts.values())
    jobs: list[tuple[str, Any]] = []
    for _ in range(counts["search"]):
        jobs.append(("search", rng.choice(QUERIES)))
    for _ in range(counts["info"]):
        jobs.append(("info", rng.choice(world.names)))
    for _ in range(counts["block"]):
        jobs.append(("block", rng.choice(world.blocks)))
    for _ in range(counts["file"]):
        jobs.append(("file", rng.choice(world.files)))
    for i in range(publishes):
        jobs.append(("publish", (f"load-new-{seed}-{i:03}", 1000 + i)))
    rng.shuffle(jobs)
    return jobs


async def one(client: httpx.AsyncClient, world: World, kind: str, arg: Any,
              published: dict[str, dict[str, Any]], start: trio.Event,
              samples: list[Sample]) -> None:
    await start.wait()
    began = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        if kind == "search":
            response = await client.get("/api/v1/search", params={"q": arg, "limit": 10})
            status = response.status_code
            if status == 200 and "hits" not in response.json():
                error = "search answer without hits"
        elif kind == "info":
            response = await client.get(f"/api/v1/packages/{arg}")
            status = response.status_code
            if status == 200 and response.json()["name"] != arg:
                error = "info for another package"
        elif kind == "block":
            response = await client.get(f"/ipfs/{arg}?format=raw")
            status = response.status_code
            if status == 200:
                verify_block(parse_cid(arg), response.content)
        elif kind == "file":
            path, expected = arg
            response = await client.get(path)
            status = response.status_code
            if status == 200 and response.content != expected:
                error = "file bytes differ from the generated tree"
        else:
            name, doc_seed = arg
            response = await client.post(
                "/api/v1/packages", json=publish_body(package_doc(name, doc_seed)),
                headers={"Authorization": f"Bearer {world.token}"})
            status = response.status_code
            if status == 201:
                published[name] = response.json()
        expected_status = 201 if kind == "publish" else 200
        if status != expected_status and error is None:
            error = f"HTTP {status}: {response.text[:200]}"
    except Exception as exc:  # every failure is a data point, not a crash
        error = f"{type(exc).__name__}: {exc}"[:300]
    samples.append(Sample(kind, time.perf_counter() - began, status, error))


def tree_files(blocks: list[Block], root: CID) -> dict[str, bytes]:
    """Every file of the UnixFS tree ``root`` read from ``blocks`` alone."""
    by_cid = {bytes(b.cid): b.data for b in blocks}

    def get(cid: CID) -> bytes:
        return by_cid[bytes(cid)]

    return {path: b"".join(exporter.read_file(get, info.cid))
            for path, info in exporter.walk(get, root) if info.kind == "file"}


async def check_publishes(client: httpx.AsyncClient, docs: dict[str, bytes],
                          published: dict[str, dict[str, Any]]) -> list[str]:
    """What went wrong with the publishes, checked afterwards: an accepted publish (201) not
    fully visible (info, manifest, tree) is lost; a refused one (its error is counted with the
    errors) must have changed nothing, its name must be unknown."""
    lost = []
    for name, doc in docs.items():
        answer = published.get(name)
        if answer is None:
            if (await client.get(f"/api/v1/packages/{name}")).status_code != 404:
                lost.append(f"{name}: refused, yet the node knows the name")
            continue
        info = await client.get(f"/api/v1/packages/{name}")
        if info.status_code != 200:
            lost.append(f"{name}: info answered {info.status_code}")
            continue
        versions = {v["version"]: v["manifest"] for v in info.json()["versions"]}
        if versions.get(answer["version"]) != answer["manifest"]:
            lost.append(f"{name}: version {answer['version']} not listed with its manifest")
            continue
        car = await client.get(f"/ipfs/{answer['package']}?format=car")
        try:
            _header, blocks = read_car(car.content)  # every block verified against its CID
            tree = tree_files(blocks, parse_cid(answer["package"]))
        except Exception as exc:
            lost.append(f"{name}: tree not whole through the gateway ({exc})")
            continue
        if tree != generate(doc).files:
            lost.append(f"{name}: the tree differs from what its document generates")
    return lost


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ms = sorted(v * 1000 for v in values)
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"p50_ms": round(cuts[49], 2), "p90_ms": round(cuts[89], 2),
            "p99_ms": round(cuts[98], 2), "max_ms": round(ms[-1], 2)}


def node_counters(text: str) -> dict[str, float]:
    """``dre_http_requests_total`` by route from a /metrics scrape (empty if not exported)."""
    totals: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("dre_http_requests_total{"):
            labels, _, value = line.rpartition(" ")
            route = labels.split('route="', 1)[1].split('"', 1)[0]
            totals[route] += float(value)
    return dict(totals)


async def prepare(api: str, token: str, args: argparse.Namespace
                  ) -> tuple[World, dict[str, Any], dict[str, float]]:
    world = World(api=api, token=token)
    async with httpx.AsyncClient(base_url=api, timeout=httpx.Timeout(args.timeout)) as client:
        prepared = await setup(client, world, args.packages)
        counters = node_counters((await client.get("/metrics")).text)
    return world, prepared, counters


async def _fire(api: str, token: str, jobs: list[tuple[str, Any]], start_at: float,
                connections: int, request_timeout: float) -> dict[str, Any]:
    # A fresh client per worker: no connection left idle by the setup, which the server's
    # keep-alive timeout could close just as the client reuses it (a client-side race).
    world = World(api=api, token=token)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    samples: list[Sample] = []
    published: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=api, limits=limits,
                                 timeout=httpx.Timeout(request_timeout)) as client:
        start = trio.Event()
        async with trio.open_nursery() as nursery:
            for kind, arg in jobs:
                nursery.start_soon(one, client, world, kind, arg, published, start, samples)
            await trio.sleep(max(start_at - time.time(), 0))  # every worker starts together
            cpu_before = cpu_seconds(os.getpid())
            start.set()
        cpu_after = cpu_seconds(os.getpid())
    return {"samples": [(s.kind, s.seconds, s.status, s.error) for s in samples],
            "published": published, "ended": time.time(),
            "cpu": (cpu_after - cpu_before) if cpu_before is not None and cpu_after else None}


def worker(api: str, token: str, jobs: list[tuple[str, Any]], start_at: float,
           connections: int, request_timeout: float) -> dict[str, Any]:
    """One client process: its share of the requests, all at once at ``start_at``."""
    return trio.run(_fire, api, token, jobs, start_at, connections, request_timeout)


async def verify_afterwards(api: str, docs: dict[str, bytes],
                            published: dict[str, dict[str, Any]], request_timeout: float
                            ) -> tuple[list[str], dict[str, float]]:
    async with httpx.AsyncClient(base_url=api,
                                 timeout=httpx.Timeout(request_timeout)) as client:
        lost = await check_publishes(client, docs, published)
        counters = node_counters((await client.get("/metrics")).text)
    return lost, counters


async def baseline(world: World, per_kind: int, seed: int) -> dict[str, Any]:
    """Each read kind alone, one request at a time: the service time without queueing."""
    rng = random.Random(seed + 1)
    jobs = [(kind, arg) for kind, arg in plan(world, len(MIX) * per_kind * 4, 0, seed)]
    rng.shuffle(jobs)
    samples: list[Sample] = []
    async with httpx.AsyncClient(base_url=world.api, timeout=httpx.Timeout(60)) as client:
        started = trio.Event()
        started.set()
        for kind in MIX:
            for job in [j for j in jobs if j[0] == kind][:per_kind]:
                await one(client, world, job[0], job[1], {}, started, samples)
    return {kind: {"requests": sum(s.kind == kind for s in samples),
                   "errors": sum(s.kind == kind and s.error is not None for s in samples),
                   **percentiles([s.seconds for s in samples if s.kind == kind])}
            for kind in MIX}


def phase(world: World, jobs: list[tuple[str, Any]], node_pid: int, args: argparse.Namespace
          ) -> tuple[list[Sample], dict[str, dict[str, Any]], float, float | None,
                     list[float | None]]:
    """``jobs`` fired at once from ``args.clients`` processes: samples, publish answers, wall
    seconds, node CPU seconds, each client's CPU seconds."""
    shares = [jobs[i::args.clients] for i in range(args.clients)]
    per_client = max(args.connections // args.clients, 1)
    # Spawned, not forked: a clean interpreter per client, nothing inherited from trio.
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.clients) as pool:
        start_at = time.time() + 5.0  # time for every worker to import and queue its tasks
        pending = pool.starmap_async(worker, [(world.api, world.token, share, start_at,
                                               per_client, args.timeout) for share in shares])
        time.sleep(max(start_at - time.time(), 0))
        cpu_before = cpu_seconds(node_pid)
        results = pending.get()
        cpu_after = cpu_seconds(node_pid)
    wall = max(r["ended"] for r in results) - start_at
    samples = [Sample(*row) for r in results for row in r["samples"]]
    published = {k: v for r in results for k, v in r["published"].items()}
    node_cpu = (cpu_after - cpu_before) if cpu_before is not None and cpu_after else None
    return samples, published, wall, node_cpu, [r["cpu"] for r in results]


def load(api: str, token: str, node_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    world, prepared, before = trio.run(prepare, api, token, args)
    alone = trio.run(baseline, world, args.baseline, args.seed)
    # The node indexes what the setup published (search embeddings) in the background: wait
    # until it is quiet, so the load phase's CPU is what the requests cost (plus what the
    # publishes during it start). `idle` is what is left of that background per second.
    idle = wait_quiet(node_pid, limit=120.0)
    jobs = plan(world, args.requests, args.publishes, args.seed, args.only)
    samples, published, wall, node_cpu, client_cpu = phase(world, jobs, node_pid, args)
    costs = {}
    if args.costs and args.only is None:
        # Each kind alone on the same node: what one request of it costs the node in CPU.
        for kind in [*MIX, "publish"]:
            wait_quiet(node_pid, limit=60.0)
            # Publishes: at most PUBLISH_COSTS, within one token's rate-limit burst (the
            # node answers 429 beyond it, which is the limit working, not a cost figure).
            count = min(args.costs, PUBLISH_COSTS) if kind == "publish" else args.costs
            alone_jobs = plan(world, count, count if kind == "publish" else 0,
                              args.seed + 7, None if kind == "publish" else kind)
            cost = phase(world, alone_jobs, node_pid, args)
            costs[kind] = {
                "requests": len(cost[0]), "errors": sum(x.error is not None for x in cost[0]),
                "node_cpu_ms_per_request": (round(cost[3] * 1000 / len(cost[0]), 2)
                                            if cost[3] is not None and cost[0] else None),
                "throughput_rps": round(len(cost[0]) / cost[2], 1),
                "error_examples": sorted(Counter(x.error for x in cost[0] if x.error).items(),
                                         key=lambda kv: -kv[1])[:3]}
            if kind == "publish":
                cost_docs = {a[0]: package_doc(*a) for k, a in alone_jobs if k == "publish"}
                cost_lost, _ = trio.run(verify_afterwards, world.api, cost_docs, cost[1],
                                        args.timeout)
                costs[kind]["lost"] = len(cost_lost)
                costs[kind]["accepted"] = len(cost[1])
    docs = {arg[0]: package_doc(*arg) for kind, arg in jobs if kind == "publish"}
    lost, after = trio.run(verify_afterwards, api, docs, published, args.timeout)

    by_kind: dict[str, Any] = {}
    for kind in [*MIX, "publish"]:
        mine = [s for s in samples if s.kind == kind]
        by_kind[kind] = {"requests": len(mine), "errors": sum(s.error is not None for s in mine),
                         **percentiles([s.seconds for s in mine])}
    errors = [f"{s.kind}: {s.error}" for s in samples if s.error is not None]
    node_cpu = round(node_cpu, 3) if node_cpu is not None else None
    served = {route: after.get(route, 0) - before.get(route, 0) for route in after}
    return {
        "setup": prepared,
        "requests": len(samples),
        "concurrency": len(jobs),
        "client_processes": args.clients,
        "connections": max(args.connections // args.clients, 1) * args.clients,
        "wall_seconds": round(wall, 3),
        # CPU the node process spent during the load phase: what the requests cost it,
        # whatever else runs on the machine (wall-clock figures depend on that).
        "node_cpu_seconds": node_cpu,
        "node_idle_cpu_share": round(idle, 3) if idle is not None else None,
        "node_cpu_ms_per_request": (round(node_cpu * 1000 / len(samples), 2)
                                    if node_cpu is not None and samples else None),
        "client_cpu_seconds": (round(sum(client_cpu), 3)
                               if all(c is not None for c in client_cpu) else None),
        "throughput_rps": round(len(samples) / wall, 1),
        "errors": len(errors),
        "error_examples": sorted(Counter(errors).items(), key=lambda kv: -kv[1])[:10],
        "statuses": dict(Counter(str(s.status) for s in samples)),
        "publishes": {"requested": len(docs), "accepted": len(published),
                      "lost": len(lost), "lost_detail": lost},
        "overall": percentiles([s.seconds for s in samples]),
        "one_at_a_time": alone,
        "each_kind_alone": costs,
        "by_kind": by_kind,
        "node_counted_by_route": served or "metrics middleware not installed on this node",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--publishes", type=int, default=20)
    parser.add_argument("--packages", type=int, default=40, help="published before the load")
    parser.add_argument("--connections", type=int, default=100,
                        help="connections in all client pools together; more than the node's "
                             "listen backlog (hypercorn's 100) opened at once overflow it")
    parser.add_argument("--clients", type=int, default=8,
                        help="client processes sharing the requests (one async httpx client "
                             "each; one process alone spends more CPU than the node)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=list(MIX), default=None,
                        help="reads of this one kind only (with --publishes 0: no writes)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--baseline", type=int, default=30,
                        help="requests per read kind sent one at a time before the load")
    parser.add_argument("--costs", type=int, default=500,
                        help="afterwards, this many requests of each kind alone, for the node's "
                             "CPU per request of each kind (0: skip)")
    parser.add_argument("--keep-home", action="store_true")
    parser.add_argument("--dre", default=DRE, help="the dre executable to run")
    args = parser.parse_args()
    EXE.dre = args.dre

    workdir = Path(tempfile.mkdtemp(prefix="dre-load-"))
    home = workdir / "home"
    proc: subprocess.Popen[bytes] | None = None
    try:
        dre(home, "init")
        token = json.loads(dre(home, "token", "create", "--scope", "*", "--can", "publish",
                               "--name", "load", "--json"))["secret"]
        proc, api = start_node(home)
        report = load(api, token, proc.pid, args)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not args.keep_home:
            shutil.rmtree(workdir, ignore_errors=True)

    report = {
        "what": "simulations/load_http.py: concurrent mixed HTTP load on one real node process",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **report,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['requests']} requests, {report['errors']} errors, "
          f"{report['publishes']['lost']} lost publishes of {report['publishes']['requested']}; "
          f"{report['throughput_rps']} req/s over {report['wall_seconds']} s; node CPU "
          f"{report['node_cpu_seconds']} s ({report['node_cpu_ms_per_request']} ms/request)")
    print(f"{'kind':<9}{'n':>6}{'err':>5}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for kind, row in [*report["by_kind"].items(), ("overall", {
            "requests": report["requests"], "errors": report["errors"], **report["overall"]})]:
        print(f"{kind:<9}{row['requests']:>6}{row['errors']:>5}{row.get('p50_ms', 0):>10}"
              f"{row.get('p90_ms', 0):>10}{row.get('p99_ms', 0):>10}{row.get('max_ms', 0):>10}")
    if report["each_kind_alone"]:
        print("each kind alone, node CPU ms per request: " + ", ".join(
            f"{kind} {row['node_cpu_ms_per_request']}"
            for kind, row in report["each_kind_alone"].items()))
    print("one request at a time (no queueing), p50 / p99 ms: " + ", ".join(
        f"{kind} {row.get('p50_ms')} / {row.get('p99_ms')}"
        for kind, row in report["one_at_a_time"].items()))
    if report["errors"]:
        for text, count in report["error_examples"]:
            print(f"  {count} x {text}")
    print(f"wrote {args.out}")
    alone_faults = sum(row["errors"] + row.get("lost", 0)
                       for row in report["each_kind_alone"].values())
    if report["errors"] or report["publishes"]["lost"] or alone_faults:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
