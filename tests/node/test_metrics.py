"""Prometheus ``/metrics``: request counting middleware and the node-state collector."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from dre.node.blockexchange import PeerStats
from dre.node.config import NodeConfig
from dre.node.gossip import GossipStats
from dre.node.http_api import NodeState, make_app
from dre.node.metrics import UNMATCHED, RequestMetrics, metrics_for, metrics_routes
from dre.node.sync import SyncPeerStats
from dre.protocol.cid import RAW, Block, cid_for
from dre.protocol.keys import PublisherKey
from dre.storage.repo import Repo
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

NODE = PublisherKey.from_seed(bytes(range(2, 34)))


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    Repo.init(tmp_path / "home")
    with Repo.open(tmp_path / "home") as opened:
        yield opened


def new_state(repo: Repo) -> NodeState:
    return NodeState(repo=repo, peer_id=NODE.peer_id, config=NodeConfig())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels); parsing proves the format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def client_for(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node")


@pytest.mark.trio
async def test_requests_are_counted_by_route_template_and_status(repo: Repo) -> None:
    state = new_state(repo)
    # make_app installs RequestMetrics as its outermost middleware.
    app = make_app(state)
    data = b"metrics block"
    cid = cid_for(data, RAW)
    repo.store.put(Block(cid, data))
    async with client_for(app) as client:
        for _ in range(3):
            assert (await client.get(f"/ipfs/{cid}?format=raw")).status_code == 200
        assert (await client.get(f"/ipfs/{cid_for(b'absent', RAW)}")).status_code == 404
        assert (await client.get("/api/v1/node/status")).status_code == 200
        assert (await client.get("/no/such/route/at/all")).status_code == 404
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    gateway = "/ipfs/{rest:path}"
    requests = "dre_http_requests_total"
    assert got[(requests, (("method", "GET"), ("route", gateway), ("status", "200")))] == 3
    assert got[(requests, (("method", "GET"), ("route", gateway), ("status", "404")))] == 1
    assert got[(requests, (("method", "GET"), ("route", "/api/v1/node/status"),
                           ("status", "200")))] == 1
    # Paths nobody routes stay one label value, whatever the path (bounded cardinality).
    assert (requests, (("method", "GET"), ("route", UNMATCHED), ("status", "404"))) in got
    assert not any("/no/such" in str(key) for key in got)
    histogram = "dre_http_request_duration_seconds_count"
    assert got[(histogram, (("method", "GET"), ("route", gateway)))] == 4
    assert got[("dre_http_response_bytes_total", (("route", gateway),))] >= 3 * len(data)
    assert got[("dre_http_requests_in_flight", ())] == 1  # the scrape itself


@pytest.mark.trio
async def test_store_and_node_gauges_are_read_at_scrape_time(repo: Repo) -> None:
    state = new_state(repo)
    app = make_app(state)
    async with client_for(app) as client:
        before = samples((await client.get("/metrics")).text)
        assert before[("dre_store_blocks", ())] == 0
        repo.store.put(Block(cid_for(b"x" * 1000, RAW), b"x" * 1000))
        repo.store.put(Block(cid_for(b"x" * 1000, RAW), b"x" * 1000))  # deduplicated
        after = samples((await client.get("/metrics")).text)
    stats = repo.store.stats()
    assert after[("dre_store_blocks", ())] == stats.blocks == 1
    assert after[("dre_store_bytes", (("kind", "physical"),))] == 1000
    assert after[("dre_store_bytes", (("kind", "logical"),))] == 2000
    assert after[("dre_store_dedup_saved_bytes", ())] == 1000
    assert after[("dre_packages", ())] == 0
    assert after[("dre_peers_connected", ())] == 0
    # Without libp2p the network families are there, at zero.
    assert after[("dre_gossip_messages_total", (("event", "delivered"),))] == 0
    assert after[("dre_bitswap_received_bytes_total", ())] == 0


@pytest.mark.trio
async def test_network_counters_come_from_the_services(repo: Repo) -> None:
    state = new_state(repo)
    gossip = GossipStats(delivered=7, published=3)
    gossip.rejected.update(Counter({"bad-signature": 2}))
    state.network = SimpleNamespace(
        stats={"announced": 4, "received": 9, "rejected": 1, "verified": 8, "reproduced": 8,
               "fetched_blocks": 120},
        gossip=SimpleNamespace(stats=gossip),
        sync=SimpleNamespace(stats={"a": SyncPeerStats(sessions=5, failures=1,
                                                       records_received=6, records_sent=2),
                                    "b": SyncPeerStats(sessions=2, records_accepted=3)}),
        exchange=SimpleNamespace(peers={"a": PeerStats(blocks=10, bytes=4096, timeouts=1),
                                        "b": PeerStats(blocks=1, bytes=100, invalid=2)}),
    )
    state.peer_count = lambda: 2
    async with client_for(make_app(state)) as client:
        got = samples((await client.get("/metrics")).text)
    assert got[("dre_peers_connected", ())] == 2
    assert got[("dre_registry_records_total", (("event", "received"),))] == 9
    assert got[("dre_registry_fetched_blocks_total", ())] == 120
    assert got[("dre_gossip_messages_total", (("event", "delivered"),))] == 7
    assert got[("dre_gossip_rejected_total", (("reason", "bad-signature"),))] == 2
    assert got[("dre_sync_sessions_total", (("outcome", "ok"),))] == 6
    assert got[("dre_sync_sessions_total", (("outcome", "failed"),))] == 1
    assert got[("dre_sync_records_total", (("direction", "accepted"),))] == 3
    assert got[("dre_bitswap_received_blocks_total", ())] == 11
    assert got[("dre_bitswap_received_bytes_total", ())] == 4196
    assert got[("dre_bitswap_faults_total", (("kind", "invalid"),))] == 2


@pytest.mark.trio
async def test_middleware_in_a_starlette_app_and_apps_do_not_share(repo: Repo) -> None:
    state, other = new_state(repo), new_state(repo)

    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def boom(request: Request) -> Response:
        raise RuntimeError("handler bug")

    def build(node: NodeState) -> Starlette:
        return Starlette(routes=[Route("/ok", ok), Route("/boom", boom), *metrics_routes(node)],
                         middleware=[Middleware(RequestMetrics, state=node)])

    async with client_for(build(state)) as client:
        await client.get("/ok")
        with pytest.raises(RuntimeError):
            await client.get("/boom")
        got = samples((await client.get("/metrics")).text)
    assert got[("dre_http_requests_total", (("method", "GET"), ("route", "/ok"),
                                            ("status", "200")))] == 1
    # A handler that raises is counted as the 500 the client gets.
    assert got[("dre_http_requests_total", (("method", "GET"), ("route", "/boom"),
                                            ("status", "500")))] == 1
    async with client_for(build(other)) as client:
        fresh = samples((await client.get("/metrics")).text)
    assert not any(name == "dre_http_requests_total" and ("route", "/ok") in labels
                   for name, labels in fresh)
    assert metrics_for(state) is not metrics_for(other)
    assert metrics_for(state) is metrics_for(state)
