"""Pure search helpers: the FTS5 sanitizer, query validation, rank fusion, prose and chunks."""

from __future__ import annotations

import re

import pytest
from dre.protocol.errors import ValidationError
from dre.protocol.search import (
    HYBRID_K,
    HYBRID_VECTOR_WEIGHT,
    MAX_LIMIT,
    MAX_QUERY_CHARS,
    SearchQuery,
    doc_prose,
    fts_match_expression,
    pack_chunks,
    query_terms,
    reciprocal_rank_fusion,
    split_sentences,
    validate_query,
)
from hypothesis import given
from hypothesis import strategies as st

_SAFE = re.compile(r'"[^\W_]+"( OR "[^\W_]+")*\*?')


@given(st.text(max_size=MAX_QUERY_CHARS))
def test_expression_is_only_quoted_words(text: str) -> None:
    expression = fts_match_expression(text)
    if expression is None:
        assert query_terms(text) == []
    else:
        assert _SAFE.fullmatch(expression), expression


def test_syntax_becomes_words() -> None:
    assert fts_match_expression('NEAR("a b", 2) AND -c*') == '"near" OR "b" OR "2" OR "c"'
    assert fts_match_expression("retry with backoff") == '"retry" OR "backoff"*'
    assert fts_match_expression("the") == '"the"*'  # only stopwords: kept
    assert fts_match_expression("*** ( ) :") is None
    assert fts_match_expression("") is None


def test_huge_query_refused_at_the_bound() -> None:
    assert fts_match_expression("a" * MAX_QUERY_CHARS) is not None
    with pytest.raises(ValidationError, match=f"longer than {MAX_QUERY_CHARS} characters"):
        fts_match_expression("a" * (MAX_QUERY_CHARS + 1))


@pytest.mark.parametrize(("changes", "message"), [
    ({"sort": "random"}, "sort must be one of"),
    ({"mode": "magic"}, "mode must be one of"),
    ({"limit": 0}, "limit must be"),
    ({"limit": MAX_LIMIT + 1}, "limit must be"),
    ({"offset": -1}, "offset must be"),
    ({"category": "Bad Category"}, "invalid category"),
    ({"text": "x" * 1001}, "longer than"),
])
def test_validate_query_refuses(changes: dict[str, object], message: str) -> None:
    query = SearchQuery(**{"text": "retry", **changes})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=message):
        validate_query(query)


def test_validate_query_accepts_defaults() -> None:
    query = SearchQuery(text="", category="text")
    assert validate_query(query) is query


rankings = st.lists(st.lists(st.integers(0, 30), max_size=20, unique=True), max_size=4)


@given(rankings)
def test_rrf_covers_every_item_in_descending_score(lists: list[list[int]]) -> None:
    fused = reciprocal_rank_fusion(lists)
    assert {i for i, _ in fused} == {i for ranking in lists for i in ranking}
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)


@given(rankings)
def test_rrf_ignores_the_order_of_rankings(lists: list[list[int]]) -> None:
    forward = dict(reciprocal_rank_fusion(lists))
    backward = dict(reciprocal_rank_fusion(lists[::-1]))
    assert forward.keys() == backward.keys()
    for item, score in forward.items():
        assert score == pytest.approx(backward[item])


@given(st.lists(st.integers(0, 30), min_size=1, max_size=20, unique=True),
       st.integers(1, 4))
def test_rrf_item_first_everywhere_wins(ranking: list[int], copies: int) -> None:
    shuffled = [ranking[0], *reversed(ranking[1:])]
    fused = reciprocal_rank_fusion([ranking] * copies + [shuffled])
    assert fused[0][0] == ranking[0]


def test_rrf_agreement_beats_one_list_and_ties_break_on_trust() -> None:
    fused = reciprocal_rank_fusion([["a", "b"], ["c", "b"]])
    assert fused[0][0] == "b"  # second in both beats first in one
    tie = reciprocal_rank_fusion([["x"], ["y"]], tie_break={"x": (0.2, 0.0), "y": (0.9, 1.0)})
    assert [i for i, _ in tie] == ["y", "x"]
    same_trust = reciprocal_rank_fusion([["x"], ["y"]], tie_break={"x": (0.5, 1.0),
                                                                  "y": (0.5, 0.0)})
    assert [i for i, _ in same_trust] == ["x", "y"]


def test_doc_prose_drops_front_matter_and_code() -> None:
    doc = ("---\nname: x\nversion: 1.0.0\nlicense: MIT\n---\n\n# Title\n\nSome prose here.\n\n"
           "```python file=a.py\nsecret_identifier = 1\n```\n\n    indented_code()\n\n"
           "More words.\n")
    prose = doc_prose(doc)
    assert "Some prose here." in prose and "More words." in prose and "# Title" in prose
    assert "secret_identifier" not in prose and "indented_code" not in prose
    assert "license" not in prose


def test_chunks_respect_the_token_bound() -> None:
    def count(text: str) -> int:
        return len(text.split())

    text = "One two three. Four five six seven! " * 20 + "\n\n" + "word " * 50
    chunks = pack_chunks(split_sentences(text), count, 10)
    assert all(count(c) <= 10 for c in chunks)
    assert " ".join(chunks).split() == text.split()


@given(st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=8), min_size=2, max_size=2),
       st.floats(0.1, 5.0), st.integers(1, 100))
def test_weighted_and_gated_fusion(lists: list[list[str]], weight: float, k: int) -> None:
    text, vectors = lists
    gate = set(vectors)
    fused = dict(reciprocal_rank_fusion([text, vectors], k=k, weights=(1.0, weight),
                                        only=gate))
    # Gated: nothing outside the vector ranking's candidates; each score is its weighted sum.
    assert set(fused) == gate
    for item, score in fused.items():
        expected = weight / (k + vectors.index(item) + 1)
        if item in text:
            expected += 1.0 / (k + text.index(item) + 1)
        assert score == pytest.approx(expected)


def test_hybrid_fusion_favours_vector_agreement() -> None:
    # The tuned constants: a vector-ranking first beats a text-ranking first, and agreement
    # of both beats either alone.
    fused = [item for item, _ in reciprocal_rank_fusion(
        [["t", "both"], ["v", "both"]], k=HYBRID_K, weights=(1.0, HYBRID_VECTOR_WEIGHT))]
    assert fused[:2] == ["both", "v"] and fused[-1] == "t"
    with pytest.raises(ValueError, match="one weight per ranking"):
        reciprocal_rank_fusion([["a"]], weights=(1.0, 2.0))
