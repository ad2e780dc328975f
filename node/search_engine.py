"""The search engine: hybrid (full text + semantic) search, similar packages, recommendations,
trending and recent, over the search index of one node home.

Ranking: the FTS5/BM25 ranking and the vector ranking (each package scores as its best chunk)
are fused by weighted reciprocal-rank fusion (:func:`dre.protocol.search.reciprocal_rank_fusion`
with :data:`~dre.protocol.search.HYBRID_K` and ``HYBRID_VECTOR_WEIGHT``: the text ranking
re-ranks the vector ranking's candidates); equal scores go to the more trusted, then the
reproducible package. ``sort`` other than relevance
orders the best :data:`CANDIDATES` relevant packages (or every package, for a query without
words) by downloads, updated or created time.

Running in a node, :meth:`SearchEngine.run` keeps the index current: it follows the registry's
audit log (polling its head every :data:`POLL_INTERVAL` s, an LMDB read), loads the model in a
thread and embeds new packages in bounded batches on a worker thread, one step at a time, so
HTTP handlers stay fast; it rebuilds the annoy index when its delta buffer grows, refreshes
trust when attestations arrive, and classifies packages without a front-matter category.
Without the model (not installed, or other weights) everything works on full text and the
engine says so once in the log and in :attr:`SearchResult.notice` of every answer that wanted
vectors.

Bulk use without a node or registry (evaluation, benchmarks)::

    engine = SearchEngine(SearchIndex(path / "search.sqlite"), vector_dir=path / "vectors")
    engine.load_model()                       # optional: semantic search (≈5 s)
    engine.index_entries(entries)             # PackageEntry values; embeds too if loaded
    engine.index_entries(entries, embed=False); engine.embed_pending()   # or in two steps
    engine.search(SearchQuery(text="…", mode="hybrid"))
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
import trio.lowlevel
from dre.protocol.cid import parse_cid
from dre.protocol.docformat import check_name
from dre.protocol.errors import DreError, NotFoundError, ValidationError
from dre.protocol.search import (
    BUILTIN_CATEGORIES,
    HYBRID_K,
    HYBRID_VECTOR_WEIGHT,
    MAX_LIMIT,
    PERIODS,
    RECENT_TYPES,
    SearchHit,
    SearchQuery,
    SearchResult,
    query_terms,
    reciprocal_rank_fusion,
    validate_query,
)
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo
from dre.storage.search_index import (
    IndexedPackage,
    PackageEntry,
    PackageFacts,
    SearchIndex,
    catch_up,
    entry_for,
    own_peer_ids,
    package_trust,
    trust_key,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from .embedder import Embedder, Vector
else:
    TaskStatus = trio.TaskStatus

__all__ = [
    "CANDIDATES",
    "MAX_BASED_ON",
    "POLL_INTERVAL",
    "SearchEngine",
]

_log = logging.getLogger("dre.search")
#: Threads that embed queries beside the text ranking (one per query in flight, up to 4).
_QUERY_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dre-query-embed")

#: Depth of each ranking before fusion (and of the set a non-relevance sort orders). Beyond
#: rank 100 an item adds less than 1/160 to an RRF score: deeper only costs time.
CANDIDATES = 100
#: How often the running engine looks at the registry log's head (seconds).
POLL_INTERVAL = 0.5
#: How often trust (new attestations) and late documents are looked at (seconds).
REFRESH_INTERVAL = 30.0
#: Log entries indexed per worker step while catching up.
CATCH_UP_STEP = 500
#: Chunks embedded per worker step (≈80 ms each on one core: a step stays ~2 s).
EMBED_STEP_CHUNKS = 32
#: Most packages ``recommend`` takes as input.
MAX_BASED_ON = 20
_NOTICE_STARTING = "semantic search is starting (loading the model); text results only"


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be from 1 to {MAX_LIMIT}")
    return limit


class SearchEngine:
    """Search over one :class:`SearchIndex`; see the module docstring."""

    def __init__(
        self,
        index: SearchIndex,
        *,
        repo: Repo | None = None,
        vector_dir: Path | None = None,
        semantic: bool = True,
        loader: Callable[[], Embedder] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``repo`` (optional) is the registry to follow; ``vector_dir`` where the annoy index
        lives (default ``<repo home>/vectors``); ``semantic=False`` never loads the model (the
        CLI without a node); ``loader`` replaces the model loader (tests)."""
        self.index = index
        self.repo = repo
        self.vector_dir = vector_dir if vector_dir is not None else (
            repo.home / "vectors" if repo is not None else None)
        self.clock = clock
        self._loader = loader
        self._embedder: Embedder | None = None
        self._vectors: Any = None
        self._notice: str | None = None if semantic else (
            "semantic search needs a running node (`dre node start`); text results only")
        self._semantic_wanted = semantic
        self._model_lock = threading.Lock()
        self._categories_done: tuple[tuple[str, ...], int] | None = None
        self._embedded_rounds = 0
        # Whether packages may be waiting for embedding: spares the running loop a table scan
        # every poll once everything is embedded.
        self._maybe_unembedded = True
        # Set by a query that wanted vectors before the model was loaded.
        self._vectors_wanted = False
        # RegistryIndex.attestation_changes() at the last trust refresh (None: never ran).
        self._attestations_seen: int | None = None

    @classmethod
    def open(cls, repo: Repo, *, semantic: bool = True) -> SearchEngine:
        """The engine of a node home (its ``search.sqlite`` and ``vectors/``)."""
        return cls(SearchIndex.open_home(repo.home), repo=repo, semantic=semantic)

    def close(self) -> None:
        """Close the index."""
        self.index.close()

    # -- the model ---------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder | None:
        """The loaded model (its chunker and encoder), or None before :meth:`load_model`."""
        return self._embedder

    @property
    def vectors(self) -> Any:
        """The vector index (:class:`dre.storage.vector_index.VectorIndex`) once the model is
        loaded, else None."""
        return self._vectors

    @property
    def semantic_ready(self) -> bool:
        """Whether vector search is available now."""
        return self._embedder is not None and self._vectors is not None

    @property
    def notice(self) -> str | None:
        """Why vector search is not available (None when it is)."""
        if self.semantic_ready:
            return None
        return self._notice or _NOTICE_STARTING

    def load_model(self) -> bool:
        """Load the embedding model and the vector index (blocking, ≈5 s); False, with the
        reason logged once and kept in :attr:`notice`, if semantic search is unavailable."""
        with self._model_lock:
            if self.semantic_ready:
                return True
            if not self._semantic_wanted or self._notice is not None:
                return False
            try:
                from dre.storage.vector_index import VectorIndex  # noqa: PLC0415

                from .embedder import SemanticUnavailable, load_embedder  # noqa: PLC0415

                try:
                    embedder = self._loader() if self._loader else _shared(load_embedder)
                except SemanticUnavailable as exc:
                    raise _Unavailable(str(exc)) from None
            except ImportError as exc:
                self._notice = (f"semantic search unavailable: {exc.name or exc} is not "
                                "installed; searching text only")
            except _Unavailable as exc:
                self._notice = str(exc)
            except Exception as exc:
                # torch and transformers can fail in ways of their own (a damaged config, an
                # unsupported CPU): the node then searches text, it does not stop.
                self._notice = (f"semantic search unavailable: the model failed to load "
                                f"({type(exc).__name__}: {str(exc)[:200]}); searching text only")
            if self._notice is not None:
                _log.warning("%s", self._notice)
                return False
            vector_dir = self.vector_dir or (self.index.path.parent / "vectors")
            vectors = VectorIndex(vector_dir, embedder.dim)
            self._reconcile(vectors)
            self._vectors = vectors
            self._embedder = embedder
            self._maybe_unembedded = True
            _log.info("semantic search ready (%d vectors)", len(vectors))
            return True

    def _reconcile(self, vectors: Any) -> None:
        """Make the vector index hold exactly the chunks of the database (after a crash, or
        on first use of a database built elsewhere)."""
        live = self.index.chunk_keys()
        held = vectors.keys()
        missing, stale = live - held, held - live
        if len(missing) + len(stale) > vectors.rebuild_threshold:
            vectors.rebuild((k, v) for k, _p, v in self.index.chunk_vectors())
            return
        vectors.remove(stale)
        found = self.index.chunk_vectors_of(sorted(missing))
        if found:
            import numpy as np  # noqa: PLC0415

            vectors.add([k for k, _ in found],
                        np.vstack([np.frombuffer(v, dtype=np.float32) for _, v in found]))

    # -- indexing ----------------------------------------------------------------------------

    def index_entries(self, entries: Iterable[PackageEntry], *, embed: bool = True,
                      batch: int = 5000) -> int:
        """Index package versions given as plain fields, ``batch`` per transaction; with
        ``embed`` and the model loaded, embed them too. Returns rows changed."""
        changed = 0
        pending: list[PackageEntry] = []
        for entry in entries:
            pending.append(entry)
            if len(pending) >= batch:
                changed += self.index.upsert(pending)
                pending = []
        changed += self.index.upsert(pending)
        self._maybe_unembedded = True
        if embed and self.semantic_ready:
            while self.embed_pending():
                pass
        return changed

    def catch_up(self, *, max_entries: int | None = None) -> int:
        """Index what the registry's log has that the index has not (needs ``repo``)."""
        if self.repo is None:
            return 0
        read = catch_up(self.index, self.repo, max_entries=max_entries)
        if read:
            self._maybe_unembedded = True
        return read

    def embed_pending(self, *, max_chunks: int = 4096) -> int:
        """Embed packages whose text changed (about ``max_chunks`` chunks at most); returns
        how many packages were embedded (0: nothing left, or no model)."""
        embedder, vectors = self._embedder, self._vectors
        if embedder is None or vectors is None:
            return 0
        import numpy as np  # noqa: PLC0415

        from .embedder import chunk_hash  # noqa: PLC0415

        work: list[tuple[int, str, list[bytes]]] = []
        texts: dict[bytes, str] = {}
        chunks = 0
        for pid, content_hash in self.index.to_embed(embedder.model_id,
                                                     limit=max(1, max_chunks)):
            text = self.index.text_of(pid)
            if text is None:
                continue
            pieces = embedder.chunks(*text)
            hashes = [chunk_hash(p) for p in pieces]
            texts.update(zip(hashes, pieces, strict=True))
            work.append((pid, content_hash, hashes))
            chunks += len(pieces)
            if chunks >= max_chunks:
                break
        if not work:
            self._maybe_unembedded = False
            return 0
        cached = self.index.cached_vectors(list(texts))
        missing = [h for h in texts if h not in cached]
        new: dict[bytes, bytes] = {}
        if missing:
            matrix = embedder.embed([texts[h] for h in missing])
            new = {h: matrix[i].astype(np.float32).tobytes() for i, h in enumerate(missing)}
        added, removed = self.index.store_embeddings(embedder.model_id, work, new)
        all_vectors = {**cached, **new}
        vectors.remove(removed)
        if added:
            vectors.add([k for k, _p, _h in added],
                        np.vstack([np.frombuffer(all_vectors[h], dtype=np.float32)
                                   for _k, _p, h in added]))
        self._embedded_rounds += 1
        return len(work)

    def maintain_vectors(self) -> bool:
        """Rebuild the annoy index if its delta grew enough; whether it did."""
        vectors = self._vectors
        if vectors is None or not vectors.needs_rebuild():
            return False
        size = vectors.rebuild((k, v) for k, _p, v in self.index.chunk_vectors())
        _log.info("vector index rebuilt: %d chunks", size)
        return True

    def category_labels(self) -> dict[str, str]:
        """The categories packages are classified against: the built-in list plus every
        category publishers use, with the text each is embedded as."""
        labels = {name: f"{name.replace('-', ' ')}: {words}"
                  for name, words in BUILTIN_CATEGORIES.items()}
        for category in self.index.front_matter_categories():
            labels.setdefault(category, category.replace("-", " "))
        return labels

    def classify(self) -> int:
        """Give packages without a front-matter category the nearest category by embedding
        (when the categories or the embedded packages changed); returns how many were set."""
        embedder = self._embedder
        if embedder is None:
            return 0
        import numpy as np  # noqa: PLC0415

        labels = self.category_labels()
        signature = (tuple(sorted(labels)), self._embedded_rounds)
        if signature == self._categories_done:
            return 0
        names = sorted(labels)
        label_vectors = np.vstack([embedder.embed_query(labels[n]) for n in names])
        ids = self.index.uncategorized()
        assigned: list[tuple[int, str]] = []
        for start in range(0, len(ids), 5000):
            summaries = self.index.summary_vectors(ids[start:start + 5000])
            if not summaries:
                continue
            pids = list(summaries)
            matrix = np.vstack([np.frombuffer(summaries[p], dtype=np.float32) for p in pids])
            best = np.argmax(matrix @ label_vectors.T, axis=1)
            assigned += [(p, names[int(b)]) for p, b in zip(pids, best, strict=True)]
        self.index.set_categories(assigned)
        self._categories_done = signature
        return len(assigned)

    def refresh(self) -> int:
        """Recompute trust of packages whose attestations changed and index documents that
        arrived after their manifest (needs ``repo``); returns packages updated."""
        repo = self.repo
        if repo is None:
            return 0
        registry = LocalRegistry(repo)
        own = own_peer_ids(repo.home)
        updates: list[tuple[str, float, bool, str]] = []
        # Trust moves only with attestations: without a new one since the last pass, the walk
        # over every package (1-2 s of CPU at 100k) is skipped.
        changes = repo.index.attestation_changes()
        trust_current = changes == self._attestations_seen
        for name, manifest, old_key in [] if trust_current else self.index.trust_keys():
            cid = parse_cid(manifest)
            attestations = repo.index.attestations(cid)
            if trust_key(attestations) == old_key:
                continue
            try:
                trust, reproducible, key = package_trust(registry, cid, registry.manifest(cid),
                                                         own)
            except DreError as exc:
                _log.warning("cannot refresh trust of %s: %s", name, exc)
                continue
            updates.append((name, trust, reproducible, key))
        if updates:
            self.index.set_trust(updates)
        self._attestations_seen = changes
        late: list[PackageEntry] = []
        for _name, manifest, created in self.index.incomplete_docs(limit=200):
            cid = parse_cid(manifest)
            try:
                if repo.store.has(registry.manifest(cid).doc):
                    # Its time is already indexed: passing the earliest keeps it.
                    late.append(entry_for(registry, cid, time=created, own=own))
            except DreError as exc:
                _log.warning("cannot index the document of %s: %s", manifest, exc)
        if late:
            self.index.upsert(late)
            self._maybe_unembedded = True
        return len(updates) + len(late)

    def _step(self) -> bool:
        """One bounded piece of background work; whether there may be more right away."""
        busy = self.catch_up(max_entries=CATCH_UP_STEP) > 0
        if self.semantic_ready and (self.embed_pending(max_chunks=EMBED_STEP_CHUNKS)
                                    or self.maintain_vectors() or self.classify()):
            busy = True
        return busy

    async def run(self, shutdown: trio.Event, *,
                  task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the index current until ``shutdown`` (see the module docstring)."""
        task_status.started()
        async with trio.open_nursery() as nursery:
            last_refresh = time.monotonic()
            last_head: tuple[int, Any] | None = None
            loading = False
            failures = 0
            while not shutdown.is_set():
                if (not loading and self._semantic_wanted and self._notice is None
                        and (self._vectors_wanted or self.index.count() > 0)):
                    # Loaded once there is something to embed or a query wants vectors: an
                    # empty node (tests, fresh installs) does not pay 5 s and 400 MB for it.
                    # Loading touches nothing shared until it is done: safe to abandon at stop.
                    loading = True
                    nursery.start_soon(self._load_in_thread)
                head = self.repo.index.log_head() if self.repo is not None else None
                more = failed = False
                if head != last_head or self._has_vector_work():
                    try:
                        more = await trio.to_thread.run_sync(self._step)
                        if not more:
                            last_head = head
                    except Exception as exc:
                        failed = True
                        _log_failure("search indexing", exc)
                if time.monotonic() - last_refresh > REFRESH_INTERVAL:
                    last_refresh = time.monotonic()
                    try:
                        await trio.to_thread.run_sync(self.refresh)
                    except Exception as exc:
                        _log_failure("search refresh", exc)
                # Indexing is this node's convenience, not its job: a failure is logged and
                # retried later (backing off), it never stops the node.
                failures = failures + 1 if failed else 0
                if not more:
                    with trio.move_on_after(min(60.0, POLL_INTERVAL * 2 ** min(failures, 7))):
                        await shutdown.wait()
                else:
                    await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()

    def _has_vector_work(self) -> bool:
        if not self.semantic_ready:
            return False
        return bool(self._maybe_unembedded
                    or self._vectors.needs_rebuild()
                    or self._categories_done is None
                    or self._categories_done[1] != self._embedded_rounds)

    async def _load_in_thread(self) -> None:
        await trio.to_thread.run_sync(self.load_model,
                                      abandon_on_cancel=True)  # type: ignore[call-arg]

    # -- queries -----------------------------------------------------------------------------

    def _hit(self, package: IndexedPackage, score: float) -> SearchHit:
        return SearchHit(
            name=package.name, version=package.version, manifest=package.manifest,
            description=package.description, category=package.category,
            keywords=package.keywords, score=round(score, 6), trust=package.trust,
            reproducible=package.reproducible, downloads=package.downloads,
            created=package.created, updated=package.updated,
        )

    def _vector_ranking(self, vector: Any, *, depth: int,
                        exclude: frozenset[int] = frozenset()) -> list[tuple[int, float]]:
        """Packages nearest to ``vector`` (each as its best chunk): (id, cosine), best first."""
        vectors = self._vectors
        if vectors is None:
            return []
        found = vectors.search(vector, depth * 3)
        owners = self.index.chunk_packages([k for k, _ in found])
        best: dict[int, float] = {}
        for key, similarity in found:
            pid = owners.get(key)
            if pid is not None and pid not in exclude and pid not in best:
                best[pid] = similarity
        return list(best.items())[:depth]

    def search(self, query: SearchQuery) -> SearchResult:
        """Answer one query (see the module docstring for ranking and sorting).

        ``total`` counts every package the words match in text mode; in hybrid and semantic
        mode (where every package is near the query to some degree) it counts the fused
        candidates, at most twice :data:`CANDIDATES` (or ``offset + limit``).
        """
        validate_query(query)
        category = query.category
        if not query.text.strip():
            # No words: browse (a category, or everything) in the order asked for.
            ids = self.index.browse(category=category, sort=query.sort, limit=query.limit,
                                    offset=query.offset)
            packages = self.index.packages(ids)
            return SearchResult(query=query, hits=[self._hit(packages[i], 0.0) for i in ids
                                                   if i in packages],
                                total=self.index.count_in(category), mode=query.mode)
        terms = query_terms(query.text)
        if not terms:
            # Only punctuation or symbols: nothing to match, and an embedding of "***" would
            # rank packages at random.
            return SearchResult(query=query, hits=[], total=0, mode=query.mode,
                                notice="the query has no words to search for")
        mode, notice = query.mode, None
        if mode != "text" and not self.semantic_ready:
            self._vectors_wanted = True
            mode, notice = "text", self.notice
        elif mode != "text" and self._maybe_unembedded:
            notice = "semantic indexing in progress: new packages may be missing from the results"
        depth = max(CANDIDATES, query.offset + query.limit)
        rankings: list[list[int]] = []
        text_total = 0
        embedding: Future[Vector] | None = None
        if mode in ("semantic", "hybrid") and self._embedder is not None:
            # Embedding the query (torch) and the BM25 ranking (SQLite) both release the GIL:
            # run them side by side, on two cores (measured: hybrid p50 at 100k packages).
            embedding = _QUERY_POOL.submit(self._embedder.embed_query, query.text)
        if mode in ("text", "hybrid"):
            by_text, text_total = self.index.text_search(terms, category=category, limit=depth,
                                                         count=mode == "text")
            rankings.append(by_text)
        if embedding is not None:
            by_meaning = self._vector_ranking(embedding.result(),
                                              depth=depth * (4 if category else 1))
            rankings.append([pid for pid, _ in by_meaning])
        candidates = list(dict.fromkeys(pid for ranking in rankings for pid in ranking))
        # Light facts of every candidate (fusion, filter, sort); full rows for the page only.
        facts = self.index.facts(candidates)
        if category is not None:
            rankings = [[p for p in r if p in facts and facts[p].category == category]
                        for r in rankings]
        rankings = [r[:depth] for r in rankings]
        tie = {pid: (f.trust, float(f.reproducible)) for pid, f in facts.items()}
        if len(rankings) == 2:
            # Hybrid (see HYBRID_K): text re-ranks the vector ranking's candidates. While some
            # packages may still wait for their vectors, text-only hits stay in, so a package
            # just published is found before it is embedded.
            fused_ids = reciprocal_rank_fusion(
                rankings, k=HYBRID_K, weights=(1.0, HYBRID_VECTOR_WEIGHT), tie_break=tie,
                only=None if self._maybe_unembedded else set(rankings[1]))
        else:
            fused_ids = reciprocal_rank_fusion(rankings, tie_break=tie)
        fused = [(pid, score) for pid, score in fused_ids if pid in facts]
        if query.sort != "relevance":
            fused.sort(key=lambda item: -_sort_value(facts[item[0]], query.sort))
        page = fused[query.offset:query.offset + query.limit]
        packages = self.index.packages([p for p, _ in page])
        total = text_total if mode == "text" else len(fused)
        return SearchResult(query=query, hits=[self._hit(packages[p], s) for p, s in page
                                               if p in packages],
                            total=total, mode=mode, notice=notice)

    def _package(self, name: str) -> IndexedPackage:
        check_name(name)
        package = self.index.package_by_name(name)
        if package is None:
            raise NotFoundError(f"no package named {name!r} in the search index")
        return package

    def _similar_ranking(self, package: IndexedPackage, depth: int,
                         exclude: frozenset[int]) -> list[int]:
        if self.semantic_ready:
            import numpy as np  # noqa: PLC0415

            chunk_vectors = self.index.package_vectors(package.id)[:4]
            rankings = [[pid for pid, _ in self._vector_ranking(
                np.frombuffer(v, dtype=np.float32), depth=depth, exclude=exclude)]
                for v in chunk_vectors]
            if rankings:
                return [pid for pid, _ in reciprocal_rank_fusion(rankings)][:depth]
        # Text fallback: the package's own words as a query.
        words = " ".join([package.name, package.description, *package.keywords])
        ids, _total = self.index.text_search(query_terms(words[:1000]), category=None,
                                             limit=depth + len(exclude), count=False)
        return [i for i in ids if i not in exclude][:depth]

    def similar(self, name: str, limit: int = 10) -> list[SearchHit]:
        """Packages nearest to ``name`` (by its vectors; by its words without the model)."""
        _check_limit(limit)
        package = self._package(name)
        ids = self._similar_ranking(package, limit, frozenset({package.id}))
        packages = self.index.packages(ids)
        return [self._hit(packages[i], 1.0 / (1 + rank)) for rank, i in enumerate(ids)
                if i in packages]

    def recommend(self, based_on: Sequence[str], limit: int = 10) -> list[SearchHit]:
        """Packages to use with ``based_on``: similar to them and sharing their dependencies
        (fused by RRF), never the inputs themselves."""
        _check_limit(limit)
        names = list(dict.fromkeys(based_on))
        if not names:
            raise ValidationError("give at least one package to base recommendations on")
        if len(names) > MAX_BASED_ON:
            raise ValidationError(f"recommendations take at most {MAX_BASED_ON} packages")
        inputs = [self._package(n) for n in names]
        exclude = frozenset(p.id for p in inputs)
        depth = max(CANDIDATES // 4, limit * 3)
        rankings = [self._similar_ranking(p, depth, exclude) for p in inputs]
        deps = sorted({d for p in inputs for d in p.dependencies})
        sharing = [pid for pid, _n in self.index.sharing_dependencies(deps, limit=depth * 2)
                   if pid not in exclude]
        if sharing:
            rankings.append(sharing[:depth])
        # What the inputs depend on is worth knowing too (ranked by how many inputs use it).
        used = self.index.ids_of(deps)
        if used:
            counts = {used[d]: sum(d in p.dependencies for p in inputs) for d in used}
            rankings.append(sorted((i for i in counts if i not in exclude),
                                   key=lambda i: -counts[i]))
        candidates = list(dict.fromkeys(pid for r in rankings for pid in r))
        packages = self.index.packages(candidates)
        tie = {pid: (p.trust, float(p.reproducible)) for pid, p in packages.items()}
        fused = reciprocal_rank_fusion(rankings, tie_break=tie)
        return [self._hit(packages[p], s) for p, s in fused if p in packages][:limit]

    def trending(self, period: str = "week", limit: int = 10) -> list[SearchHit]:
        """Most downloaded packages over the last ``period`` (score = downloads in it)."""
        _check_limit(limit)
        if period not in PERIODS:
            raise ValidationError(f"period must be one of {', '.join(PERIODS)}, "
                                  f"not {period[:40]!r}")
        since = int(self.clock()) - PERIODS[period]
        counted = self.index.trending(since, limit=limit)
        packages = self.index.packages([p for p, _ in counted])
        return [self._hit(packages[p], float(n)) for p, n in counted if p in packages]

    def recent(self, kind: str = "created", limit: int = 10) -> list[SearchHit]:
        """Newest packages (``created``: first published; ``updated``: latest version)."""
        _check_limit(limit)
        if kind not in RECENT_TYPES:
            raise ValidationError(f"type must be one of {', '.join(RECENT_TYPES)}, "
                                  f"not {kind[:40]!r}")
        ids = self.index.recent(kind, limit=limit)
        packages = self.index.packages(ids)
        return [self._hit(packages[i], float(getattr(packages[i], kind))) for i in ids
                if i in packages]

    def categories(self) -> list[tuple[str, int]]:
        """(category, package count), most populated first."""
        return self.index.categories()

    def record_download(self, name: str, version: str) -> None:
        """Count one download of ``name@version`` now."""
        self.index.record_download(name, version, int(self.clock()))

    def downloads_total(self) -> int:
        """Downloads recorded on this node."""
        return self.index.downloads_total()

    def downloads_since(self, unix_seconds: int) -> int:
        """Downloads recorded since ``unix_seconds``."""
        return self.index.downloads_since(unix_seconds)


class _Unavailable(Exception):
    pass


def _log_failure(what: str, exc: Exception) -> None:
    if isinstance(exc, DreError):
        _log.warning("%s: %s", what, exc)
    else:
        _log.error("%s failed", what, exc_info=exc)


_shared_lock = threading.Lock()
_shared_embedder: list[Any] = []


def _shared(load: Callable[[], Any]) -> Any:
    """One model per process: nodes of a simulation share it (it is ~400 MB and read-only)."""
    with _shared_lock:
        if not _shared_embedder:
            _shared_embedder.append(load())
        return _shared_embedder[0]


def _sort_value(package: PackageFacts, sort: str) -> float:
    value: float = {"downloads": package.downloads, "updated": package.updated,
                    "created": package.created}.get(sort, 0)
    return value if math.isfinite(value) else 0.0
