"""Prometheus ``GET /metrics`` of the node, in the text exposition format.

Each app has a registry of its own (:func:`metrics_for`), never prometheus-client's global one:
two nodes in one process (the tests, the simulations) must not share or clash on counters.

Two kinds of numbers:

- **Per request**, counted by :class:`RequestMetrics`, a pure ASGI middleware: requests by
  method, route *template* (``/ipfs/{rest:path}``, not the path, so label cardinality is bounded
  by the app's routes) and status; latency histograms by method and route; bytes sent; requests
  in flight.
- **Read at scrape time** by a collector from the node's own state, so nothing has to be kept in
  step: blocks and bytes in the store (``store.stats()``, O(1)), packages, connected peers, and the
  network services' counters (gossip, registry records, sync sessions, Bitswap blocks and bytes
  received). A node running without libp2p exports zeros for those, not gaps.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dre.protocol.errors import DreError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from dre.node.http_api import NodeState

__all__ = ["NodeMetrics", "RequestMetrics", "metrics_for", "metrics_routes"]

_log = logging.getLogger(__name__)

#: Latency buckets (seconds): store reads are sub-millisecond, publishes and CARs much longer.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0)
#: Methods counted by name; anything else is "other" (a client chooses the method string).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of a request no route matched (a 404 or a redirect of the router).
UNMATCHED = "unmatched"


class NodeMetrics:
    """The metrics of one app: its registry, the request instruments, the state collector."""

    def __init__(self, state: NodeState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dre_http_requests", "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "dre_http_request_duration_seconds",
            "Time from request to the last byte of the answer, by method and route template.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.sent_bytes = Counter(
            "dre_http_response_bytes", "Bytes of answer bodies sent, by route template.",
            ["route"], registry=self.registry)
        self.in_flight = Gauge(
            "dre_http_requests_in_flight", "Requests being answered right now.",
            registry=self.registry)
        self.registry.register(_StateCollector(state))

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


# One NodeMetrics per NodeState (the app's state). NodeState is a mutable dataclass, hence not
# hashable; entries are keyed by id() and dropped when the state is collected.
_BY_STATE: dict[int, NodeMetrics] = {}


def metrics_for(state: NodeState) -> NodeMetrics:
    """The metrics of the app over ``state`` (created on first use)."""
    key = id(state)
    metrics = _BY_STATE.get(key)
    if metrics is None:
        metrics = _BY_STATE[key] = NodeMetrics(state)
        weakref.finalize(state, _BY_STATE.pop, key, None)
    return metrics


class RequestMetrics:
    """ASGI middleware counting every HTTP request of the app over ``state``.

    Add it to the app: ``Starlette(..., middleware=[Middleware(RequestMetrics, state=state)])``.
    The route label is the matched route's template, read from the scope after the router ran.
    """

    def __init__(self, app: ASGIApp, state: NodeState) -> None:
        self.app = app
        self.metrics = metrics_for(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            metrics.in_flight.dec()
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            route = _route_label(scope)
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            metrics.sent_bytes.labels(route).inc(sent)


#: Name of the web pages' catch-all route (``/{path:path}``): what it answers matched nothing.
CATCH_ALL_ROUTE = "not_found"


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str) or getattr(route, "name", None) == CATCH_ALL_ROUTE:
        return UNMATCHED
    return path


class _StateCollector(Collector):
    """Reads the node's counters at scrape time (see the module docstring)."""

    def __init__(self, state: NodeState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        # Describing would read the state at registration; an empty description is allowed.
        return []

    def collect(self) -> Iterator[Metric]:
        for part in (self._store, self._node, self._network, self._search):
            try:
                yield from part()
            except DreError as exc:  # e.g. the store closing under a scrape at shutdown
                _log.warning("metrics: %s skipped: %s", part.__name__, exc)

    def _store(self) -> Iterator[Metric]:
        stats = self.state.repo.store.stats()
        yield GaugeMetricFamily("dre_store_blocks", "Blocks in the store.", stats.blocks)
        stored = GaugeMetricFamily(
            "dre_store_bytes", "Bytes of block data: physical (each block once) and logical "
            "(as often as it was added).", labels=["kind"])
        stored.add_metric(["physical"], stats.physical_bytes)
        stored.add_metric(["logical"], stats.logical_bytes)
        yield stored
        yield GaugeMetricFamily("dre_store_dedup_saved_bytes",
                                "Bytes content addressing saved (logical - physical).",
                                stats.dedup_saved_bytes)
        pins = GaugeMetricFamily("dre_store_pins", "Pins, by kind.", labels=["kind"])
        pins.add_metric(["direct"], stats.pins_direct)
        pins.add_metric(["recursive"], stats.pins_recursive)
        yield pins

    def _node(self) -> Iterator[Metric]:
        state = self.state
        yield GaugeMetricFamily("dre_packages", "Package names indexed on this node.",
                                len(state.repo.index.names()))
        yield GaugeMetricFamily("dre_peers_connected", "libp2p peers connected now.",
                                state.peer_count())
        yield GaugeMetricFamily("dre_uptime_seconds", "Seconds since the node started.",
                                time.monotonic() - state.started)

    def _network(self) -> Iterator[Metric]:
        network: Any = self.state.network
        registry = CounterMetricFamily(
            "dre_registry_records", "Registry records announced by this node, received from "
            "peers, rejected, verified, and reproduced by regeneration.", labels=["event"])
        for event in ("announced", "received", "rejected", "verified", "reproduced"):
            registry.add_metric([event], _stat(network, event))
        yield registry
        yield CounterMetricFamily("dre_registry_fetched_blocks",
                                  "Blocks fetched from peers for verification.",
                                  _stat(network, "fetched_blocks"))

        gossip_stats = getattr(getattr(network, "gossip", None), "stats", None)
        gossip = CounterMetricFamily("dre_gossip_messages", "Gossip messages, by event.",
                                     labels=["event"])
        for event in ("published", "delivered", "dropped_delivery", "dropped_own"):
            gossip.add_metric([event], getattr(gossip_stats, event, 0))
        yield gossip
        rejected = CounterMetricFamily("dre_gossip_rejected",
                                       "Gossip messages the validator refused, by reason.",
                                       labels=["reason"])
        for reason, count in sorted(getattr(gossip_stats, "rejected", {}).items()):
            rejected.add_metric([str(reason)], count)
        yield rejected

        sync = getattr(network, "sync", None)
        per_peer = list(getattr(sync, "stats", {}).values())
        sessions = CounterMetricFamily("dre_sync_sessions", "Anti-entropy sync sessions, "
                                       "by outcome.", labels=["outcome"])
        failures = sum(s.failures for s in per_peer)
        sessions.add_metric(["ok"], sum(s.sessions for s in per_peer) - failures)
        sessions.add_metric(["failed"], failures)
        yield sessions
        records = CounterMetricFamily("dre_sync_records", "Records moved by sync, by direction.",
                                      labels=["direction"])
        records.add_metric(["received"], sum(s.records_received for s in per_peer))
        records.add_metric(["accepted"], sum(s.records_accepted for s in per_peer))
        records.add_metric(["sent"], sum(s.records_sent for s in per_peer))
        yield records

        exchange = getattr(network, "exchange", None)
        peers = list(getattr(exchange, "peers", {}).values())
        yield CounterMetricFamily("dre_bitswap_received_blocks",
                                  "Blocks received over Bitswap (each one verified).",
                                  sum(p.blocks for p in peers))
        yield CounterMetricFamily("dre_bitswap_received_bytes", "Bytes received over Bitswap.",
                                  sum(p.bytes for p in peers))
        problems = CounterMetricFamily("dre_bitswap_faults", "Bitswap wants that went wrong, "
                                       "by kind.", labels=["kind"])
        for kind in ("timeouts", "invalid", "dont_have"):
            problems.add_metric([kind], sum(getattr(p, kind) for p in peers))
        yield problems

    def _search(self) -> Iterator[Metric]:
        engine = self.state.search
        if engine is None:
            return
        yield CounterMetricFamily("dre_downloads", "Package downloads recorded by this node.",
                                  engine.downloads_total())


def _stat(network: Any, name: str) -> int:
    stats = getattr(network, "stats", None)
    return int(stats.get(name, 0)) if isinstance(stats, dict) else 0


def metrics_routes(state: NodeState) -> list[BaseRoute]:
    """``GET /metrics``."""
    metrics = metrics_for(state)

    async def scrape(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})

    return [Route("/metrics", scrape, methods=["GET"])]
