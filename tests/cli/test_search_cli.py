"""`dre search|similar|recommend|trending|recent` through the real executable: hostile queries,
text-only without a node, semantic with one."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Runner, start_node, stop_node

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
NO_NODE = "dre: semantic search needs a running node (`dre node start`); text results only\n"
NO_WORDS = "dre: the query has no words to search for\n"


@pytest.fixture
def published(dre: Runner) -> Runner:
    dre("scope", "create", "@acme")
    for name in ("acme-retry-1.0.0.md", "acme-cli.md", "left-pad.md", "slugify-lite.md",
                 "dotfiles-kit.md"):
        dre("publish", str(EXAMPLES / name))
    return dre


def test_text_search_without_a_node(published: Runner) -> None:
    result = published("search", "exponential backoff")
    assert result.err == NO_NODE
    lines = result.text.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "CATEGORY", "TRUST", "DESCRIPTION"]
    assert lines[1].startswith("@acme/retry ")
    doc = published("search", "string", "--json", "--mode", "text").json()
    assert doc["mode"] == "text" and doc["notice"] is None
    assert {h["name"] for h in doc["hits"]} == {"left-pad", "slugify-lite"}
    assert doc["total"] == 2
    # What was published after the last search is found too (the index catches up).
    published("publish", str(EXAMPLES / "acme-brand-assets.md"))
    assert published("search", "favicon", "--json").json()["hits"][0]["name"] == \
        "@acme/brand-assets"


HOSTILE = [
    '"', '"unbalanced quote', "NEAR(pad string, 1)", "NEAR/2", "pad*", "*", "-pad", "--",
    "pad AND", "OR OR OR", "NOT", "name:pad", "^pad", "(pad", "pad)", "{a b}", "' OR 1=1; --",
    "\\", "🙂", "pad\tstring\nleft", "a" * 1000, "x:y:z ^ * - + \" ( )",
]


def test_fts5_syntax_never_reaches_sqlite(published: Runner) -> None:
    for query in HOSTILE:
        result = published("search", "--json", "--", query)
        assert result.code == 0, (query, result.err)
        assert result.err in (NO_NODE, NO_WORDS), query
        doc = json.loads(result.out)
        assert doc["query"]["text"] == query and isinstance(doc["hits"], list)
        if result.err == NO_WORDS:
            assert doc["hits"] == [] and doc["total"] == 0
    assert published("search", "--", "* ( ) :").err == NO_WORDS


def test_fts5_syntax_still_finds_the_words(published: Runner) -> None:
    doc = published("search", "--json", "--mode", "text", "--", 'NEAR("left" pad*) -x').json()
    assert doc["hits"][0]["name"] == "left-pad"


def test_empty_query_lists_packages(published: Runner) -> None:
    doc = published("search", "", "--json", "--sort", "created").json()
    assert doc["total"] == 5 and len(doc["hits"]) == 5


@pytest.mark.parametrize(("args", "message"), [
    (("x" * 1001,), "dre: error: query is longer than 1000 characters\n"),
    (("pad", "--category", "Not A Category"), "dre: error: invalid category"),
    (("pad", "--limit", "0"), "dre: error: Invalid value for '--limit'"),
    (("pad", "--sort", "best"), "dre: error: Invalid value for '--sort'"),
])
def test_bad_queries_are_one_line(published: Runner, args: tuple[str, ...],
                                  message: str) -> None:
    result = published("search", *args, check=False)
    assert result.code != 0 and result.out == b""
    assert result.err.startswith(message) and result.err.count("\n") == 1
    assert "Traceback" not in result.err and "sqlite" not in result.err.lower()


def test_similar_recommend_trending_recent_without_a_node(published: Runner,
                                                          tmp_path: Path) -> None:
    similar = published("similar", "left-pad", "--json")
    assert "comparing words only" in similar.err
    assert similar.json()["hits"][0]["name"] == "slugify-lite"
    missing = published("similar", "nope", check=False)
    assert missing.code == 1 and "no package named 'nope'" in missing.err
    recommended = published("recommend", "--based-on", "@acme/cli", "--json").json()
    assert recommended["hits"][0]["name"] == "@acme/retry"
    published("install", "@acme/cli@0.9.0-rc.2", "-o", str(tmp_path / "deps"))
    trending = published("trending", "--period", "day", "--json").json()
    assert {h["name"]: h["score"] for h in trending["hits"]} == {"@acme/cli": 1.0,
                                                                 "@acme/retry": 1.0}
    table = published("trending").text.splitlines()
    assert table[0].split()[:5] == ["NAME", "VERSION", "CATEGORY", "TRUST", "DOWNLOADS"]
    recent = published("recent", "--type", "updated", "--json").json()
    assert len(recent["hits"]) == 5
    bad = published("trending", "--period", "year", check=False)
    assert bad.code == 2 and "Invalid value for '--period'" in bad.err


@pytest.fixture
def node(home: Path, published: Runner) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_node(home, "--listen", "/ip4/127.0.0.1/tcp/0")
    try:
        yield proc
    finally:
        stop_node(proc)


@pytest.mark.slow
def test_semantic_search_through_the_running_node(node: subprocess.Popen[bytes],
                                                  published: Runner) -> None:
    query = "turn a headline into something usable in a web address"
    deadline = time.monotonic() + 60
    while True:
        result = published("search", query, "--mode", "semantic", "--json")
        doc = result.json()
        if doc["mode"] == "semantic" and doc["notice"] is None:
            break
        # Until the model is loaded and the packages embedded, the node says so.
        assert "semantic" in result.err
        assert time.monotonic() < deadline, "the node never loaded its model"
        time.sleep(0.5)
    assert result.err == ""
    assert doc["hits"][0]["name"] == "slugify-lite"
    similar = published("similar", "left-pad", "--json")
    assert similar.err == "" and similar.json()["hits"][0]["name"] == "slugify-lite"
    odd = published("search", "--", 'NEAR("a" -b*) ^:(', check=False)
    assert odd.code == 0 and "Traceback" not in odd.err
    huge = published("search", "x" * 1001, check=False)
    assert huge.err == "dre: error: query is longer than 1000 characters\n"
