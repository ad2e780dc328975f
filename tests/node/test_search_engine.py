"""The search engine with the real model (loaded once for the module) and without it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from dre.node import search_engine
from dre.node.config import NodeConfig
from dre.node.embedder import Embedder, SemanticUnavailable, load_embedder
from dre.node.runtime import Node
from dre.node.search_engine import SearchEngine
from dre.protocol.cid import Block
from dre.protocol.errors import NotFoundError, ValidationError
from dre.protocol.keys import PublisherKey
from dre.protocol.links import iter_dag
from dre.protocol.search import SearchQuery
from dre.storage.keystore import Keystore
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo
from dre.storage.search_index import PackageEntry, SearchIndex

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
ALICE = PublisherKey.from_seed(bytes(range(32)))
BOB = PublisherKey.from_seed(bytes(range(1, 33)))
NOW = 1_790_000_000

UNCATEGORIZED_DOC = b"""---
name: pixel-sprites
version: 1.0.0
description: Draw and scale pixel-art sprites and render bitmap images.
license: MIT
keywords: [sprites, images]
---

# pixel-sprites

Loads sprite sheets and renders them to PNG images, scaling without blurring.
"""


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    Repo.init(tmp_path / "home")
    with Repo.open(tmp_path / "home") as opened:
        registry = LocalRegistry(opened)
        registry.create_scope("@acme", ALICE, now=NOW)
        for name in ("acme-retry-1.0.0.md", "acme-cli.md", "left-pad.md", "slugify-lite.md",
                     "dotfiles-kit.md", "acme-brand-assets.md"):
            registry.publish((EXAMPLES / name).read_bytes(), ALICE, now=NOW)
        yield opened


@pytest.fixture
def engine(repo: Repo, embedder: Embedder) -> Iterator[SearchEngine]:
    engine = SearchEngine.open(repo)
    engine._loader = lambda: embedder
    engine.catch_up()
    assert engine.load_model()
    while engine.embed_pending():
        pass
    yield engine
    engine.close()


def names(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.name for h in hits]


def test_semantic_finds_by_meaning_where_text_cannot(engine: SearchEngine) -> None:
    query = "turn a headline into something usable in a web address"
    semantic = engine.search(SearchQuery(text=query, mode="semantic"))
    assert semantic.mode == "semantic" and semantic.notice is None
    assert semantic.hits[0].name == "slugify-lite"
    hybrid = engine.search(SearchQuery(text=query, mode="hybrid"))
    assert hybrid.hits[0].name == "slugify-lite"
    text = engine.search(SearchQuery(text="exponential backoff", mode="text"))
    assert names(text.hits) == ["@acme/retry"] and text.total == 1


def test_hybrid_ranks_agreement_first_and_filters_category(engine: SearchEngine) -> None:
    result = engine.search(SearchQuery(text="pad a string", mode="hybrid"))
    assert result.hits[0].name == "left-pad"
    assert all(h.score >= result.hits[-1].score for h in result.hits)
    only_text = engine.search(SearchQuery(text="pad a string", category="text"))
    assert set(names(only_text.hits)) <= {"left-pad", "slugify-lite"}
    assert only_text.hits


def test_nothing_is_embedded_twice(engine: SearchEngine, repo: Repo,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    embedded: list[str] = []
    assert engine._embedder is not None
    original = engine._embedder.embed

    def counting(texts: list[str]):  # type: ignore[no-untyped-def]
        embedded.extend(texts)
        return original(texts)

    monkeypatch.setattr(engine._embedder, "embed", counting)
    # The new version changes the description only: the prose chunks are cached vectors.
    new = (EXAMPLES / "left-pad.md").read_bytes().replace(b"version: 1.3.0", b"version: 1.4.0")
    new = new.replace(b"Pad the left side", b"Pads the left side")
    LocalRegistry(repo).publish(new, ALICE, now=NOW + 10)
    engine.catch_up()
    while engine.embed_pending():
        pass
    assert len(embedded) == 1 and embedded[0].startswith("left pad: Pads the left side")
    assert engine.search(SearchQuery(text="pads the left", mode="text")).hits[0].version == \
        "1.4.0"


def test_category_by_embedding_for_packages_without_one(engine: SearchEngine,
                                                        repo: Repo) -> None:
    LocalRegistry(repo).publish(UNCATEGORIZED_DOC, ALICE, now=NOW)
    engine.catch_up()
    while engine.embed_pending():
        pass
    assert engine.classify() >= 1
    package = engine.index.package_by_name("pixel-sprites")
    assert package is not None and package.front_category == ""
    assert package.category == "graphics"
    assert ("graphics", 1) in engine.categories()
    # A front-matter category is never overridden.
    assert engine.index.package_by_name("left-pad").category == "text"  # type: ignore[union-attr]


def test_similar_and_recommend(engine: SearchEngine) -> None:
    assert engine.similar("left-pad", 1)[0].name == "slugify-lite"
    assert "left-pad" not in names(engine.similar("left-pad", 5))
    recommended = names(engine.recommend(["@acme/cli"], 5))
    assert "@acme/retry" in recommended[:2]  # its dependency, and close in meaning
    assert "@acme/cli" not in recommended
    with pytest.raises(NotFoundError):
        engine.similar("no-such-package", 5)
    with pytest.raises(ValidationError):
        engine.recommend([], 5)


def test_trending_and_recent_count_events(engine: SearchEngine) -> None:
    now = [float(NOW + 1000)]
    engine.clock = lambda: now[0]
    engine.record_download("left-pad", "1.3.0")
    now[0] += 2 * 86_400
    engine.record_download("slugify-lite", "0.4.2")
    engine.record_download("slugify-lite", "0.4.2")
    assert names(engine.trending("day", 5)) == ["slugify-lite"]
    week = engine.trending("week", 5)
    assert names(week) == ["slugify-lite", "left-pad"] and week[0].score == 2
    assert engine.downloads_total() == 3
    assert engine.downloads_since(NOW + 2000) == 2
    by_downloads = engine.search(SearchQuery(text="string", sort="downloads", mode="text"))
    assert by_downloads.hits[0].name == "slugify-lite"
    assert len(engine.recent("created", 3)) == 3
    with pytest.raises(ValidationError, match="period"):
        engine.trending("year", 5)
    with pytest.raises(ValidationError, match="type"):
        engine.recent("deleted", 5)


def test_reproducible_from_own_attestation_refreshes_trust(engine: SearchEngine,
                                                           repo: Repo) -> None:
    before = engine.index.package_by_name("left-pad")
    assert before is not None and not before.reproducible
    # A key of this home regenerates it: its attestation is this node's own.
    keystore = Keystore(repo.home)
    keystore.ensure_default()
    LocalRegistry(repo).verify("left-pad", None, keystore.get(Keystore.default_name()),
                               now=NOW + 5)
    assert engine.refresh() == 1
    after = engine.index.package_by_name("left-pad")
    assert after is not None and after.reproducible and after.trust > before.trust
    # Nothing new: nothing to redo. An independent attester's record raises trust again.
    assert engine.refresh() == 0
    LocalRegistry(repo).verify("left-pad", None, PublisherKey.generate(), now=NOW + 6)
    assert engine.refresh() == 1
    again = engine.index.package_by_name("left-pad")
    assert again is not None and again.trust > after.trust


def test_bulk_entries_without_a_registry(tmp_path: Path, embedder: Embedder) -> None:
    engine = SearchEngine(SearchIndex(tmp_path / "s.sqlite"), vector_dir=tmp_path / "v",
                          loader=lambda: embedder)
    engine.load_model()
    engine.index_entries([
        PackageEntry(f"pkg-{i}", "1.0.0", f"m{i}", description=d, category="")
        for i, d in enumerate(["Parse CSV files into rows", "Send HTTP requests with retries",
                               "Hash passwords with argon2"])])
    result = engine.search(SearchQuery(text="securely store user passwords"))
    assert result.hits[0].name == "pkg-2"
    # Vectors survive a rebuild of the annoy index and reload from disk.
    assert engine._vectors is not None
    engine._vectors.rebuild((k, v) for k, _p, v in engine.index.chunk_vectors())
    again = SearchEngine(SearchIndex(tmp_path / "s.sqlite"), vector_dir=tmp_path / "v",
                         loader=lambda: embedder)
    again.load_model()
    assert again.search(SearchQuery(text="comma separated values")).hits[0].name == "pkg-0"
    engine.close()
    again.close()


# -- without the model ---------------------------------------------------------------------------


def test_without_the_model_text_only_and_said_once(repo: Repo,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    def missing() -> Embedder:
        raise ImportError("No module named 'torch'", name="torch")

    engine = SearchEngine.open(repo)
    engine._loader = missing
    engine.catch_up()
    with caplog.at_level(logging.WARNING, logger="dre.search"):
        assert not engine.load_model()
        assert not engine.load_model()
        first = engine.search(SearchQuery(text="retry with backoff"))
        second = engine.search(SearchQuery(text="pad", mode="semantic"))
    said = [r for r in caplog.records if "semantic search unavailable" in r.getMessage()]
    assert len(said) == 1 and "torch" in said[0].getMessage()
    assert first.mode == "text" and first.hits[0].name == "@acme/retry"
    assert first.notice is not None and "torch" in first.notice
    assert second.mode == "text" and second.hits[0].name == "left-pad"
    # Similar falls back to words.
    assert engine.similar("left-pad", 3)
    text = engine.search(SearchQuery(text="pad", mode="text"))
    assert text.notice is None
    engine.close()


def test_wrong_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(SemanticUnavailable, match="refusing to load"):
        load_embedder(tmp_path)


# -- in the running node -------------------------------------------------------------------------


@pytest.mark.trio
async def test_node_indexes_what_is_published_while_it_runs(tmp_path: Path,
                                                            embedder: Embedder) -> None:
    # The node's engine uses the module's already loaded model.
    search_engine._shared_embedder[:] = [embedder]
    home = tmp_path / "home"
    node = Node(home, NodeConfig(http="127.0.0.1:0"), p2p=False)
    async with trio.open_nursery() as nursery:
        state = await nursery.start(node.run)
        registry = LocalRegistry(state.repo)
        registry.publish((EXAMPLES / "left-pad.md").read_bytes(), BOB, now=int(time.time()))
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            with trio.fail_after(30):
                while True:
                    response = await client.get(
                        f"{state.http_url}/api/v1/search",
                        params={"q": "put characters before a string", "mode": "semantic"})
                    doc = response.json()
                    if doc["mode"] == "semantic" and doc["hits"]:
                        break
                    await trio.sleep(0.2)
            assert doc["hits"][0]["name"] == "left-pad"
            bad = await client.get(f"{state.http_url}/api/v1/search",
                                   params={"q": "x" * 1001})
            assert bad.status_code == 400
            assert bad.json() == {"error": "query is longer than 1000 characters"}
            odd = await client.get(f"{state.http_url}/api/v1/search",
                                   params={"q": 'NEAR("pad" -x*) AND ^:(', "mode": "text"})
            assert odd.status_code == 200
            for path, params in (("/api/v1/trending", {"period": "year"}),
                                 ("/api/v1/recent", {"type": "x"}),
                                 ("/api/v1/search", {"limit": "-1"}),
                                 ("/api/v1/search", {"sort": "best"}),
                                 ("/api/v1/recommendations", {})):
                answer = await client.get(f"{state.http_url}{path}", params=params)
                assert answer.status_code == 400, (path, answer.text)
                assert set(answer.json()) == {"error"}
            similar = await client.get(f"{state.http_url}/api/v1/similar/left-pad")
            assert similar.status_code == 200 and similar.json()["hits"] == []
            categories = await client.get(f"{state.http_url}/api/v1/categories")
            assert categories.json() == {"categories": [{"name": "text", "packages": 1}]}
        node.stop()


@pytest.mark.trio
async def test_engine_stays_responsive_while_it_embeds(tmp_path: Path,
                                                       embedder: Embedder) -> None:
    engine = SearchEngine(SearchIndex(tmp_path / "s.sqlite"), vector_dir=tmp_path / "v",
                          loader=lambda: embedder)
    prose = " ".join(f"Sentence {i} says how this package handles case number {i}." for i in
                     range(60))
    engine.index_entries([PackageEntry(f"pkg-{i}", "1.0.0", f"m{i}", prose=f"{i} {prose}",
                                       description=f"Package number {i}") for i in range(30)],
                         embed=False)
    shutdown = trio.Event()
    lags: list[float] = []
    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run, shutdown)
        with trio.fail_after(120):
            while engine._maybe_unembedded or not engine.semantic_ready:
                before = trio.current_time()
                await trio.sleep(0.05)
                lags.append(trio.current_time() - before - 0.05)
                started = time.perf_counter()
                await trio.to_thread.run_sync(
                    engine.search, SearchQuery(text="case number seven", mode="text"))
                latencies.append(time.perf_counter() - started)
        shutdown.set()
    assert engine.semantic_ready and len(engine.index.chunk_keys()) >= 60
    # The event loop and text queries kept going while the worker embedded.
    assert len(lags) > 10
    assert max(lags) < 0.5 and sorted(latencies)[len(latencies) // 2] < 0.1
    engine.close()


def test_a_model_that_fails_to_load_leaves_text_search(tmp_path: Path) -> None:
    def broken() -> Embedder:
        raise RuntimeError("unsupported CPU")

    engine = SearchEngine(SearchIndex(tmp_path / "s.sqlite"), loader=broken)
    engine.index_entries([PackageEntry("p", "1.0.0", "m", description="pad strings")])
    assert not engine.load_model()
    result = engine.search(SearchQuery(text="pad"))
    assert result.mode == "text" and [h.name for h in result.hits] == ["p"]
    assert result.notice is not None and "unsupported CPU" in result.notice
    engine.close()


@pytest.mark.trio
async def test_indexing_failures_do_not_stop_the_engine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    engine = SearchEngine(SearchIndex(tmp_path / "s.sqlite"), semantic=False)
    calls: list[int] = []

    def failing_step() -> bool:
        calls.append(1)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(engine, "_step", failing_step)
    monkeypatch.setattr(engine, "_has_vector_work", lambda: True)
    shutdown = trio.Event()
    with caplog.at_level(logging.ERROR, logger="dre.search"):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run, shutdown)
            await trio.sleep(2.0)
            shutdown.set()
    # Retried, backing off (0.5 s, 1 s, …), each failure logged, and the engine ended cleanly.
    assert 2 <= len(calls) <= 4
    assert all("search indexing failed" in r.getMessage() for r in caplog.records)
    engine.close()


def test_record_from_a_peer_indexed_now_its_document_when_it_arrives(
        tmp_path: Path) -> None:
    Repo.init(tmp_path / "home")
    repo = Repo.open(tmp_path / "home")
    index = SearchIndex(tmp_path / "search.sqlite")
    Repo.init(tmp_path / "peer")
    with Repo.open(tmp_path / "peer") as peer:
        published = LocalRegistry(peer).publish((EXAMPLES / "left-pad.md").read_bytes(), ALICE,
                                                now=NOW)
        manifest = Block(published.manifest, peer.store.get(published.manifest))
        doc_blocks = [Block(c, d) for c, d in iter_dag(peer.store.get, published.doc)]
    # Gossip brought the manifest only.
    LocalRegistry(repo).accept_record(manifest, now=NOW + 60)
    engine = SearchEngine(index, repo=repo, semantic=False)
    engine.catch_up()

    def text(query: str) -> list[str]:
        return names(engine.search(SearchQuery(text=query, mode="text")).hits)

    assert text("pad") == ["left-pad"]
    assert text("fill character") == []  # words of the document's prose
    repo.store.put_many(doc_blocks)
    assert engine.refresh() == 1
    assert text("fill character") == ["left-pad"]
    package = index.package_by_name("left-pad")
    assert package is not None and package.created == NOW
    engine.close()
    repo.close()
