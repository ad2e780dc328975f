"""Simulation: a network of real py-libp2p nodes on loopback, across several processes.

What it measures, in one run (issue 4, "Must show"):

* **announcement propagation**: ``--workers`` processes each run ``--nodes`` nodes (host + gossip
  + DHT, one ``trio.run`` per process) joined into a connected random topology (a random ring
  plus ``--extra-dials`` random links per node, across processes). One node publishes
  ``--messages`` signed manifests, ``--interval`` s apart; every node stamps each arrival with
  ``time.time()`` (one machine, one clock). Reported: p50/p99 of the latency to each node, and
  of the time until a message has reached *all* nodes; deliveries missing after the wait.
* **DHT lookup**: one node provides ``--dht-keys`` CIDs; nodes in the *other* processes time
  ``find_providers(cid, count=1)`` for each.
* **fetch throughput**: two fresh node processes (one core each, after the network above has
  stopped, so the 33 nodes' heartbeats do not perturb it): the server imports a ``--size-mib``
  random file into an LMDB store; the client fetches it with ``BlockExchange.fetch_dag`` into an
  empty LMDB store, and, over the same connection, reads the same bytes from a raw py-libp2p
  stream (``PREFERRED_WRITE_SIZE`` writes, read until EOF). ``--rounds`` interleaved rounds;
  medians compared. ``--profile`` adds one cProfiled fetch round (both sides) to the JSON.

Targets: announcement p99 to all nodes < 1 s; a node's fetch (DAG-at-once, which a DRE node uses
before Bitswap) >= 80 % of the raw stream. Bitswap's own figure is reported beside it.

The parent is a coordinator only (no libp2p): it spawns the workers as subprocesses of this
file, speaks JSON lines with them over stdin/stdout, hands out dial lists, and kills every
worker at ``--timeout`` seconds. Workers also stop on their own when stdin closes.

Usage: ``python simulations/sim_network.py [--workers 3] [--nodes 11] [--size-mib 64]``.
Writes ``simulations/results/sim_network.json`` and ``sim_network.png``, prints a table.
"""

# Workers import py-libp2p and the node inside their functions: the coordinator stays light.
# ruff: noqa: PLC0415
from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import io
import itertools
import json
import os
import pstats
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NETWORK = "sim"
RAW_PROTOCOL = f"/dre/{NETWORK}/sim-raw/1.0.0"
MB = 1e6

# ============================================================================ worker side


class Pipe:
    """JSON lines with the coordinator: commands on stdin, replies on the real stdout.

    Anything else written to stdout (stray prints) goes to stderr instead, so the protocol
    stream stays clean.
    """

    def __init__(self) -> None:
        import trio

        self._in = trio.lowlevel.FdStream(os.dup(0))
        self._out = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._buf = b""

    async def recv(self) -> dict[str, Any] | None:
        while b"\n" not in self._buf:
            data = await self._in.receive_some(1 << 16)
            if not data:
                return None  # the coordinator is gone
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def send(self, obj: dict[str, Any]) -> None:
        data = memoryview((json.dumps(obj) + "\n").encode())
        while data:
            data = data[os.write(self._out, data) :]


def _seed(*parts: object) -> bytes:
    return hashlib.sha256(("dre-sim/" + "/".join(map(str, parts))).encode()).digest()


def _allow_all(record: Any, signer: str) -> bool:
    return True


def _manifests(count: int, nonce: str) -> list[Any]:
    """``count`` distinct signed manifest envelopes (as ``tests/node/test_gossip.py`` builds)."""
    from dre.protocol.cid import DAG_PB, RAW, cid_for
    from dre.protocol.keys import PublisherKey
    from dre.protocol.records import MANIFEST, Manifest, sign_record

    key = PublisherKey.from_seed(_seed("publisher"))
    blocks = []
    for i in range(count):
        record = Manifest(
            name="sim-pkg",
            version=f"1.0.{i}",
            description=f"simulation run {nonce}",
            license="Apache-2.0",
            keywords=[],
            category="tools",
            dependencies={},
            package=cid_for(b"package %s %d" % (nonce.encode(), i), DAG_PB),
            doc=cid_for(b"doc %s %d" % (nonce.encode(), i), RAW),
            generator="dre-generator/1",
            publisher=key.peer_id,
            previous=None,
            time=1_700_000_000 + i,
            reproducible=True,
        )
        blocks.append(sign_record(MANIFEST, record, key))
    return blocks


def _dht_keys(count: int, nonce: str) -> list[Any]:
    from dre.protocol.cid import RAW, cid_for

    return [cid_for(b"sim-dht %s %d" % (nonce.encode(), i), RAW) for i in range(count)]


class SimNode:
    def __init__(self, index: int, host: Any, gossip: Any, dht: Any) -> None:
        self.index = index
        self.host = host
        self.gossip = gossip
        self.dht = dht
        self.received: dict[str, float] = {}

    async def record(self) -> None:
        async for item in self.gossip.accepted:
            self.received.setdefault(str(item.block.cid), time.time())

    def status(self) -> dict[str, Any]:
        topic = self.gossip.topics["announce"]
        mesh = self.gossip.pubsub.router.mesh.get(topic, ())
        return {
            "index": self.index,
            "connected": len(self.host.connected_peers()),
            "subscribed": len(self.gossip.subscribed_peers()),
            "mesh": len(mesh),
            "routing_table": len(self.dht.routing_table_peers()),
        }


async def network_worker(cfg: dict[str, Any]) -> None:
    """``cfg["nodes"]`` nodes (host + gossip + DHT) in this process, driven by the coordinator."""
    import trio
    from dre.node import compat
    from dre.node.dht import open_dht
    from dre.node.gossip import open_gossip
    from dre.node.host import open_host
    from dre.protocol.cid import parse_cid

    pipe = Pipe()
    worker = cfg["worker"]
    nodes: list[SimNode] = []
    stacks: list[AsyncExitStack] = []  # one per node, closed one by one (timed) at the end
    close_s: list[float] = []
    with trio.move_on_after(cfg["deadline"]):
        async with trio.open_nursery() as nursery:
            try:
                for i in range(cfg["nodes"]):
                    index = worker * cfg["nodes"] + i
                    stack = AsyncExitStack()
                    stacks.append(stack)
                    host = await stack.enter_async_context(
                        open_host(_seed("node", index), network=NETWORK)
                    )
                    gossip = await stack.enter_async_context(
                        open_gossip(
                            host.host,
                            NETWORK,
                            authorize=_allow_all,
                            settings=compat.LOOPBACK_GOSSIP,
                        )
                    )
                    dht = await stack.enter_async_context(open_dht(host.host, NETWORK))
                    node = SimNode(index, host, gossip, dht)
                    nursery.start_soon(node.record)
                    nodes.append(node)
                    await trio.sleep(cfg["stagger"])  # staggered start
                pipe.send(
                    {
                        "ready": True,
                        "nodes": [
                            {"index": n.index, "peer_id": n.host.peer_id, "addr": n.host.addrs[0]}
                            for n in nodes
                        ],
                    }
                )
                by_index = {n.index: n for n in nodes}
                while True:
                    cmd = await pipe.recv()
                    if cmd is None or cmd["cmd"] == "quit":
                        break
                    try:
                        reply = await _network_command(cmd, by_index, trio, parse_cid)
                    except Exception as exc:  # report, keep serving
                        reply = {"error": f"{type(exc).__name__}: {exc}"}
                    reply["id"] = cmd["id"]
                    pipe.send(reply)
            finally:
                for stack in reversed(stacks):
                    t0 = time.monotonic()
                    await stack.aclose()
                    close_s.append(time.monotonic() - t0)
                nursery.cancel_scope.cancel()
    pipe.send({"bye": True, "close_s": close_s})


async def _network_command(
    cmd: dict[str, Any], nodes: dict[int, SimNode], trio: Any, parse_cid: Any
) -> dict[str, Any]:
    from dre.protocol.cid import multihash_of

    kind = cmd["cmd"]
    if kind == "dial":
        failed: list[str] = []
        limiter = trio.CapacityLimiter(4)

        async def dial(index: int, addr: str) -> None:
            async with limiter:
                with trio.move_on_after(10):
                    try:
                        await nodes[index].host.connect(addr)
                        return
                    except Exception as exc:
                        failed.append(f"{index}->{addr}: {exc}")
                        return
                failed.append(f"{index}->{addr}: timeout")

        async with trio.open_nursery() as nursery:
            for index, addr in cmd["dials"]:
                nursery.start_soon(dial, index, addr)
        return {"dialed": len(cmd["dials"]), "failed": failed}
    if kind == "status":
        return {"nodes": [n.status() for n in nodes.values()]}
    if kind == "publish":
        node = nodes[cmd["node"]]
        blocks = _manifests(cmd["count"], cmd["nonce"])  # signed before the clock starts
        published: dict[str, float] = {}
        start = trio.current_time()
        for i, block in enumerate(blocks):
            await trio.sleep_until(start + i * cmd["interval"])
            published[str(block.cid)] = time.time()
            await node.gossip.publish(block)
        with trio.move_on_after(10):
            await node.gossip.announcer.wait_idle()
        return {"published": published, "stats": _gossip_stats(node)}
    if kind == "counts":
        return {"counts": {n.index: len(n.received) for n in nodes.values()}}
    if kind == "collect":
        return {
            "received": {n.index: n.received for n in nodes.values()},
            "stats": {n.index: _gossip_stats(n) for n in nodes.values()},
        }
    if kind == "provide":
        node = nodes[cmd["node"]]
        out = []
        for cid in _dht_keys(cmd["count"], cmd["nonce"]):
            t0 = time.perf_counter()
            ok = await node.dht.provide(cid)
            out.append({"cid": str(cid), "s": time.perf_counter() - t0, "ok": ok})
        return {"provided": out}
    if kind == "lookup":
        out = []
        for index in cmd["nodes"]:
            for text in cmd["cids"]:
                cid = parse_cid(text)
                # py-libp2p's provide() stores the record on the ~20 closest nodes: on a
                # 33-node network most lookups are answered from the node's own store.
                local = bool(nodes[index].dht.kad.provider_store.get_providers(multihash_of(cid)))
                t0 = time.perf_counter()
                found = await nodes[index].dht.find_providers(cid, count=1)
                out.append(
                    {
                        "node": index,
                        "cid": text,
                        "s": time.perf_counter() - t0,
                        "found": [p.peer_id for p in found],
                        "local": local,
                    }
                )
        return {"lookups": out}
    raise ValueError(f"unknown command {kind!r}")


def _gossip_stats(node: SimNode) -> dict[str, Any]:
    s = node.gossip.stats
    return {
        "delivered": s.delivered,
        "dropped_delivery": s.dropped_delivery,
        "published": s.published,
        "dropped_own": s.dropped_own,
        "rejected": dict(s.rejected),
        "queue_waits": s.queue_waits,
    }


class Profiler:
    """cProfile on demand; ``stop`` returns the top functions by own time and by cumulative."""

    def __init__(self) -> None:
        self.prof: cProfile.Profile | None = None

    def start(self) -> None:
        self.prof = cProfile.Profile()
        self.prof.enable()

    def stop(self, top: int = 25) -> dict[str, Any]:
        assert self.prof is not None
        self.prof.disable()
        out: dict[str, Any] = {}
        for key in ("tottime", "cumulative"):
            text = io.StringIO()
            pstats.Stats(self.prof, stream=text).strip_dirs().sort_stats(key).print_stats(top)
            out[key] = text.getvalue().splitlines()
        stats = pstats.Stats(self.prof)
        raw = stats.stats  # type: ignore[attr-defined]
        out["total_tt"] = sum(v[2] for v in raw.values())
        by_file: dict[str, float] = {}
        for (filename, _line, func), v in raw.items():
            parts = Path(filename).parts
            key = "/".join(parts[-2:]) if filename != "~" else f"builtin {func}"
            by_file[key] = by_file.get(key, 0.0) + v[2]
        out["tottime_by_file"] = dict(sorted(by_file.items(), key=lambda kv: -kv[1])[:20])
        self.prof = None
        return out


def _bitswap_knobs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Diagnostic overrides (``--bx-debounce``, ``--bx-inflight-per-peer``); none by default.

    ``debounce``: py-libp2p's ``BitswapMessageQueue`` waits ``debounce_delay`` (15 ms) before
    every flush of a peer's outbound queue, on both sides of a fetch. Returns the keyword
    arguments for ``open_block_exchange``.
    """
    if cfg.get("debounce") is not None:
        from libp2p.bitswap import message_queue

        cls = message_queue.BitswapMessageQueue
        original = cls.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs["debounce_delay"] = cfg["debounce"]
            original(self, *args, **kwargs)

        cls.__init__ = init  # type: ignore[method-assign]
    options = {}
    if cfg.get("inflight_per_peer") is not None:
        options["max_inflight_per_peer"] = cfg["inflight_per_peer"]
    return options


async def fetch_server(cfg: dict[str, Any]) -> None:
    """Import a random file into LMDB; serve it over bitswap, DAG-at-once and a raw stream."""
    import trio
    from dre.node import compat
    from dre.node.blockexchange import open_block_exchange
    from dre.node.dagfetch import DagFetcher
    from dre.node.host import open_host
    from dre.protocol.importer import PROFILE_V1
    from dre.storage.importing import import_path
    from dre.storage.lmdb_store import LmdbBlockStore

    pipe = Pipe()
    work = Path(cfg["workdir"]) / "server"
    work.mkdir(parents=True)
    size = cfg["size"]
    payload = random.Random(cfg["seed"]).randbytes(size)
    path = work / "package.bin"
    path.write_bytes(payload)
    profiler = Profiler()
    with trio.move_on_after(cfg["deadline"]):
        with LmdbBlockStore(work / "store", map_size=1 << 30) as store:
            t0 = time.perf_counter()
            imported = await trio.to_thread.run_sync(lambda: import_path(store, path, PROFILE_V1))
            import_s = time.perf_counter() - t0
            view = memoryview(payload)

            async def serve_raw(stream: Any) -> None:
                want = int.from_bytes(await compat.read_exactly(stream, 8), "big")
                step = compat.PREFERRED_WRITE_SIZE
                for pos in range(0, min(want, size), step):
                    await stream.write(bytes(view[pos : pos + step]))
                await compat.half_close(stream)

            async with (
                open_host(_seed("fetch-server"), network=NETWORK) as host,
                open_block_exchange(host.host, store, **_bitswap_knobs(cfg)),
            ):
                host.set_stream_handler(RAW_PROTOCOL, serve_raw)
                DagFetcher(host, store).install()
                pipe.send(
                    {
                        "ready": True,
                        "peer_id": host.peer_id,
                        "addr": host.addrs[0],
                        "root": str(imported.root.cid),
                        "size": size,
                        "sha256": hashlib.sha256(payload).hexdigest(),
                        "import_MBps": size / MB / import_s,
                    }
                )
                while True:
                    cmd = await pipe.recv()
                    if cmd is None or cmd["cmd"] == "quit":
                        break
                    reply: dict[str, Any] = {}
                    if cmd["cmd"] == "cpu":
                        reply = {"cpu_s": time.process_time()}
                    elif cmd["cmd"] == "profile_start":
                        profiler.start()
                    elif cmd["cmd"] == "profile_stop":
                        reply = {"profile": profiler.stop()}
                    reply["id"] = cmd["id"]
                    pipe.send(reply)
    pipe.send({"bye": True})


async def fetch_client(cfg: dict[str, Any]) -> None:
    """Connect to the server; on command, time a raw stream read, a ``fetch_dag`` (Bitswap) or
    a DAG-at-once fetch (what a DRE node uses first)."""
    import trio
    from dre.node import compat
    from dre.node.blockexchange import open_block_exchange
    from dre.node.dagfetch import DagFetcher
    from dre.node.host import open_host
    from dre.protocol.cid import parse_cid
    from dre.protocol.exporter import read_file
    from dre.protocol.links import iter_dag
    from dre.storage.lmdb_store import LmdbBlockStore

    pipe = Pipe()
    work = Path(cfg["workdir"]) / "client"
    work.mkdir(parents=True)
    profiler = Profiler()

    async def raw(host: Any, peer: str, size: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        stream = await host.open_stream(peer, [RAW_PROTOCOL])
        await stream.write(size.to_bytes(8, "big"))
        await compat.half_close(stream)
        got = 0
        while chunk := await compat.read_some(stream, 1 << 20):
            got += len(chunk)
        elapsed = time.perf_counter() - t0
        await stream.close()
        return {"bytes": got, "s": elapsed, "MBps": got / MB / elapsed}

    async def fetch(
        exchange: Any, peer: str, root_text: str, sha: str, profile: bool = False
    ) -> dict[str, Any]:
        store = exchange.store
        root = parse_cid(root_text)
        trace: list[tuple[float, str, int]] = []  # (s since start, "want"/"block", count)
        on_block, send_wants = exchange._on_block, exchange._send_wants

        async def traced_block(peer_id: Any, mh: bytes, data: bytes) -> None:
            trace.append((time.perf_counter() - t0, "block", 1))
            await on_block(peer_id, mh, data)

        def traced_wants(peer_id: Any, cids: list[Any]) -> None:
            trace.append((time.perf_counter() - t0, "want", len(cids)))
            send_wants(peer_id, cids)

        exchange._on_block, exchange._send_wants = traced_block, traced_wants
        if profile:
            profiler.start()
        t0 = time.perf_counter()
        try:
            blocks = await exchange.fetch_dag(root, [peer], timeout=30.0)
        finally:
            exchange._on_block, exchange._send_wants = on_block, send_wants
        elapsed = time.perf_counter() - t0
        profiled = profiler.stop() if profile else None
        digest = hashlib.sha256()
        size = 0
        for piece in read_file(store.get, root):
            digest.update(piece)
            size += len(piece)
        # Empty the store again for the next round (one exchange per host: see the report).
        cids = [cid for cid, _ in iter_dag(store.get, root)]
        await trio.to_thread.run_sync(lambda: [store.delete(c) for c in cids])
        return {
            "bytes": size,
            "blocks": blocks,
            "s": elapsed,
            "MBps": size / MB / elapsed,
            "identical": digest.hexdigest() == sha,
            "left_in_store": store.stats().blocks,
            **_trace_summary(trace, elapsed),
            **({"profile": profiled} if profiled else {}),
        }

    async def dag_at_once(host: Any, store: Any, peer: str, root_text: str,
                          sha: str) -> dict[str, Any]:
        root = parse_cid(root_text)
        t0 = time.perf_counter()
        blocks = await DagFetcher(host, store).fetch(peer, root)
        elapsed = time.perf_counter() - t0
        digest = hashlib.sha256()
        size = 0
        for piece in read_file(store.get, root):
            digest.update(piece)
            size += len(piece)
        cids = [cid for cid, _ in iter_dag(store.get, root)]
        await trio.to_thread.run_sync(lambda: [store.delete(c) for c in cids])
        return {"bytes": size, "blocks": blocks, "s": elapsed, "MBps": size / MB / elapsed,
                "identical": digest.hexdigest() == sha}

    store = LmdbBlockStore(work / "store", map_size=1 << 30, sync=not cfg.get("nosync"))
    with trio.move_on_after(cfg["deadline"]), store:
        async with (
            open_host(_seed("fetch-client"), network=NETWORK) as host,
            open_block_exchange(host.host, store, **_bitswap_knobs(cfg)) as exchange,
        ):
            pipe.send({"ready": True, "peer_id": host.peer_id})
            while True:
                cmd = await pipe.recv()
                if cmd is None or cmd["cmd"] == "quit":
                    break
                try:
                    kind = cmd["cmd"]
                    if kind == "connect":
                        reply = {"peer": await host.connect(cmd["addr"])}
                    elif kind == "raw":
                        cpu = time.process_time()
                        reply = await raw(host, cmd["peer"], cmd["size"])
                        reply["cpu_s"] = time.process_time() - cpu
                    elif kind == "dag":
                        cpu = time.process_time()
                        reply = await dag_at_once(host, store, cmd["peer"], cmd["root"],
                                                  cmd["sha256"])
                        reply["cpu_s"] = time.process_time() - cpu
                    elif kind == "fetch":
                        cpu = time.process_time()
                        reply = await fetch(
                            exchange,
                            cmd["peer"],
                            cmd["root"],
                            cmd["sha256"],
                            bool(cmd.get("profile")),
                        )
                        reply["cpu_s"] = time.process_time() - cpu  # incl. verify + delete
                    else:
                        raise ValueError(f"unknown command {kind!r}")
                except Exception as exc:
                    import traceback

                    traceback.print_exc()
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                reply["id"] = cmd["id"]
                pipe.send(reply)
    pipe.send({"bye": True})


def _trace_summary(trace: list[tuple[float, str, int]], elapsed: float) -> dict[str, Any]:
    """Split a fetch into its latency-bound start and its steady state.

    The start walks the DAG level by level (root, then the interior nodes, each one round trip
    before the next level's wants can go out); it ends when the first batch of leaf wants (more
    than 2 at once) is sent. The steady state is the rest: blocks per second after that.
    """
    start = next((t for t, kind, n in trace if kind == "want" and n > 2), None)
    blocks = [t for t, kind, _ in trace if kind == "block"]
    after = [t for t in blocks if start is not None and t >= start]
    gaps = sorted(b - a for a, b in itertools.pairwise(after))
    return {
        "round_trips_before_leaf_wants": sum(
            1 for t, kind, _ in trace if kind == "want" and start is not None and t < start
        ),
        "start_s": start,
        "steady_blocks": len(after),
        "steady_s": (elapsed - start) if start is not None else None,
        "steady_block_interval_ms": {
            "p50": (pct(gaps, 50) or 0) * 1000,
            "p99": (pct(gaps, 99) or 0) * 1000,
        },
    }


def worker_main(cfg: dict[str, Any]) -> None:
    import logging

    import trio

    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"[{cfg['role']}{cfg.get('worker', '')}] %(levelname)s %(name)s: %(message)s",
    )
    run = {"network": network_worker, "server": fetch_server, "client": fetch_client}
    trio.run(run[cfg["role"]], cfg)


# ============================================================================ coordinator


class WorkerError(RuntimeError):
    pass


class Worker:
    """One worker subprocess and its JSON-lines pipe (a reader thread feeds a queue)."""

    def __init__(self, name: str, cfg: dict[str, Any], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker-config", json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=str(HERE.parent),
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._lines.put(json.loads(line))
            except ValueError:
                continue
        self._lines.put(None)

    def wait_for(self, key: str, timeout: float, msg_id: int | None = None) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise WorkerError(f"{self.name}: no {key!r} within {timeout:.0f} s{self.tail()}")
            try:
                msg = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if msg is None:
                raise WorkerError(f"{self.name} exited ({self.proc.poll()}){self.tail()}")
            if msg_id is not None and msg.get("id") != msg_id:
                continue
            if key in msg or "error" in msg:
                return msg

    def send(self, cmd: str, **fields: Any) -> int:
        self._next_id += 1
        line = json.dumps({"cmd": cmd, "id": self._next_id, **fields}) + "\n"
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()
        return self._next_id

    def call(self, cmd: str, timeout: float, **fields: Any) -> dict[str, Any]:
        reply = self.wait_for("id", timeout, self.send(cmd, **fields))
        if "error" in reply:
            raise WorkerError(f"{self.name} {cmd}: {reply['error']}")
        return reply

    def stop(self, timeout: float = 20.0) -> bool:
        """Ask to quit; kill if it does not exit in time. True if it exited cleanly."""
        clean = False
        t0 = time.monotonic()
        self.killed = False
        if self.proc.poll() is None:
            try:
                self.send("quit")
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                clean = self.proc.wait(timeout) == 0
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.killed = True
                self.proc.wait(5)
        else:
            clean = self.proc.returncode == 0
        self.exit_info = {
            "returncode": self.proc.returncode,
            "killed": self.killed,
            "stop_s": round(time.monotonic() - t0, 2),
        }
        self._log.close()
        return clean

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return ("\n  " + "\n  ".join(lines)) if lines else ""


def stop_all(workers: list[Worker], timeout: float = 30.0) -> dict[str, Any]:
    """Ask every worker to quit at once, wait for all (kill at ``timeout``); exit details."""
    for w in workers:
        if w.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                w.send("quit")
    out = {}
    for w in workers:
        bye: dict[str, Any] = {}
        with contextlib.suppress(WorkerError):
            bye = w.wait_for("bye", timeout)
        w.stop(timeout=5.0)
        out[w.name] = {**w.exit_info, **{k: v for k, v in bye.items() if k != "bye"}}
    return out


def call_all(calls: list[tuple[Worker, str, dict[str, Any]]], timeout: float) -> list[dict]:
    """Send every call first, then collect the replies (the workers run in parallel)."""
    ids = [(w, w.send(cmd, **fields), cmd) for w, cmd, fields in calls]
    out = []
    for w, msg_id, cmd in ids:
        reply = w.wait_for("id", timeout, msg_id)
        if "error" in reply:
            raise WorkerError(f"{w.name} {cmd}: {reply['error']}")
        out.append(reply)
    return out


def pct(values: list[float], q: float) -> float | None:
    """Percentile ``q`` (0-100), linear interpolation between closest ranks."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def topology(n: int, extra: int, rng: random.Random) -> list[tuple[int, int]]:
    """Undirected edges (dialer, target): a random ring (connected) + ``extra`` links per node."""
    order = list(range(n))
    rng.shuffle(order)
    edges: set[tuple[int, int]] = set()

    def add(a: int, b: int) -> bool:
        if a == b or (a, b) in edges or (b, a) in edges:
            return False
        edges.add((a, b))
        return True

    for i in range(n):
        add(order[i], order[(i + 1) % n])
    for a in range(n):
        for _ in range(extra):
            for _attempt in range(20):
                if add(a, rng.randrange(n)):
                    break
    return sorted(edges)


def run_network(
    args: argparse.Namespace, log_dir: Path, deadline: float, workers: list[Worker]
) -> dict[str, Any]:
    rng = random.Random(args.seed)
    nonce = f"{args.seed}-{time.time_ns()}"
    left = lambda: max(1.0, deadline - time.monotonic())  # noqa: E731
    t_start = time.monotonic()
    for w in range(args.workers):
        cfg = {
            "role": "network",
            "worker": w,
            "nodes": args.nodes,
            "stagger": args.stagger,
            "deadline": deadline - time.monotonic(),
        }
        workers.append(Worker(f"net{w}", cfg, log_dir))
        time.sleep(args.stagger * 5)  # stagger process starts too
    infos: dict[int, dict[str, Any]] = {}
    owner: dict[int, Worker] = {}
    for worker in workers:
        ready = worker.wait_for("ready", min(120.0, left()))
        for node in ready["nodes"]:
            infos[node["index"]] = node
            owner[node["index"]] = worker
    n = len(infos)
    started_s = time.monotonic() - t_start
    print(f"{n} nodes up in {args.workers} processes after {started_s:.1f} s", flush=True)

    edges = topology(n, args.extra_dials, rng)
    dials: dict[Worker, list[tuple[int, str]]] = {w: [] for w in workers}
    for a, b in edges:
        dials[owner[a]].append((a, infos[b]["addr"]))
    t0 = time.monotonic()
    replies = call_all([(w, "dial", {"dials": d}) for w, d in dials.items()], min(60.0, left()))
    dial_failures = [f for r in replies for f in r["failed"]]
    cross = sum(owner[a] is not owner[b] for a, b in edges)
    print(
        f"{len(edges)} links dialed ({cross} across processes) in {time.monotonic() - t0:.1f} s"
        f", {len(dial_failures)} failed",
        flush=True,
    )

    # Meshes: every node sees all its connections subscribed, and has a mesh of at least
    # min(D_low, subscribed peers); DHT routing tables non-empty. Bounded wait.
    degree_low = 4
    t0 = time.monotonic()
    status: list[dict[str, Any]] = []
    settled = False
    while time.monotonic() - t0 < args.mesh_wait:
        status = [
            s for r in call_all([(w, "status", {}) for w in workers], 30.0) for s in r["nodes"]
        ]
        settled = all(
            s["subscribed"] >= s["connected"] >= 1
            and s["mesh"] >= min(degree_low, s["subscribed"])
            and s["routing_table"] >= 1
            for s in status
        )
        if settled:
            break
        time.sleep(0.5)
    mesh_s = time.monotonic() - t0
    print(
        f"meshes {'formed' if settled else 'NOT settled'} after {mesh_s:.1f} s "
        f"(mesh size min/median/max {min(s['mesh'] for s in status)}/"
        f"{statistics.median(s['mesh'] for s in status):g}/{max(s['mesh'] for s in status)})",
        flush=True,
    )

    # ---- propagation
    publisher = 0
    pub_worker = owner[publisher]
    pub = pub_worker.call(
        "publish",
        min(60.0, left()),
        node=publisher,
        count=args.messages,
        interval=args.interval,
        nonce=nonce,
    )
    published: dict[str, float] = pub["published"]
    expected = n - 1
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.settle:
        counts = {
            int(k): v
            for r in call_all([(w, "counts", {}) for w in workers], 30.0)
            for k, v in r["counts"].items()
        }
        if all(v >= len(published) for k, v in counts.items() if k != publisher):
            break
        time.sleep(0.25)
    received: dict[int, dict[str, float]] = {}
    gossip_stats: dict[int, Any] = {}
    for r in call_all([(w, "collect", {}) for w in workers], 60.0):
        received.update({int(k): v for k, v in r["received"].items()})
        gossip_stats.update({int(k): v for k, v in r["stats"].items()})
    per_node: dict[int, list[float]] = {}
    to_all: list[float] = []
    missing = 0
    for cid, t_pub in published.items():
        arrivals = []
        for index in range(n):
            if index == publisher:
                continue
            t = received.get(index, {}).get(cid)
            if t is None:
                missing += 1
                continue
            per_node.setdefault(index, []).append(t - t_pub)
            arrivals.append(t - t_pub)
        if len(arrivals) == expected:
            to_all.append(max(arrivals))
    latencies = [x for xs in per_node.values() for x in xs]
    propagation = {
        "publisher": publisher,
        "messages": len(published),
        "interval_s": args.interval,
        "receivers": expected,
        "deliveries_expected": len(published) * expected,
        "deliveries_missing": missing,
        "messages_reaching_all": len(to_all),
        "per_node_latency_s": {
            "p50": pct(latencies, 50),
            "p99": pct(latencies, 99),
            "max": max(latencies, default=None),
        },
        "to_all_nodes_s": {
            "p50": pct(to_all, 50),
            "p99": pct(to_all, 99),
            "max": max(to_all, default=None),
        },
        "samples_per_node": {str(k): v for k, v in sorted(per_node.items())},
        "samples_to_all": to_all,
        "publisher_gossip_stats": pub["stats"],
        "dropped_delivery_total": sum(s["dropped_delivery"] for s in gossip_stats.values()),
        "rejected_total": sum(sum(s["rejected"].values()) for s in gossip_stats.values()),
    }
    p = propagation
    print(
        f"propagation: {len(latencies)}/{p['deliveries_expected']} deliveries, "
        f"per-node p50 {ms(p['per_node_latency_s']['p50'])} p99 "
        f"{ms(p['per_node_latency_s']['p99'])}; to all p50 {ms(p['to_all_nodes_s']['p50'])} "
        f"p99 {ms(p['to_all_nodes_s']['p99'])}",
        flush=True,
    )

    # ---- DHT: a node in process 0 provides; nodes in the other processes look up
    provider = 0
    prov = owner[provider].call(
        "provide", min(120.0, left()), node=provider, count=args.dht_keys, nonce=nonce
    )["provided"]
    cids = [x["cid"] for x in prov]
    calls = []
    for w in workers:
        if w is owner[provider]:
            continue
        mine = [i for i, o in owner.items() if o is w][: args.lookup_nodes]
        calls.append((w, "lookup", {"nodes": mine, "cids": cids}))
    lookups = [x for r in call_all(calls, min(180.0, left())) for x in r["lookups"]]
    provider_id = infos[provider]["peer_id"]
    times = [x["s"] for x in lookups]
    remote = [x["s"] for x in lookups if not x["local"]]
    ok = [x for x in lookups if x["found"] == [provider_id]]
    dht = {
        "provider": provider,
        "keys": len(cids),
        "provide_s": {
            "p50": pct([x["s"] for x in prov], 50),
            "max": max(x["s"] for x in prov),
            "reached_a_peer": sum(x["ok"] for x in prov),
        },
        "lookups": len(lookups),
        "found": len(ok),
        "lookup_s": {"p50": pct(times, 50), "p99": pct(times, 99), "max": max(times)},
        "answered_from_own_store": len(lookups) - len(remote),
        "network_lookup_s": {
            "count": len(remote),
            "p50": pct(remote, 50),
            "p99": pct(remote, 99),
            "max": max(remote, default=None),
        },
        "samples_s": times,
        "network_samples_s": remote,
    }
    print(
        f"DHT: {len(ok)}/{len(lookups)} lookups found the provider; p50 "
        f"{ms(dht['lookup_s']['p50'])} p99 {ms(dht['lookup_s']['p99'])} "
        f"({len(lookups) - len(remote)} answered from the node's own store; the "
        f"{len(remote)} that went to the network: p50 {ms(pct(remote, 50))} "
        f"p99 {ms(pct(remote, 99))})",
        flush=True,
    )
    return {
        "nodes": n,
        "processes": args.workers,
        "start_s": started_s,
        "links": len(edges),
        "links_across_processes": cross,
        "dial_failures": dial_failures,
        "mesh_settled": settled,
        "mesh_wait_s": mesh_s,
        "final_status": status,
        "propagation": propagation,
        "dht": dht,
    }


def run_fetch(
    args: argparse.Namespace, log_dir: Path, deadline: float, workers: list[Worker]
) -> dict[str, Any]:
    left = lambda: max(1.0, deadline - time.monotonic())  # noqa: E731
    work = tempfile.mkdtemp(prefix="dre-sim-fetch-")
    knobs = {
        "debounce": args.bx_debounce,
        "inflight_per_peer": args.bx_inflight_per_peer,
        "nosync": args.bx_nosync or None,
    }
    try:
        server = Worker(
            "fetch-server",
            {
                "role": "server",
                "workdir": work,
                "seed": args.seed,
                "size": args.size_mib << 20,
                **knobs,
                "deadline": left(),
            },
            log_dir,
        )
        client = Worker(
            "fetch-client",
            {"role": "client", "workdir": work, **knobs, "deadline": left()},
            log_dir,
        )
        workers += [server, client]
        info = server.wait_for("ready", min(120.0, left()))
        client.wait_for("ready", min(60.0, left()))
        client.call("connect", 30.0, addr=info["addr"])
        peer, size = info["peer_id"], info["size"]
        client.call("raw", 30.0, peer=peer, size=1 << 20)  # warm-up
        raw_runs, fetch_runs, dag_runs = [], [], []

        def timed(cmd: str, **fields: Any) -> dict[str, Any]:
            cpu = server.call("cpu", 10.0)["cpu_s"]
            run = client.call(cmd, min(120.0, left()), peer=peer, **fields)
            run["server_cpu_s"] = server.call("cpu", 10.0)["cpu_s"] - cpu
            return run

        for _ in range(args.rounds):
            raw_runs.append(timed("raw", size=size))
            fetch_runs.append(timed("fetch", root=info["root"], sha256=info["sha256"]))
            dag_runs.append(timed("dag", root=info["root"], sha256=info["sha256"]))
            r, f = raw_runs[-1], fetch_runs[-1]
            print(f"  DAG-at-once {dag_runs[-1]['MBps']:.1f} MB/s in {dag_runs[-1]['s']:.2f} s",
                  flush=True)
            print(
                f"  raw {r['MBps']:.1f} MB/s in {r['s']:.2f} s (CPU client {r['cpu_s']:.2f} s,"
                f" server {r['server_cpu_s']:.2f} s); fetch_dag {f['MBps']:.1f} MB/s in "
                f"{f['s']:.2f} s (CPU client {f['cpu_s']:.2f} s incl. check, server "
                f"{f['server_cpu_s']:.2f} s; {f['start_s'] * 1000:.0f} ms before the first "
                f"leaf wants, {f['steady_block_interval_ms']['p50']:.1f} ms/block after)",
                flush=True,
            )
        profile = None
        if args.profile:
            server.call("profile_start", 10.0)
            prof_run = client.call(
                "fetch",
                min(180.0, left()),
                peer=peer,
                root=info["root"],
                sha256=info["sha256"],
                profile=True,
            )
            profile = {
                "fetch_MBps_under_profiler": prof_run["MBps"],
                "client": prof_run["profile"],
                "server": server.call("profile_stop", 30.0)["profile"],
            }
        raw_mbps = statistics.median(r["MBps"] for r in raw_runs)
        fetch_mbps = statistics.median(r["MBps"] for r in fetch_runs)
        dag_mbps = statistics.median(r["MBps"] for r in dag_runs)
        return {
            "dag_at_once_MBps": dag_mbps,
            "dag_at_once_ratio": dag_mbps / raw_mbps,
            "dag_runs": dag_runs,
            "bytes": size,
            "root": info["root"],
            "server_import_MBps": info["import_MBps"],
            "rounds": args.rounds,
            "write_size": None,
            "diagnostic_overrides": {k: v for k, v in knobs.items() if v is not None},
            "raw_stream_MBps": raw_mbps,
            "fetch_dag_MBps": fetch_mbps,
            "ratio": fetch_mbps / raw_mbps,
            "all_identical": all(r["identical"] for r in fetch_runs + dag_runs),
            "raw_runs": raw_runs,
            "fetch_runs": fetch_runs,
            "profile": profile,
        }
    finally:
        for w in workers:
            w.stop()
        shutil.rmtree(work, ignore_errors=True)


def ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:.0f} ms"


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5))
    net = report.get("network")
    if net:
        prop = net["propagation"]
        for samples in prop["samples_per_node"].values():
            xs = sorted(x * 1000 for x in samples)
            ax1.plot(
                xs,
                [(i + 1) / len(xs) for i in range(len(xs))],
                color="tab:blue",
                alpha=0.25,
                linewidth=0.8,
            )
        allx = sorted(x * 1000 for s in prop["samples_per_node"].values() for x in s)
        ax1.plot(
            allx,
            [(i + 1) / len(allx) for i in range(len(allx))],
            color="tab:blue",
            linewidth=2.2,
            label="each node (thin), all deliveries (bold)",
        )
        xs = sorted(x * 1000 for x in prop["samples_to_all"])
        if xs:
            ax1.plot(
                xs,
                [(i + 1) / len(xs) for i in range(len(xs))],
                color="tab:red",
                linewidth=2.2,
                label="time to reach all nodes",
            )
        ax1.axvline(1000, color="grey", linestyle="--", label="target p99 < 1 s")
        ax1.set_xscale("log")
        ax1.set_xlabel("announcement latency (ms, log)")
        ax1.set_ylabel("CDF")
        ax1.set_title(f"Gossip propagation, {net['nodes']} nodes / {net['processes']} processes")
        ax1.legend(loc="lower right", fontsize=8)
        dht = net["dht"]
        local = [x * 1000 for x in dht["samples_s"]]
        for x in dht["network_samples_s"]:
            local.remove(x * 1000)
        ax2.hist(
            [local, [x * 1000 for x in dht["network_samples_s"]]],
            bins=30,
            stacked=True,
            color=["tab:olive", "tab:green"],
            label=["answered from own provider store", "over the network"],
        )
        ax2.legend(fontsize=8)
        ax2.set_xlabel("find_providers(count=1) time (ms)")
        ax2.set_ylabel("lookups")
        net_l = dht["network_lookup_s"]
        ax2.set_title(
            f"DHT lookups ({dht['found']}/{dht['lookups']} found); over the network: "
            f"p50 {ms(net_l['p50'])}, p99 {ms(net_l['p99'])}",
            fontsize=10,
        )
    fetch = report.get("fetch")
    if fetch:
        names = ["raw stream", "DAG-at-once", "Bitswap"]
        vals = [fetch["raw_stream_MBps"], fetch["dag_at_once_MBps"], fetch["fetch_dag_MBps"]]
        bars = ax3.bar(names, vals, color=["tab:gray", "tab:green", "tab:orange"])
        for bar, v in zip(bars, vals, strict=True):
            ax3.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom")
        ax3.axhline(
            0.8 * fetch["raw_stream_MBps"],
            color="grey",
            linestyle="--",
            label="80 % of raw (target)",
        )
        ax3.set_ylabel("MB/s (10^6 B/s), median of rounds")
        ax3.set_title(f"{fetch['bytes'] >> 20} MiB between two nodes: node fetch "
                      f"{fetch['dag_at_once_ratio']:.0%} of raw")
        ax3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=3, help="network processes")
    parser.add_argument("--nodes", type=int, default=11, help="nodes per network process")
    parser.add_argument("--stagger", type=float, default=0.1, help="s between node starts")
    parser.add_argument(
        "--extra-dials", type=int, default=2, help="random links per node on top of a ring"
    )
    parser.add_argument("--mesh-wait", type=float, default=30.0)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="max s to wait for deliveries after the last publish",
    )
    parser.add_argument("--dht-keys", type=int, default=10)
    parser.add_argument(
        "--lookup-nodes", type=int, default=5, help="nodes per other process that look every key up"
    )
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5,
                        help="fetch rounds; the median is reported (5, so that one noisy round "
                             "on a shared machine does not decide it)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="add one cProfiled fetch round (client and server) to the JSON",
    )
    parser.add_argument(
        "--bx-debounce",
        type=float,
        default=None,
        help="diagnosis only: override py-libp2p's bitswap queue debounce (s)",
    )
    parser.add_argument(
        "--bx-inflight-per-peer",
        type=int,
        default=None,
        help="diagnosis only: override BlockExchange max_inflight_per_peer",
    )
    parser.add_argument(
        "--bx-nosync",
        action="store_true",
        help="diagnosis only: the fetching store commits without fsync",
    )
    parser.add_argument("--skip-network", action="store_true")
    parser.add_argument("--skip-fetch", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="hard limit of the whole run; workers are killed after it",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sim_network.json")
    args = parser.parse_args()
    if args.worker_config:
        worker_main(json.loads(args.worker_config))
        return 0

    deadline = time.monotonic() + args.timeout
    log_dir = Path(tempfile.mkdtemp(prefix="dre-sim-logs-"))
    workers: list[Worker] = []
    watchdog = threading.Timer(args.timeout + 5, lambda: [w.kill() for w in list(workers)])
    watchdog.daemon = True
    watchdog.start()
    report: dict[str, Any] = {
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k != "worker_config"
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    failed = False
    try:
        if not args.skip_network:
            try:
                report["network"] = run_network(args, log_dir, deadline, workers)
            finally:
                exits = stop_all(workers)
                report["network_workers_exited_cleanly"] = all(
                    e["returncode"] == 0 and not e["killed"] for e in exits.values()
                )
                report["network_worker_exits"] = exits
                workers.clear()
        if not args.skip_fetch:
            print(f"fetch: {args.size_mib} MiB, {args.rounds} rounds", flush=True)
            report["fetch"] = run_fetch(args, log_dir, deadline, workers)
    except (WorkerError, KeyboardInterrupt) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        report["error"] = str(exc)
        failed = True
    finally:
        for w in workers:
            w.kill()
        watchdog.cancel()
    if report.get("fetch"):
        from dre.node.compat import PREFERRED_WRITE_SIZE

        report["fetch"]["write_size"] = PREFERRED_WRITE_SIZE
    report["elapsed_s"] = args.timeout - (deadline - time.monotonic())

    targets = []
    net = report.get("network")
    if net:
        p99 = net["propagation"]["to_all_nodes_s"]["p99"]
        complete = net["propagation"]["deliveries_missing"] == 0
        targets.append(
            (
                "announcement p99 to all nodes",
                f"{ms(p99)}",
                "< 1000 ms",
                bool(p99 is not None and p99 < 1.0 and complete),
            )
        )
    fetch = report.get("fetch")
    if fetch:
        # A node fetches with DAG-at-once first (Bitswap is the fallback, and what Kubo and
        # Helia speak); both are reported.
        targets.append(
            (
                "node fetch (DAG-at-once) / raw",
                f"{fetch['dag_at_once_ratio']:.0%}",
                ">= 80 %",
                fetch["dag_at_once_ratio"] >= 0.8 and fetch["all_identical"],
            )
        )
    report["targets"] = [
        {"name": a, "measured": b, "target": c, "pass": d} for a, b, c, d in targets
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    png = args.out.with_suffix(".png")
    plotted = plot(report, png)

    print()
    if net:
        p, d = net["propagation"], net["dht"]
        print(f"{'metric':<36} {'p50':>10} {'p99':>10} {'max':>10}")
        for label, row in (
            ("announce latency, per node", p["per_node_latency_s"]),
            ("announce time to all nodes", p["to_all_nodes_s"]),
            ("DHT find_providers(count=1), all", d["lookup_s"]),
            ("  of which over the network", d["network_lookup_s"]),
        ):
            print(f"{label:<36} {ms(row['p50']):>10} {ms(row.get('p99')):>10} {ms(row['max']):>10}")
        print(
            f"{net['nodes']} nodes in {net['processes']} processes, {net['links']} links "
            f"({net['links_across_processes']} across processes); "
            f"{p['messages']} announcements, missing deliveries {p['deliveries_missing']}/"
            f"{p['deliveries_expected']}; DHT found {d['found']}/{d['lookups']} "
            f"({d['answered_from_own_store']} from the node's own store)"
        )
    if fetch:
        print(
            f"{fetch['bytes'] >> 20} MiB: raw stream {fetch['raw_stream_MBps']:.1f} MB/s, "
            f"DAG-at-once {fetch['dag_at_once_MBps']:.1f} MB/s, Bitswap fetch_dag "
            f"{fetch['fetch_dag_MBps']:.1f} MB/s ({fetch['ratio']:.0%} of raw) "
            f"(median of {fetch['rounds']}), byte-identical {fetch['all_identical']}"
        )
    print(f"\n{'target':<36} {'measured':>10} {'goal':>10} {'result':>8}")
    for t in report["targets"]:
        print(
            f"{t['name']:<36} {t['measured']:>10} {t['target']:>10} "
            f"{'PASS' if t['pass'] else 'FAIL':>8}"
        )
    print(
        f"(MB = 10^6 bytes; JSON in {args.out}{'; plot in ' + str(png) if plotted else ''}; "
        f"worker logs in {log_dir})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
