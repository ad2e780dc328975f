"""The SQLite search index: catch-up from the registry's log, FTS5 ranking, events, safety."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dre.protocol.errors import ValidationError
from dre.protocol.keys import PublisherKey
from dre.protocol.search import fts_match_expression
from dre.storage import search_index
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo
from dre.storage.search_index import PackageEntry, SearchIndex, catch_up
from hypothesis import given, settings
from hypothesis import strategies as st

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
ALICE = PublisherKey.from_seed(bytes(range(32)))
NOW = 1_790_000_000


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    Repo.init(tmp_path / "home")
    with Repo.open(tmp_path / "home") as opened:
        yield opened


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SearchIndex]:
    with SearchIndex(tmp_path / "search.sqlite") as opened:
        yield opened


def publish(repo: Repo, *names: str, now: int = NOW) -> None:
    registry = LocalRegistry(repo)
    if any(n.startswith("acme") for n in names) and registry.scope("@acme") is None:
        registry.create_scope("@acme", ALICE, now=now)
    for i, name in enumerate(names):
        registry.publish((EXAMPLES / name).read_bytes(), ALICE, now=now + i)


def search(index: SearchIndex, text: str, category: str | None = None) -> list[str]:
    expression = fts_match_expression(text)
    assert expression is not None
    ids = index.text_ranking(expression, category=category, limit=20)
    found = index.packages(ids)
    return [found[i].name for i in ids]


def test_catch_up_indexes_latest_version_with_prose(repo: Repo, index: SearchIndex) -> None:
    publish(repo, "acme-retry-1.0.0.md", "left-pad.md", "slugify-lite.md")
    assert catch_up(index, repo) == 4  # the scope creation and three publishes
    assert index.count() == 3
    assert search(index, "exponential backoff")[0] == "@acme/retry"
    # "lock step" appears only in the retry document's prose, not in its front matter.
    assert search(index, "lock step") == ["@acme/retry"]
    # Code is not prose: an identifier only found inside a fence does not match.
    assert search(index, "functools") == []
    assert catch_up(index, repo) == 0  # nothing new in the log
    publish(repo, "acme-retry-1.1.0.md", now=NOW + 100)
    assert catch_up(index, repo) == 1
    retry = index.package_by_name("@acme/retry")
    assert retry is not None and retry.version == "1.1.0"
    assert retry.created == NOW and retry.updated == NOW + 100
    assert retry.category == "utilities" and "backoff" in retry.keywords


def test_name_outweighs_prose(index: SearchIndex) -> None:
    index.upsert([
        PackageEntry("yaml-tools", "1.0.0", "m1", description="Helpers.",
                     prose="Nothing about the other format."),
        PackageEntry("helpers", "1.0.0", "m2", description="Helpers.",
                     prose="yaml yaml yaml is mentioned here a few times."),
    ])
    assert search(index, "yaml") == ["yaml-tools", "helpers"]


def test_older_version_moves_created_only_and_same_entry_is_idempotent(
        index: SearchIndex) -> None:
    new = PackageEntry("p", "2.0.0", "m2", description="new text", time=200)
    old = PackageEntry("p", "1.0.0", "m1", description="old text", time=100)
    assert index.upsert([new]) == 1
    assert index.upsert([new]) == 0
    index.upsert([old])
    package = index.package_by_name("p")
    assert package is not None
    assert (package.version, package.description) == ("2.0.0", "new text")
    assert (package.created, package.updated) == (100, 200)
    assert search(index, "new") == ["p"]
    assert fts_match_expression("old") is not None
    assert search(index, "old") == []


def test_category_filter_and_categories(index: SearchIndex) -> None:
    index.upsert([
        PackageEntry("a", "1.0.0", "m", description="parse json", category="serialization"),
        PackageEntry("b", "1.0.0", "m", description="parse json fast", category="data"),
        PackageEntry("c", "1.0.0", "m", description="other", category="data"),
    ])
    assert search(index, "json", category="data") == ["b"]
    assert index.categories() == [("data", 2), ("serialization", 1)]


def test_downloads_trending_and_sorting(index: SearchIndex) -> None:
    index.upsert([PackageEntry(n, "1.0.0", "m", description="x", time=t)
                  for n, t in (("a", 10), ("b", 20), ("c", 30))])
    for when in (100, 200, 300):
        index.record_download("b", "1.0.0", when)
    index.record_download("a", "1.0.0", 300)
    assert index.downloads_total() == 4
    assert index.downloads_since(200) == 3
    ids = index.ids_of(["a", "b", "c"])
    assert sorted(index.trending(250, limit=10)) == sorted([(ids["a"], 1), (ids["b"], 1)])
    assert index.trending(0, limit=10)[0] == (ids["b"], 3)
    assert index.browse(category=None, sort="downloads", limit=10)[:2] == [ids["b"], ids["a"]]
    assert index.browse(category=None, sort="created", limit=10)[0] == ids["c"]
    assert index.recent("created", limit=1) == [ids["c"]]


def test_two_connections_one_writer_each(tmp_path: Path) -> None:
    # Two "processes" (two index objects) writing at once: both land, nothing is lost.
    path = tmp_path / "search.sqlite"
    first, second = SearchIndex(path), SearchIndex(path)
    errors: list[BaseException] = []

    def writer(index: SearchIndex, prefix: str) -> None:
        try:
            for i in range(50):
                index.upsert([PackageEntry(f"{prefix}{i}", "1.0.0", "m", description="d")])
                index.record_download(f"{prefix}{i}", "1.0.0", i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(ix, p))
               for ix, p in ((first, "a"), (second, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert first.count() == 100 and second.downloads_total() == 100
    first.close()
    second.close()


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_valid_fts5_expression(text: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(a, tokenize = 'porter unicode61 "
                 "remove_diacritics 2', prefix = '2 3')")
    conn.execute("INSERT INTO t VALUES ('near and or not the quick brown fox')")
    expression = fts_match_expression(text)
    if expression is None:
        return
    conn.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t)", (expression,)).fetchall()


@pytest.mark.parametrize("text", [
    '"unbalanced', "NEAR(a b, 2)", "a AND b OR NOT c", "col:value", "^start", "-minus",
    "pre*", "(paren", "a + b", "' OR 1=1 --", "\x00\x01", "🙂 emoji",
])
def test_fts5_syntax_is_searched_as_words(index: SearchIndex, text: str) -> None:
    index.upsert([PackageEntry("near-value", "1.0.0", "m", description="start a paren pre")])
    expression = fts_match_expression(text)
    if expression is not None:
        index.text_ranking(expression, category=None, limit=10)
        index.text_count(expression, category=None)


def test_too_long_query_is_refused() -> None:
    with pytest.raises(ValidationError, match="longer than 1000 characters"):
        fts_match_expression("x" * 1001)


def test_common_terms_are_pruned_from_ranking_not_from_the_count(
        index: SearchIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_index, "PRUNE_ABOVE", 5)
    index.upsert([PackageEntry(f"p{i}", "1.0.0", "m", description="a library for things")
                  for i in range(20)])
    index.upsert([PackageEntry("zebra", "1.0.0", "m", description="library of zebra stripes")])
    ids, total = index.text_search(["library", "zebra"], category=None, limit=10)
    assert total == 21
    assert index.packages(ids)[ids[0]].name == "zebra" and len(ids) == 1
    # Only common terms: the packages holding all of them are ranked.
    ids, total = index.text_search(["library", "things"], category=None, limit=30)
    assert total == 21 and len(ids) == 20
    ids, total = index.text_search(["library", "things"], category=None, limit=30, count=False)
    assert total == 0 and len(ids) == 20


def test_unreadable_file_is_set_aside_and_rebuilt(tmp_path: Path, repo: Repo) -> None:
    path = tmp_path / "search.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with SearchIndex(path) as index:
        publish(repo, "left-pad.md")
        catch_up(index, repo)
        assert search(index, "pad") == ["left-pad"]
    assert len(list(tmp_path.glob("search.sqlite.unreadable-*"))) == 1


def test_connections_of_finished_threads_are_closed(index: SearchIndex) -> None:
    for _ in range(20):
        worker = threading.Thread(target=index.count)
        worker.start()
        worker.join()
    index.count()
    assert len(index._all) <= 2  # this thread's, and at most the last worker's
