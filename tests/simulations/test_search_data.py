"""Invariants of the search evaluation's committed data set (simulations/search_data/)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dre.protocol.docformat import (
    MAX_CATEGORY_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_KEYWORD_CHARS,
    MAX_KEYWORDS,
    check_name,
)
from dre.protocol.search import check_category

DATA = Path(__file__).resolve().parents[2] / "simulations" / "search_data"


@pytest.fixture(scope="module")
def packages() -> list[dict[str, object]]:
    with (DATA / "packages.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def queries() -> list[dict[str, object]]:
    return list(json.loads((DATA / "queries.json").read_text(encoding="utf-8"))["queries"])


def _words(text: str) -> str:
    """Text as space-separated lower-case words, padded, for whole-word containment."""
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def test_enough_packages_with_unique_valid_names(packages: list[dict[str, object]]) -> None:
    assert len(packages) >= 2000
    names = [str(p["name"]) for p in packages]
    assert len(set(names)) == len(names), "duplicate package names"
    assert names == sorted(names)
    for name in names:
        check_name(name)


def test_fields_fit_the_document_format(packages: list[dict[str, object]]) -> None:
    for p in packages:
        description = str(p["description"])
        assert description and "\n" not in description, p["name"]
        assert len(description) <= MAX_DESCRIPTION_CHARS, p["name"]
        keywords = p["keywords"]
        assert isinstance(keywords, list) and len(keywords) <= MAX_KEYWORDS, p["name"]
        assert len(set(keywords)) == len(keywords), p["name"]
        assert all(0 < len(k) <= MAX_KEYWORD_CHARS for k in keywords), p["name"]
        category = str(p["category"])
        if category:
            assert len(category) <= MAX_CATEGORY_CHARS
            check_category(category)
        else:
            check_category(str(p["withheld_category"]))
        assert p["source"] in ("debian", "pypi")
        # Some Python distributions ship no long description; every Debian one has one.
        assert p["source"] == "pypi" or str(p["prose"]).strip(), p["name"]


def test_a_share_of_packages_has_no_category(packages: list[dict[str, object]]) -> None:
    empty = sum(1 for p in packages if not p["category"])
    assert 0.2 * len(packages) < empty < 0.5 * len(packages)


def test_enough_queries_with_unique_ids(queries: list[dict[str, object]]) -> None:
    assert len(queries) >= 100
    ids = [q["id"] for q in queries]
    assert len(set(ids)) == len(ids)
    texts = [str(q["text"]).lower() for q in queries]
    assert len(set(texts)) == len(texts), "duplicate query text"


def test_every_label_exists_and_is_not_in_the_query(
    packages: list[dict[str, object]], queries: list[dict[str, object]]
) -> None:
    names = {str(p["name"]) for p in packages}
    for q in queries:
        relevant = q["relevant"]
        assert isinstance(relevant, list) and 1 <= len(relevant) <= 3, q["id"]
        assert len(set(relevant)) == len(relevant), q["id"]
        text = str(q["text"])
        assert text.strip() and len(text) <= 200, q["id"]
        for name in relevant:
            assert name in names, f"{q['id']}: {name} is not in the package set"
            # A query naming its answer would test nothing but name matching.
            assert _words(name) not in _words(text), f"{q['id']} contains its answer {name}"
