"""Relevance evaluation of search: text, semantic and hybrid modes on a labelled set.

The set is ``simulations/search_data/`` (2996 packages with real Debian and PyPI metadata, 316
hand-labelled natural-language queries; see its README). Every package is indexed by the real
engine (:class:`dre.node.search_engine.SearchEngine`: SQLite FTS5 + all-MiniLM-L6-v2 vectors in
the annoy/delta vector index, chunked as the engine chunks), every query runs in each mode, and
the script reports recall@10, MRR and nDCG@10 (binary relevance), for all queries and apart for
*lexical* queries (at least half of the query's words appear in an answer's name, description
or keywords) and *paraphrase* queries (fewer), where full text cannot win by word matching.

Embedding the set takes minutes on two cores, so vectors are cached in
``build/search_eval/vector_cache.sqlite`` (keyed by the engine's chunk hash: model and text)
and seeded into each run's fresh index through the index's vector cache; the engine then embeds
only what is missing. ``--fusion`` also scores alternative fusions of the engine's own text and
vector rankings (RRF constants, weights), chosen on one half of the queries and reported on the
other half, to show whether the default is a sound choice (it never changes the engine).

Usage::

    python simulations/eval_search.py [--packages N] [--queries N] [--fusion]

``--packages N`` keeps every labelled package plus N others (quick runs while developing).
Writes ``simulations/results/search_eval.json`` and ``search_eval.png`` and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dre.node.embedder import MODEL_ID, chunk_hash
from dre.node.search_engine import CANDIDATES, SearchEngine
from dre.protocol.search import (
    MAX_LIMIT,
    RRF_K,
    SearchQuery,
    query_terms,
)
from dre.storage.search_index import SearchIndex
from search_common import engine_commit, entry_of

HERE = Path(__file__).resolve().parent
DATA = HERE / "search_data"
RESULTS = HERE / "results"
WORK = HERE.parent / "build" / "search_eval"
MODES = ("text", "semantic", "hybrid")
K = 10
#: A query is "lexical" when at least this share of its words occur in an answer's
#: name, description or keywords.
LEXICAL_SHARE = 0.5


# -- data -------------------------------------------------------------------------------------


def load_data(max_others: int | None, max_queries: int | None
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Packages, queries, and a digest of the two files (recorded in the results)."""
    raw_packages = (DATA / "packages.jsonl").read_bytes()
    raw_queries = (DATA / "queries.json").read_bytes()
    digest = hashlib.sha256(raw_packages + b"\0" + raw_queries).hexdigest()[:16]
    packages = [json.loads(line) for line in raw_packages.decode().splitlines()]
    queries = list(json.loads(raw_queries)["queries"])
    if max_queries is not None:
        queries = queries[:max_queries]
    if max_others is not None:
        labelled = {n for q in queries for n in q["relevant"]}
        others = [p for p in packages if p["name"] not in labelled]
        ranked = sorted(others, key=lambda p: hashlib.sha256(p["name"].encode()).digest())
        keep = labelled | {p["name"] for p in ranked[:max_others]}
        packages = [p for p in packages if p["name"] in keep]
    return packages, queries, digest




def _stem(word: str) -> str:
    for suffix in ("ing", "ers", "er", "es", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def lexical_overlap(text: str, answers: Sequence[dict[str, Any]]) -> float:
    """The largest share of the query's words found in one answer's name, description or
    keywords (crudely stemmed), over its answers."""
    terms = {_stem(t) for t in query_terms(text)}
    if not terms:
        return 0.0
    best = 0.0
    for package in answers:
        words = re.findall(r"[^\W_]+", " ".join(
            [package["name"], package["description"], *package["keywords"]]).casefold())
        present = {_stem(w) for w in words}
        best = max(best, len(terms & present) / len(terms))
    return best


# -- indexing ---------------------------------------------------------------------------------


def build_engine(packages: list[dict[str, Any]], run_dir: Path) -> tuple[SearchEngine, dict]:
    """Index ``packages`` into a fresh engine in ``run_dir``; timings and counts."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    facts: dict[str, Any] = {}
    engine = SearchEngine(SearchIndex(run_dir / "search.sqlite"), vector_dir=run_dir / "vectors")
    started = time.perf_counter()
    if not engine.load_model():
        raise SystemExit(f"semantic search unavailable: {engine.notice}")
    facts["model_load_s"] = time.perf_counter() - started
    entries = [entry_of(p, i) for i, p in enumerate(packages)]

    started = time.perf_counter()
    engine.index_entries(entries, embed=False)
    facts["text_index_s"] = time.perf_counter() - started

    # Seed the run's vector cache from the persistent one: the engine embeds only what misses.
    embedder = engine.embedder  # the loaded model's chunker, as the engine will chunk
    assert embedder is not None
    started = time.perf_counter()
    hashes: list[bytes] = []
    for p in packages:
        pieces = embedder.chunks(p["name"], p["description"], p["keywords"], p["prose"])
        hashes += [chunk_hash(piece) for piece in pieces]
    facts["chunking_s"] = time.perf_counter() - started
    facts["chunks"] = len(hashes)
    WORK.mkdir(parents=True, exist_ok=True)
    with SearchIndex(WORK / "vector_cache.sqlite") as cache:
        seeded = cache.cached_vectors(hashes)
        engine.index.store_embeddings(MODEL_ID, [], seeded)
        facts["chunks_from_cache"] = len(seeded)
        started = time.perf_counter()
        while engine.embed_pending():
            pass
        facts["embed_s"] = time.perf_counter() - started
        fresh = engine.index.cached_vectors([h for h in hashes if h not in seeded])
        cache.store_embeddings(MODEL_ID, [], fresh)
        facts["chunks_embedded"] = len(fresh)
    started = time.perf_counter()
    facts["annoy_rebuilt"] = engine.maintain_vectors()
    facts["annoy_rebuild_s"] = time.perf_counter() - started
    started = time.perf_counter()
    facts["classified"] = engine.classify()
    facts["classify_s"] = time.perf_counter() - started
    return engine, facts


def classification_accuracy(engine: SearchEngine, packages: list[dict[str, Any]]) -> dict:
    """How often the engine's category for a package published without one is the category
    its Debian section gave it (counted only where that category is one the engine knows)."""
    labels = set(engine.category_labels())
    hits = total = 0
    for p in packages:
        withheld = p.get("withheld_category")
        if not withheld or withheld not in labels:
            continue
        indexed = engine.index.package_by_name(p["name"])
        total += 1
        hits += int(indexed is not None and indexed.category == withheld)
    return {"packages": total, "correct": hits,
            "accuracy": hits / total if total else None,
            "labels": len(labels)}


# -- metrics ----------------------------------------------------------------------------------


def metrics(ranked: Sequence[str], relevant: set[str]) -> dict[str, float]:
    """recall@K, reciprocal rank (within the ranking) and binary nDCG@K of one query."""
    top = ranked[:K]
    recall = len(relevant & set(top)) / len(relevant)
    rr = next((1.0 / (i + 1) for i, n in enumerate(ranked) if n in relevant), 0.0)
    dcg = sum(1.0 / math.log2(i + 2) for i, n in enumerate(top) if n in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), K)))
    return {"recall@10": recall, "mrr": rr, "ndcg@10": dcg / ideal}


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means of per-query metrics (and how many queries)."""
    if not rows:
        return {"queries": 0}
    keys = rows[0].keys()
    return {"queries": len(rows), **{k: statistics.fmean(r[k] for r in rows) for k in keys}}


def run_queries(engine: SearchEngine, queries: list[dict[str, Any]]
                ) -> dict[str, dict[str, list[str]]]:
    """Ranked names of every query in every mode (top MAX_LIMIT). Latency is measured by
    bench_search.py (here the query vector is cached after the first mode that embeds it)."""
    ranked: dict[str, dict[str, list[str]]] = {m: {} for m in MODES}
    for mode in MODES:
        for q in queries:
            result = engine.search(SearchQuery(text=q["text"], mode=mode, limit=MAX_LIMIT))
            if result.mode != mode:
                raise SystemExit(f"engine answered {mode} query in {result.mode} mode: "
                                 f"{result.notice}")
            ranked[mode][q["id"]] = [h.name for h in result.hits]
    return ranked


# -- fusion study -----------------------------------------------------------------------------


def fuse(text: Sequence[str], semantic: Sequence[str], *, k: int, weight: float,
         text_depth: int | None = None, gated: bool = False) -> list[str]:
    """Weighted RRF of two rankings: ``weight`` on the vector ranking, 1 on the text one;
    only the text ranking's first ``text_depth`` count, and with ``gated`` only text hits that
    the vector ranking also holds (text then re-ranks the semantic candidates)."""
    scores: dict[str, float] = {}
    allowed = set(semantic) if gated else None
    for rank, name in enumerate(text[:text_depth], 1):
        if allowed is None or name in allowed:
            scores[name] = scores.get(name, 0.0) + 1.0 / (k + rank)
    for rank, name in enumerate(semantic, 1):
        scores[name] = scores.get(name, 0.0) + weight / (k + rank)
    return sorted(scores, key=lambda n: -scores[n])


#: The fusions studied: family -> settings (k, weight on the vector ranking, text depth, gated).
_FAMILIES: dict[str, list[tuple[int, float, int | None, bool]]] = {
    "rrf_weighted": [(k, w, None, False) for k in (1, 5, 10, 20, 30, 60, 100)
                     for w in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)],
    "rrf_text_top_d": [(k, w, d, False) for k in (1, 10, 30, 60) for w in (1.0, 1.5, 2.0)
                       for d in (3, 5, 10, 20, 50)],
    "semantic_reranked_by_text": [(k, w, None, True) for k in (1, 5, 10, 20, 30, 60, 100)
                                  for w in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)],
}


def fusion_study(queries: list[dict[str, Any]], ranked: dict[str, dict[str, list[str]]]
                 ) -> dict[str, Any]:
    """Alternative fusions of the engine's own text and vector rankings, each family tuned on
    the odd-numbered queries and reported on the even-numbered (held-out) ones."""
    halves = {"tune": queries[0::2], "held_out": queries[1::2]}

    def score(qs: list[dict[str, Any]], fuser: Callable[[str], list[str]]) -> dict[str, float]:
        return summarize([metrics(fuser(q["id"]), set(q["relevant"])) for q in qs])

    def fuser(k: int, w: float, d: int | None, gated: bool) -> Callable[[str], list[str]]:
        return lambda qid: fuse(ranked["text"][qid], ranked["semantic"][qid], k=k, weight=w,
                                text_depth=d, gated=gated)

    def objective(s: dict[str, float]) -> float:
        return (s["mrr"] + s["recall@10"]) / 2

    report: dict[str, Any] = {
        "method": "fusions of the engine's own text and semantic rankings (top 100 each); "
                  "score = 1/(k+rank_text) + w/(k+rank_semantic), optionally only the text "
                  "top d, or only text hits also in the semantic ranking (gated); each family's "
                  "setting chosen by (MRR + recall@10)/2 on the odd-numbered queries (tune "
                  "half) and reported on the even-numbered ones (held-out half). "
                  f"rrf_k{RRF_K}_w1 is plain RRF of the two top-100 rankings: it should match "
                  "the engine's hybrid (which fuses the top 200 of each), a check of the study",
        "families": {},
    }
    chosen: dict[str, tuple[int, float, int | None, bool]] = {f"rrf_k{RRF_K}_w1": (
        RRF_K, 1.0, None, False)}
    for family, settings in _FAMILIES.items():
        tuned = {s: objective(score(halves["tune"], fuser(*s))) for s in settings}
        best = max(settings, key=lambda s: tuned[s])
        chosen[family] = best
        report["families"][family] = {
            "best_on_tune_half": {"k": best[0], "w": best[1], "text_depth": best[2],
                                  "gated": best[3]},
            "tune_objective_best": tuned[best],
            "tune_objective_range": [min(tuned.values()), max(tuned.values())],
        }
    for half, qs in halves.items():
        report[half] = {
            "queries": len(qs),
            "text": score(qs, lambda qid: ranked["text"][qid]),
            "semantic": score(qs, lambda qid: ranked["semantic"][qid]),
            "hybrid_engine": score(qs, lambda qid: ranked["hybrid"][qid]),
            **{name: score(qs, fuser(*setting)) for name, setting in chosen.items()},
        }
    # Is a difference with semantic real? Paired bootstrap over the held-out queries.
    held = halves["held_out"]
    semantic_rows = [metrics(ranked["semantic"][q["id"]], set(q["relevant"])) for q in held]
    report["held_out_minus_semantic_95ci"] = {
        name: paired_bootstrap(
            [metrics(f(q["id"]), set(q["relevant"])) for q in held], semantic_rows)
        for name, f in [("hybrid_engine", lambda qid: ranked["hybrid"][qid]),
                        *((n, fuser(*c)) for n, c in chosen.items() if n in _FAMILIES)]
    }
    return report


def paired_bootstrap(rows: list[dict[str, float]], base: list[dict[str, float]],
                     *, rounds: int = 2000) -> dict[str, list[float]]:
    """95 % interval of mean(rows) - mean(base) per metric, resampling queries (seeded)."""
    import random  # noqa: PLC0415

    rng = random.Random(7)
    n = len(rows)
    out: dict[str, list[float]] = {}
    for key in ("recall@10", "mrr"):
        diffs = [r[key] - b[key] for r, b in zip(rows, base, strict=True)]
        means = sorted(statistics.fmean(rng.choices(diffs, k=n)) for _ in range(rounds))
        out[key] = [round(statistics.fmean(diffs), 4), round(means[int(0.025 * rounds)], 4),
                    round(means[int(0.975 * rounds) - 1], 4)]
    return out


# -- output -----------------------------------------------------------------------------------


def plot(summary: dict[str, dict[str, dict[str, float]]], path: Path, title: str) -> None:
    """Grouped bars: each metric by mode, for all / lexical / paraphrase queries."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    groups = [g for g in ("all", "lexical", "paraphrase") if summary.get(g)]
    metric_names = ("recall@10", "mrr", "ndcg@10")
    colours = {"text": "#8c8c8c", "semantic": "#4c72b0", "hybrid": "#dd8452"}
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), sharey=True)
    for ax, group in zip(axes if len(groups) > 1 else [axes], groups, strict=True):
        width = 0.26
        for i, mode in enumerate(MODES):
            values = [summary[group][mode][m] for m in metric_names]
            bars = ax.bar([x + (i - 1) * width for x in range(len(metric_names))], values,
                          width, label=mode, color=colours[mode])
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        n = summary[group]["hybrid"]["queries"]
        ax.set_title(f"{group} ({n} queries)", fontsize=10)
        ax.set_xticks(range(len(metric_names)), metric_names)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = (axes[0] if len(groups) > 1 else axes).get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(MODES), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=None,
                        help="keep the labelled packages plus this many others")
    parser.add_argument("--queries", type=int, default=None, help="first N queries only")
    parser.add_argument("--fusion", action="store_true",
                        help="also study alternative fusions (tune half / held-out half)")
    parser.add_argument("--out", type=Path, default=RESULTS / "search_eval.json")
    args = parser.parse_args(argv)
    commit_at_start = engine_commit()  # the code imported now is what is measured

    packages, queries, digest = load_data(args.packages, args.queries)
    by_name = {p["name"]: p for p in packages}
    print(f"{len(packages)} packages, {len(queries)} queries", file=sys.stderr)
    engine, facts = build_engine(packages, WORK / "run")
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in facts.items()}
    print(f"indexed: {json.dumps(shown)}", file=sys.stderr)
    try:
        ranked = run_queries(engine, queries)
        category_check = classification_accuracy(engine, packages)
    finally:
        engine.close()

    overlap = {q["id"]: lexical_overlap(q["text"], [by_name[n] for n in q["relevant"]])
               for q in queries}
    group_of = {qid: "lexical" if o >= LEXICAL_SHARE else "paraphrase"
                for qid, o in overlap.items()}
    per_query: list[dict[str, Any]] = []
    rows: dict[str, dict[str, list[dict[str, float]]]] = {
        g: {m: [] for m in MODES} for g in ("all", "lexical", "paraphrase")}
    for q in queries:
        entry: dict[str, Any] = {"id": q["id"], "text": q["text"], "relevant": q["relevant"],
                                 "lexical_overlap": round(overlap[q["id"]], 3),
                                 "group": group_of[q["id"]]}
        for mode in MODES:
            m = metrics(ranked[mode][q["id"]], set(q["relevant"]))
            rows["all"][mode].append(m)
            rows[group_of[q["id"]]][mode].append(m)
            entry[mode] = {"top3": ranked[mode][q["id"]][:3],
                           **{k: round(v, 4) for k, v in m.items()}}
        per_query.append(entry)
    summary = {g: {m: summarize(rows[g][m]) for m in MODES} for g in rows}

    beats = {metric: summary["all"]["hybrid"][metric] > max(summary["all"]["text"][metric],
                                                            summary["all"]["semantic"][metric])
             for metric in ("recall@10", "mrr", "ndcg@10")}
    result: dict[str, Any] = {
        "what": "relevance of search modes on a labelled set of real package metadata",
        "command": "python simulations/eval_search.py " + " ".join(argv or sys.argv[1:]),
        "data": {"packages": len(packages), "queries": len(queries), "sha256_16": digest,
                 "source": "simulations/search_data (Debian bookworm main + installed PyPI "
                           "distributions; hand-labelled queries)"},
        "engine": {"model": MODEL_ID, "candidates_per_ranking": CANDIDATES, "rrf_k": RRF_K,
                   "ranked_depth_for_mrr": MAX_LIMIT},
        "engine_commit": commit_at_start,
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "indexing": facts,
        "metrics": summary,
        "hybrid_beats_both": beats,
        "groups": {"lexical_share_threshold": LEXICAL_SHARE,
                   "lexical": sum(g == "lexical" for g in group_of.values()),
                   "paraphrase": sum(g == "paraphrase" for g in group_of.values())},
        "hybrid_minus_other_95ci": {
            other: paired_bootstrap(rows["all"]["hybrid"], rows["all"][other])
            for other in ("text", "semantic")},
        "classification": category_check,
        "per_query": per_query,
    }
    if args.fusion:
        result["fusion_study"] = fusion_study(queries, ranked)

    RESULTS.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    plot(summary, args.out.with_suffix(".png"),
         f"Search relevance: {len(queries)} queries over {len(packages)} packages")
    print_table(summary, result)
    return 0


def _cpus() -> int:
    import os  # noqa: PLC0415

    return len(os.sched_getaffinity(0))


def print_table(summary: dict[str, dict[str, dict[str, float]]], result: dict[str, Any]) -> None:
    """The summary as a plain table."""
    print(f"{'group':<11} {'mode':<9} {'n':>4} {'recall@10':>10} {'MRR':>7} {'nDCG@10':>8}")
    for group, modes in summary.items():
        for mode, s in modes.items():
            if not s.get("queries"):
                continue
            print(f"{group:<11} {mode:<9} {s['queries']:>4} {s['recall@10']:>10.3f} "
                  f"{s['mrr']:>7.3f} {s['ndcg@10']:>8.3f}")
    print(f"hybrid beats both: {result['hybrid_beats_both']}")
    for other, ci in result["hybrid_minus_other_95ci"].items():
        print(f"hybrid - {other} [mean, 95% CI]: {ci}")
    c = result["classification"]
    if c.get("packages"):
        print(f"classification of uncategorised packages: {c['correct']}/{c['packages']} "
              f"= {c['accuracy']:.3f} against {c['labels']} categories")
    study = result.get("fusion_study")
    if study:
        for family, facts in study["families"].items():
            print(f"fusion study: {family}: best on tune half {facts['best_on_tune_half']}")
        for half in ("tune", "held_out"):
            for name, s in study[half].items():
                if isinstance(s, dict):
                    print(f"  {half:<9} {name:<26} recall@10 {s['recall@10']:.3f} "
                          f"MRR {s['mrr']:.3f} nDCG@10 {s['ndcg@10']:.3f}")
        for name, ci in study["held_out_minus_semantic_95ci"].items():
            print(f"  held-out {name} - semantic [mean, 95% CI]: {ci}")


if __name__ == "__main__":
    sys.exit(main())
