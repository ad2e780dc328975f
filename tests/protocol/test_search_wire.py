"""Federated search wire format and merge (/dre/search/1.0.0): vectors, bounds, fuzzing.

Run as a script to regenerate ``specs/vectors/search.json`` (only when ``specs/search.md``
changes).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from dre.protocol import dagcbor, search_wire, varint
from dre.protocol.cid import DAG_CBOR, cid_for
from dre.protocol.errors import LocalProtocolError, RemoteProtocolError, ValidationError
from dre.protocol.keys import PublisherKey
from dre.protocol.search import MAX_QUERY_CHARS, MODES, SORTS, SearchHit, SearchQuery, SearchResult
from dre.protocol.search_wire import (
    MAX_HITS_PER_ANSWER,
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    SearchAnswer,
    SearchRefused,
    SearchRequest,
    WireHit,
    WireQuery,
    answer_for,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    fuse_hits,
    hits_from_answer,
    merge_federated,
    query_of,
    request_for,
    widened_query,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
VECTOR_PATH = ROOT / "specs" / "vectors" / "search.json"
SPEC_PATH = ROOT / "specs" / "search.md"

PEER_B = PublisherKey.from_seed(b"\x0b" * 32).peer_id
PEER_C = PublisherKey.from_seed(b"\x0c" * 32).peer_id


def manifest(n: int) -> str:
    """A stand-in manifest CID (search never opens the manifest)."""
    return str(cid_for(dagcbor.encode({"manifest": n}), DAG_CBOR))


def hit(name: str, n: int, *, score: float = 1.0, trust: float = 0.0, downloads: int = 0,
        updated: int = 1_790_000_000, source: str | None = None,
        reproducible: bool = False) -> SearchHit:
    return SearchHit(
        name=name, version="1.0.0", manifest=manifest(n), description=f"{name} does things",
        category="text", keywords=["demo"], score=score, trust=trust,
        reproducible=reproducible, downloads=downloads, created=1_780_000_000,
        updated=updated, source=source,
    )


def body_of(frame: bytes) -> bytes:
    length, start = varint.decode(frame)
    assert len(frame) - start == length
    return frame[start:]


def frame_of(value: Any) -> bytes:
    body = dagcbor.encode(value)
    return varint.encode(len(body)) + body


EXAMPLE_QUERY = SearchQuery(text="pad a string", category="text", limit=5, offset=5)


def example_request() -> SearchRequest:
    return request_for(EXAMPLE_QUERY, network="main", budget_ms=2000)


def example_answer() -> SearchAnswer:
    result = SearchResult(
        query=query_of(example_request()),
        hits=[hit("left-pad", 1, score=7.25, trust=0.5, downloads=3, reproducible=True),
              hit("pad-utils", 2, score=3.5)],
        total=2, mode="text", notice="semantic search unavailable: model not installed",
    )
    return answer_for(result, example_request().query.limit)


# --------------------------------------------------------------------------------------------------
# Round trips and the request.


def test_request_asks_for_offset_plus_limit_without_offset() -> None:
    request = example_request()
    assert request.query == WireQuery(text="pad a string", category="text", sort="relevance",
                                      mode="hybrid", limit=10)
    assert decode_request(encode_request(request)) == request
    assert query_of(request) == SearchQuery(text="pad a string", category="text", limit=10)
    assert widened_query(EXAMPLE_QUERY) == query_of(request)
    # Capped: a peer never answers more than MAX_HITS_PER_ANSWER.
    deep = SearchQuery(text="x", limit=100, offset=900)
    assert request_for(deep, network="main", budget_ms=1).query.limit == MAX_HITS_PER_ANSWER


def test_bad_local_input_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="limit"):
        request_for(SearchQuery(text="x", limit=0), network="main", budget_ms=100)
    with pytest.raises(ValidationError, match="budget"):
        request_for(SearchQuery(text="x"), network="main", budget_ms=0)
    with pytest.raises(ValidationError, match="longer"):
        request_for(SearchQuery(text="x" * (MAX_QUERY_CHARS + 1)), network="main", budget_ms=9)
    with pytest.raises(ValidationError, match="sort"):
        fuse_hits([], {}, sort="name")
    with pytest.raises(ValidationError):
        merge_federated([], {}, -1)


def test_answer_round_trip_and_source() -> None:
    request, answer = example_request(), example_answer()
    decoded = decode_response(encode_response(answer), request)
    assert decoded == answer
    assert isinstance(decoded, SearchAnswer)
    hits = hits_from_answer(decoded, PEER_B)
    assert [h.source for h in hits] == [PEER_B, PEER_B]
    assert [h.name for h in hits] == ["left-pad", "pad-utils"]
    refused = SearchRefused("this node is on network 'other'")
    assert decode_response(encode_response(refused), request) == refused


def test_answer_for_drops_what_cannot_go_on_the_wire() -> None:
    good = hit("left-pad", 1)
    not_a_manifest = msgspec.structs.replace(hit("bad", 2), manifest="not-a-cid")
    raw_cid = msgspec.structs.replace(hit("raw", 3), manifest=str(cid_for(b"x", 0x55)))
    nan = msgspec.structs.replace(hit("nan", 4), score=math.nan)
    twice = hit("left-pad", 1)
    result = SearchResult(query=SearchQuery(text="x"), hits=[not_a_manifest, good, raw_cid, nan,
                                                              twice, hit("ok", 5)],
                          total=1, mode="hybrid")
    answer = answer_for(result, 10)
    assert [h.name for h in answer.hits] == ["left-pad", "ok"]
    assert answer.total == 2  # never below the hits sent
    assert [h.name for h in answer_for(result, 1).hits] == ["left-pad"]
    # A long refusal reason is cut to the limit, not refused.
    long = encode_response(SearchRefused("x" * 1000))
    decoded = decode_response(long, example_request())
    assert isinstance(decoded, SearchRefused) and len(decoded.reason) == 256


def test_answer_is_cut_to_fit_the_size_limit() -> None:
    # 100 hits with every text field at its limit in 4-byte characters fit: the limit is sized so.
    big = [
        SearchHit(name=f"p{i:03d}" + "a" * 210, version="1." + "9" * 126, manifest=manifest(i),
                  description="\U0001f600" * 512, category="c" * 64,
                  keywords=["\U0001f600" * 50] * 20, score=1.0, trust=1.0, reproducible=True,
                  downloads=2**53 - 1, created=2**53 - 1, updated=2**53 - 1)
        for i in range(100)
    ]
    answer = answer_for(SearchResult(query=SearchQuery(text="x"), hits=big, total=100,
                                     mode="hybrid", notice="n" * 256), 100)
    frame = encode_response(answer)
    assert len(answer.hits) == 100 and len(body_of(frame)) <= MAX_RESPONSE_BYTES
    request = request_for(SearchQuery(text="x", limit=100), network="main", budget_ms=10)
    assert decode_response(frame, request) == answer
    with pytest.raises(LocalProtocolError):
        encode_request(msgspec.structs.replace(request, network="n" * 9000))


# --------------------------------------------------------------------------------------------------
# Malformed input: one RemoteProtocolError each.


def _answer_value() -> dict[str, Any]:
    value: dict[str, Any] = msgspec.to_builtins(example_answer())
    return value


def _bad_answers() -> dict[str, tuple[bytes, str]]:
    """Frames a responder must never send, with the error each must raise."""
    out: dict[str, tuple[bytes, str]] = {}

    def case(name: str, mutate: Any, error: str) -> None:
        value = _answer_value()
        mutate(value)
        out[name] = (frame_of(value), error)

    case("more_hits_than_asked", lambda v: v["hits"].extend(
        {**v["hits"][1], "manifest": manifest(10 + i)} for i in range(9)), "were asked for")
    case("manifest_twice", lambda v: v["hits"][1].update(manifest=v["hits"][0]["manifest"]),
         "twice")
    case("manifest_not_canonical", lambda v: v["hits"][0].update(
        manifest="B" + v["hits"][0]["manifest"][1:].upper()), "canonical")
    case("manifest_raw_codec", lambda v: v["hits"][0].update(
        manifest=str(cid_for(b"x" * 40, 0x55)).ljust(59, "a")[:59]), "manifest")
    case("source_claimed", lambda v: v["hits"][0].update(source=PEER_C), "unknown field")
    case("trust_above_one", lambda v: v["hits"][0].update(trust=1.5), "trust")
    case("score_as_text", lambda v: v["hits"][0].update(score="9"), "score")
    case("negative_downloads", lambda v: v["hits"][0].update(downloads=-1), "downloads")
    case("bad_name", lambda v: v["hits"][0].update(name="Left Pad"), "name")
    case("total_below_hits", lambda v: v.update(total=1), "total")
    case("unknown_mode", lambda v: v.update(mode="psychic"), "mode")
    case("unknown_type", lambda v: v.update(type="hints"), "type")
    case("long_notice", lambda v: v.update(notice="n" * 257), "notice")
    out["trailing_bytes"] = (encode_response(example_answer()) + b"\x00", "follow")
    out["truncated"] = (encode_response(example_answer())[:-1], "follow")
    out["empty_body"] = (b"\x00", "outside")
    out["non_minimal_varint"] = (b"\x81\x00", "minimal")
    out["not_cbor"] = (b"\x03\xff\xff\xff", "malformed")
    out["not_a_map"] = (frame_of([1, 2, 3]), "invalid")
    out["non_canonical_cbor"] = (b"\x03\xa0\xa0\xa0", "malformed")  # three maps: trailing data
    return out


@pytest.mark.parametrize("name", sorted(_bad_answers()))
def test_malformed_answers_are_remote_protocol_errors(name: str) -> None:
    frame, error = _bad_answers()[name]
    with pytest.raises(RemoteProtocolError, match=error):
        decode_response(frame, example_request())


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(RemoteProtocolError, match="longer than"):
        decode_response(b"\x00" * (MAX_RESPONSE_BYTES + 10), example_request())
    with pytest.raises(RemoteProtocolError, match="longer than"):
        decode_request(b"\x00" * (MAX_REQUEST_BYTES + 10))
    # A length prefix claiming more than the limit fails on the prefix alone.
    with pytest.raises(RemoteProtocolError, match="outside"):
        decode_request(varint.encode(MAX_REQUEST_BYTES + 1) + b"\xa0")


def _bad_requests() -> dict[str, tuple[bytes, str]]:
    good: dict[str, Any] = msgspec.to_builtins(example_request())
    out: dict[str, tuple[bytes, str]] = {}

    def case(name: str, mutate: Any, error: str) -> None:
        value = json.loads(json.dumps(good))
        mutate(value)
        out[name] = (frame_of(value), error)

    case("limit_zero", lambda v: v["query"].update(limit=0), "limit")
    case("limit_too_big", lambda v: v["query"].update(limit=101), "limit")
    case("query_too_long", lambda v: v["query"].update(text="x" * 1001), "text")
    case("bad_sort", lambda v: v["query"].update(sort="name"), "sort")
    case("bad_mode", lambda v: v["query"].update(mode="magic"), "mode")
    case("bad_category", lambda v: v["query"].update(category="Not A Category"), "category")
    case("offset_sent", lambda v: v["query"].update(offset=5), "unknown field")
    case("budget_zero", lambda v: v.update(budget_ms=0), "budget_ms")
    case("budget_too_long", lambda v: v.update(budget_ms=10_001), "budget_ms")
    case("bad_network", lambda v: v.update(network="Main Net"), "network")
    case("missing_query", lambda v: v.pop("query"), "query")
    out["two_frames"] = (encode_request(example_request()) * 2, "follow")
    return out


@pytest.mark.parametrize("name", sorted(_bad_requests()))
def test_malformed_requests_are_remote_protocol_errors(name: str) -> None:
    frame, error = _bad_requests()[name]
    with pytest.raises(RemoteProtocolError, match=error):
        decode_request(frame)


# --------------------------------------------------------------------------------------------------
# Merge.


def test_merge_dedups_fuses_ranks_and_prefers_local_facts() -> None:
    local = [hit("left-pad", 1, score=12.0, trust=0.5, downloads=2),
             hit("pad-utils", 2, score=5.0)]
    # Peer scores are on other scales (B's are huge, C's tiny): only ranks count.
    b = [hit("string-pad", 3, score=900.0, source=PEER_B, downloads=7),
         hit("left-pad", 1, score=800.0, trust=1.0, source=PEER_B, downloads=5)]
    c = [hit("left-pad", 1, score=0.3, source=PEER_C),
         hit("pad-utils", 2, score=0.2, source=PEER_C),
         hit("string-pad", 3, score=0.1, source=PEER_C)]
    merged = merge_federated(local, {PEER_C: c, PEER_B: b}, 10)
    assert [h.name for h in merged] == ["left-pad", "string-pad", "pad-utils"]
    left = merged[0]
    # In all three lists: local's own facts (trust 0.5, source None), downloads summed.
    assert (left.source, left.trust, left.downloads) == (None, 0.5, 7)
    assert left.score == pytest.approx(1 / 61 + 1 / 62 + 1 / 61)
    # string-pad: only peers hold it; B ranked it first, so B's hit stands for it.
    assert merged[1].source == PEER_B and merged[1].score == pytest.approx(1 / 61 + 1 / 63)
    assert merged[2].score == pytest.approx(1 / 62 + 1 / 62)
    # Same answer whatever order the peers answered in; paging cuts the same list.
    assert merge_federated(local, {PEER_B: b, PEER_C: c}, 10) == merged
    assert merge_federated(local, {PEER_B: b, PEER_C: c}, 1, offset=1) == merged[1:2]


def test_merge_ties_break_on_trust_then_reproducible_then_name() -> None:
    b = [hit("zeta", 1, source=PEER_B, trust=0.2)]
    c = [hit("alpha", 2, source=PEER_C, trust=0.9)]
    d = [hit("beta", 3, source="12D3KooWD", trust=0.9, reproducible=True)]
    merged = merge_federated([], {PEER_B: b, PEER_C: c, "12D3KooWD": d}, 10)
    assert [h.name for h in merged] == ["beta", "alpha", "zeta"]


def test_merge_by_a_fact_sorts_on_the_fact() -> None:
    local = [hit("old", 1, updated=100), hit("mid", 2, updated=200)]
    b = [hit("new", 3, updated=300, source=PEER_B)]
    merged = merge_federated(local, {PEER_B: b}, 10, sort="updated")
    assert [h.name for h in merged] == ["new", "mid", "old"]
    local = [hit("few", 1, downloads=1)]
    b = [hit("many", 2, downloads=9, source=PEER_B), hit("few", 1, downloads=9, source=PEER_B)]
    merged = merge_federated(local, {PEER_B: b}, 10, sort="downloads")
    assert [(h.name, h.downloads) for h in merged] == [("few", 10), ("many", 9)]


_names = st.sampled_from(["a", "b", "c", "d", "e", "f"])


@st.composite
def _hit_lists(draw: st.DrawFn, source: str | None) -> list[SearchHit]:
    ids = draw(st.lists(st.integers(0, 12), max_size=8, unique=True))
    return [hit(draw(_names), i, score=draw(st.floats(-10, 10)),
                trust=draw(st.floats(0, 1)), source=source) for i in ids]


@given(_hit_lists(None), _hit_lists(PEER_B), _hit_lists(PEER_C), st.integers(0, 30),
       st.sampled_from(SORTS))
def test_merge_properties(local: list[SearchHit], b: list[SearchHit], c: list[SearchHit],
                          limit: int, sort: str) -> None:
    merged = merge_federated(local, {PEER_B: b, PEER_C: c}, limit, sort=sort)
    everything = fuse_hits(local, {PEER_C: c, PEER_B: b}, sort=sort)
    assert merged == everything[:limit]
    keys = [h.manifest for h in everything]
    assert len(keys) == len(set(keys)) == len({h.manifest for h in local + b + c})
    local_keys = {h.manifest for h in local}
    for merged_hit in everything:
        # A package this node has is shown with this node's facts.
        assert (merged_hit.source is None) == (merged_hit.manifest in local_keys)
    if sort == "relevance":
        scores = [h.score for h in everything]
        assert scores == sorted(scores, reverse=True)


# --------------------------------------------------------------------------------------------------
# Fuzzing: nothing a peer sends raises anything but RemoteProtocolError.


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_remote_errors(data: bytes) -> None:
    for decode in (decode_request, lambda d: decode_response(d, example_request())):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


_cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "hits", "total", "mode", "notice", "reason", "query", "name",
                         "manifest", "score", "version", "network", "budget_ms", "limit"]),
        inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_cbor_values, st.sampled_from(["hits", "refused", "search"]))
def test_structured_nonsense_only_raises_remote_errors(value: Any, tag: str) -> None:
    if isinstance(value, dict):
        value = {**value, "type": tag}
    data = frame_of(value)
    for decode in (decode_request, lambda d: decode_response(d, example_request())):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


_texts = st.text(max_size=MAX_QUERY_CHARS)
_categories = st.none() | st.from_regex(r"[a-z0-9]{1,10}(-[a-z0-9]{1,10}){0,2}", fullmatch=True)


@given(_texts, _categories, st.sampled_from(SORTS), st.sampled_from(MODES),
       st.integers(1, 100), st.integers(0, 1000), st.integers(1, 10_000))
def test_request_round_trip(text: str, category: str | None, sort: str, mode: str,
                            limit: int, offset: int, budget: int) -> None:
    query = SearchQuery(text=text, category=category, sort=sort, mode=mode, limit=limit,
                        offset=offset)
    request = request_for(query, network="net-1", budget_ms=budget)
    assert decode_request(encode_request(request)) == request


_wire_hits = st.builds(
    WireHit,
    name=st.from_regex(r"(@[a-z0-9]{1,8}/)?[a-z0-9]{1,12}", fullmatch=True),
    version=st.text(min_size=1, max_size=128),
    manifest=st.integers(0, 10**6).map(manifest),
    description=st.text(max_size=512),
    category=st.text(max_size=64),
    keywords=st.lists(st.text(min_size=1, max_size=50), max_size=20),
    score=st.floats(allow_nan=False, allow_infinity=False),
    trust=st.floats(0, 1),
    reproducible=st.booleans(),
    downloads=st.integers(0, 2**53 - 1),
    created=st.integers(0, 2**53 - 1),
    updated=st.integers(0, 2**53 - 1),
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_wire_hits, max_size=10, unique_by=lambda h: h.manifest),
       st.integers(0, 10**6), st.sampled_from(MODES), st.none() | st.text(max_size=256))
def test_answer_round_trip(hits: list[WireHit], extra: int, mode: str,
                           notice: str | None) -> None:
    answer = SearchAnswer(hits=hits, total=len(hits) + extra, mode=mode, notice=notice)
    request = request_for(SearchQuery(text="x", limit=10), network="main", budget_ms=5)
    assert decode_response(encode_response(answer), request) == answer


# --------------------------------------------------------------------------------------------------
# Spec: constants and vectors.


IN_CODE = {
    "max_request_bytes": search_wire.MAX_REQUEST_BYTES,
    "max_response_bytes": search_wire.MAX_RESPONSE_BYTES,
    "max_hits_per_answer": search_wire.MAX_HITS_PER_ANSWER,
    "max_query_chars": MAX_QUERY_CHARS,
    "max_reason_chars": search_wire.MAX_REASON_CHARS,
    "max_notice_chars": search_wire.MAX_NOTICE_CHARS,
    "max_total": search_wire.MAX_TOTAL,
    "max_budget_ms": search_wire.MAX_BUDGET_MS,
    "default_deadline_ms": int(search_wire.DEFAULT_DEADLINE * 1000),
    "request_timeout_ms": int(search_wire.REQUEST_TIMEOUT * 1000),
    "rrf_k": search_wire.RRF_K,
}


def _spec_section(title: str) -> str:
    text = SPEC_PATH.read_text(encoding="utf-8")
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_spec_constants_match_the_code() -> None:
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| ([0-9 ]+) \|", _spec_section("Constants"),
                      flags=re.M)
    assert {name: int(value.replace(" ", "")) for name, value in rows} == IN_CODE


def test_spec_names_the_protocol() -> None:
    text = SPEC_PATH.read_text(encoding="utf-8")
    assert search_wire.PROTOCOL_ID == "/dre/search/1.0.0"
    assert f"**`{search_wire.PROTOCOL_ID}`**" in text


def _merge_case() -> dict[str, Any]:
    local = [hit("left-pad", 1, score=12.0, trust=0.5, downloads=2),
             hit("pad-utils", 2, score=5.0)]
    answers = {
        PEER_B: [hit("string-pad", 3, score=900.0, source=PEER_B, downloads=7),
                 hit("left-pad", 1, score=800.0, trust=1.0, source=PEER_B, downloads=5)],
        PEER_C: [hit("left-pad", 1, score=0.3, source=PEER_C),
                 hit("pad-utils", 2, score=0.2, source=PEER_C),
                 hit("string-pad", 3, score=0.1, source=PEER_C),
                 hit("pad-end", 4, score=0.05, source=PEER_C, trust=1.0)],
    }
    return {"local": local, "answers": answers, "limit": 3, "offset": 0, "sort": "relevance"}


def _hit_json(h: SearchHit) -> dict[str, Any]:
    value: dict[str, Any] = msgspec.to_builtins(h)
    return value


def build_vectors() -> dict[str, Any]:
    request, answer = example_request(), example_answer()
    case = _merge_case()
    merged = merge_federated(case["local"], case["answers"], case["limit"], sort=case["sort"],
                             offset=case["offset"])
    return {
        "protocol": search_wire.PROTOCOL_ID,
        "note": "Frames are varint(length) + DAG-CBOR; dag_json shows each body for reading.",
        "messages": {
            name: {"dag_json": msgspec.to_builtins(message),
                   "frame_hex": (encode_request(message) if isinstance(message, SearchRequest)
                                 else encode_response(message)).hex()}
            for name, message in (("request", request), ("answer", answer),
                                  ("refused", SearchRefused("this node is on network 'main'")))
        },
        "invalid_answers": {
            name: {"frame_hex": frame.hex(), "error": error}
            for name, (frame, error) in sorted(_bad_answers().items())
        },
        "invalid_requests": {
            name: {"frame_hex": frame.hex(), "error": error}
            for name, (frame, error) in sorted(_bad_requests().items())
        },
        "merge": {
            "local": [_hit_json(h) for h in case["local"]],
            "answers": {p: [_hit_json(h) for h in hs] for p, hs in case["answers"].items()},
            "limit": case["limit"],
            "offset": case["offset"],
            "sort": case["sort"],
            "merged": [_hit_json(h) for h in merged],
        },
    }


def test_vectors_are_current() -> None:
    assert json.loads(VECTOR_PATH.read_text(encoding="utf-8")) == json.loads(
        json.dumps(build_vectors()))


def test_vector_messages_decode_and_encode() -> None:
    vectors = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))
    request = decode_request(bytes.fromhex(vectors["messages"]["request"]["frame_hex"]))
    assert request == example_request()
    assert msgspec.to_builtins(request) == vectors["messages"]["request"]["dag_json"]
    for name in ("answer", "refused"):
        entry = vectors["messages"][name]
        decoded = decode_response(bytes.fromhex(entry["frame_hex"]), request)
        assert msgspec.to_builtins(decoded) == entry["dag_json"]
        assert encode_response(decoded).hex() == entry["frame_hex"]
    for entry in vectors["invalid_answers"].values():
        with pytest.raises(RemoteProtocolError, match=entry["error"]):
            decode_response(bytes.fromhex(entry["frame_hex"]), request)
    for entry in vectors["invalid_requests"].values():
        with pytest.raises(RemoteProtocolError, match=entry["error"]):
            decode_request(bytes.fromhex(entry["frame_hex"]))


def test_vector_merge_replays() -> None:
    case = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))["merge"]
    local = msgspec.convert(case["local"], list[SearchHit])
    answers = msgspec.convert(case["answers"], dict[str, list[SearchHit]])
    merged = merge_federated(local, answers, case["limit"], sort=case["sort"],
                             offset=case["offset"])
    assert [_hit_json(h) for h in merged] == case["merged"]


if __name__ == "__main__":
    VECTOR_PATH.write_text(json.dumps(build_vectors(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {VECTOR_PATH}")
