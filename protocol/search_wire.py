"""Federated search (``/dre/search/1.0.0``): wire messages and the merge of peers' answers.

Normative spec: ``specs/search.md``; vectors in ``specs/vectors/search.json``. Sans-IO and pure:
the trio side (streams, deadlines, penalties) is :mod:`dre.node.search_protocol`.

One stream carries one exchange: the requester writes one framed :class:`SearchRequest` and
half-closes; the responder writes one framed :class:`SearchAnswer` (or :class:`SearchRefused`) and
closes. A frame is ``varint(len) + DAG-CBOR map`` as in sync; the whole stream must be exactly one
frame. Everything a peer sends is bounded and checked before use: :func:`decode_request` and
:func:`decode_response` raise :class:`RemoteProtocolError` (one line) for anything malformed,
oversized, out of bounds or not answering the request.

:func:`merge_federated` fuses this node's hits with the peers' answers: de-duplicated by manifest
CID, ranked by reciprocal-rank fusion (a peer's scores mean nothing next to another's, its ranks
do), then trust.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Final

import msgspec

from . import dagcbor, varint
from .cid import DAG_CBOR, SHA2_256, parse_cid
from .errors import IntegrityError, LocalProtocolError, RemoteProtocolError, ValidationError
from .records import (
    MAX_DESCRIPTION_CHARS,
    MAX_KEYWORD_CHARS,
    MAX_KEYWORDS,
    MAX_TIME,
    MAX_VERSION_CHARS,
    Name,
)
from .search import (
    MAX_CATEGORY_CHARS,
    MAX_LIMIT,
    MAX_QUERY_CHARS,
    MODES,
    RRF_K,
    SORTS,
    SearchHit,
    SearchQuery,
    SearchResult,
    reciprocal_rank_fusion,
    validate_query,
)

__all__ = [
    "DEFAULT_DEADLINE",
    "MAX_BUDGET_MS",
    "MAX_HITS_PER_ANSWER",
    "MAX_NOTICE_CHARS",
    "MAX_REASON_CHARS",
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "MAX_TOTAL",
    "PROTOCOL_ID",
    "REQUEST_TIMEOUT",
    "VERSION",
    "FederatedResult",
    "PeerFailure",
    "SearchAnswer",
    "SearchRefused",
    "SearchRequest",
    "WireHit",
    "WireQuery",
    "answer_for",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "fuse_hits",
    "hits_from_answer",
    "merge_federated",
    "query_of",
    "request_for",
    "widened_query",
]

PROTOCOL_ID: Final = "/dre/search/1.0.0"
VERSION: Final = 1

#: Largest request body (after the varint length): a query of 1000 four-byte characters fits.
MAX_REQUEST_BYTES: Final = 8192
#: Largest answer body: 100 hits with every text field at its limit in 4-byte UTF-8 fit.
MAX_RESPONSE_BYTES: Final = 1_048_576
#: Hits in one answer (and the most a request may ask for).
MAX_HITS_PER_ANSWER: Final = MAX_LIMIT
MAX_REASON_CHARS: Final = 256
MAX_NOTICE_CHARS: Final = 256
#: Largest ``total`` an answer may claim (exact in JSON and JavaScript).
MAX_TOTAL: Final = 2**53 - 1
#: The longest time budget a request may carry, in milliseconds.
MAX_BUDGET_MS: Final = 10_000
#: Seconds a federated search waits for peers unless the caller says otherwise.
DEFAULT_DEADLINE: Final = 2.0
#: Seconds a responder waits for the whole request after the stream opens.
REQUEST_TIMEOUT: Final = 5.0

_NETWORK_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,62}$"
_CATEGORY_PATTERN: Final = r"^(?:[a-z0-9]+(?:-[a-z0-9]+)*)?$"
_SORT_PATTERN: Final = "^(?:" + "|".join(re.escape(s) for s in SORTS) + ")$"
_MODE_PATTERN: Final = "^(?:" + "|".join(re.escape(m) for m in MODES) + ")$"
# A manifest CID printed as CIDv1 base32 ("b" + 58 more characters for dag-cbor sha2-256).
_MANIFEST_CHARS: Final = 59

_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOTAL)]
_Time = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME)]


# --------------------------------------------------------------------------------------------------
# Messages.


class WireQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The query as a peer receives it: :class:`SearchQuery` without ``offset`` (the requester
    pages through the merged list; each peer only ranks its own top ``limit``)."""

    text: Annotated[str, msgspec.Meta(max_length=MAX_QUERY_CHARS)]
    category: Annotated[str, msgspec.Meta(max_length=MAX_CATEGORY_CHARS,
                                          pattern=_CATEGORY_PATTERN)] | None
    sort: Annotated[str, msgspec.Meta(pattern=_SORT_PATTERN)]
    mode: Annotated[str, msgspec.Meta(pattern=_MODE_PATTERN)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_HITS_PER_ANSWER)]


class SearchRequest(
    msgspec.Struct, frozen=True, tag="search", tag_field="type", forbid_unknown_fields=True
):
    """The requester's only message."""

    version: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    network: Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=_NETWORK_PATTERN)]
    #: Milliseconds the requester will wait for the answer from when it sent this; a responder
    #: that cannot answer within it need not start.
    budget_ms: Annotated[int, msgspec.Meta(ge=1, le=MAX_BUDGET_MS)]
    query: WireQuery


class WireHit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One hit on the wire: :class:`SearchHit` without ``source`` (the requester sets it to the
    peer that answered; a peer cannot speak for another)."""

    name: Name
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_VERSION_CHARS)]
    manifest: Annotated[str, msgspec.Meta(min_length=_MANIFEST_CHARS, max_length=_MANIFEST_CHARS)]
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION_CHARS)]
    category: Annotated[str, msgspec.Meta(max_length=MAX_CATEGORY_CHARS)]
    keywords: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEYWORD_CHARS)]],
        msgspec.Meta(max_length=MAX_KEYWORDS),
    ]
    score: float
    trust: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    reproducible: bool
    downloads: _Count
    created: _Time
    updated: _Time


class SearchAnswer(
    msgspec.Struct, frozen=True, tag="hits", tag_field="type", forbid_unknown_fields=True
):
    """The responder's hits, best first in its own ranking."""

    hits: Annotated[list[WireHit], msgspec.Meta(max_length=MAX_HITS_PER_ANSWER)]
    #: Packages matching on the responder (before ``limit``).
    total: _Count
    #: The mode the responder ran (``hybrid`` without a model falls back to ``text``).
    mode: Annotated[str, msgspec.Meta(pattern=_MODE_PATTERN)]
    notice: Annotated[str, msgspec.Meta(max_length=MAX_NOTICE_CHARS)] | None


class SearchRefused(
    msgspec.Struct, frozen=True, tag="refused", tag_field="type", forbid_unknown_fields=True
):
    """A polite no (another network or version, busy, no search engine, a query it rejects)."""

    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)]


Response = SearchAnswer | SearchRefused


class PeerFailure(msgspec.Struct, frozen=True):
    """A peer that answered nothing usable, and why."""

    peer: str
    reason: str


class FederatedResult(msgspec.Struct):
    """The answer to a federated search: merged hits and what became of each peer."""

    query: SearchQuery
    hits: list[SearchHit]
    #: Distinct packages among this node's and the answering peers' hits (before limit/offset).
    total: int
    #: The mode this node's own search ran.
    mode: str
    #: Peers whose answer was merged, ascending.
    answered: list[str]
    #: Peers with no answer by the deadline (not waited for), ascending.
    timed_out: list[str]
    #: Peers that refused, could not be reached or answered wrongly (penalized), by peer.
    failed: list[PeerFailure]
    notice: str | None = None


# --------------------------------------------------------------------------------------------------
# Encoding and decoding.


def _frame(message: SearchRequest | Response, limit: int) -> bytes:
    body = dagcbor.encode(msgspec.to_builtins(message))
    if len(body) > limit:
        raise LocalProtocolError(f"search message of {len(body)} bytes exceeds {limit}")
    return varint.encode(len(body)) + body


def _unframe(data: bytes, limit: int, what: str) -> object:
    """The DAG-CBOR value of the single frame that ``data`` must be."""
    try:
        parsed = varint.try_decode(data)
    except IntegrityError as exc:
        raise RemoteProtocolError(f"malformed search {what}: {exc}") from None
    if parsed is None:
        raise RemoteProtocolError(f"search {what} ended inside its length prefix")
    length, start = parsed
    if not 1 <= length <= limit:
        raise RemoteProtocolError(f"search {what} of {length} bytes is outside 1..{limit}")
    if len(data) - start != length:
        raise RemoteProtocolError(
            f"search {what} frame says {length} bytes but {len(data) - start} follow"
        )
    try:
        return dagcbor.decode(data[start:], max_size=limit)
    except (IntegrityError, ValidationError) as exc:
        raise RemoteProtocolError(f"malformed search {what}: {exc}") from None


def request_for(query: SearchQuery, *, network: str, budget_ms: int) -> SearchRequest:
    """The request that asks a peer for ``query``: its top ``offset + limit`` hits (capped at
    :data:`MAX_HITS_PER_ANSWER`), since the requester pages through the merged list itself."""
    validate_query(query)
    if not 1 <= budget_ms <= MAX_BUDGET_MS:
        raise ValidationError(f"a search budget must be 1..{MAX_BUDGET_MS} ms, not {budget_ms}")
    wire = WireQuery(
        text=query.text,
        category=query.category,
        sort=query.sort,
        mode=query.mode,
        limit=min(query.limit + query.offset, MAX_HITS_PER_ANSWER),
    )
    return SearchRequest(version=VERSION, network=network, budget_ms=budget_ms, query=wire)


def widened_query(query: SearchQuery) -> SearchQuery:
    """The query this node runs on its own index for a federated ``query``: the top
    ``offset + limit`` (capped at :data:`MAX_HITS_PER_ANSWER`) from offset 0, like a peer."""
    validate_query(query)
    return msgspec.structs.replace(
        query, limit=min(query.limit + query.offset, MAX_HITS_PER_ANSWER), offset=0)


def encode_request(request: SearchRequest) -> bytes:
    """The framed request: ``varint(len) + DAG-CBOR``."""
    return _frame(request, MAX_REQUEST_BYTES)


def decode_request(data: bytes) -> SearchRequest:
    """Parse everything a requester sent (one frame, nothing after it).

    :class:`RemoteProtocolError` for anything malformed or out of bounds. The version and
    network are the caller's to compare: they are a polite refusal, not an error.
    """
    if len(data) > MAX_REQUEST_BYTES + varint.encoded_length(MAX_REQUEST_BYTES):
        raise RemoteProtocolError(f"search request longer than {MAX_REQUEST_BYTES} bytes")
    value = _unframe(data, MAX_REQUEST_BYTES, "request")
    try:
        return msgspec.convert(value, SearchRequest, strict=True)
    except msgspec.ValidationError as exc:
        raise RemoteProtocolError(f"invalid search request: {exc}") from None


def query_of(request: SearchRequest) -> SearchQuery:
    """The :class:`SearchQuery` a responder runs for ``request`` (offset 0)."""
    q = request.query
    return SearchQuery(text=q.text, category=q.category, sort=q.sort, mode=q.mode,
                       limit=q.limit, offset=0)


def answer_for(result: SearchResult, limit: int) -> SearchAnswer:
    """The answer carrying ``result``'s best ``limit`` hits, cut further (from the tail) until
    its frame fits :data:`MAX_RESPONSE_BYTES`. Hits this node could not put on the wire (a
    manifest that is not a dag-cbor CIDv1, say) are left out rather than sent malformed."""
    hits: list[WireHit] = []
    seen: set[str] = set()
    for hit in result.hits:
        if len(hits) >= min(limit, MAX_HITS_PER_ANSWER):
            break
        if hit.manifest in seen:
            continue
        try:
            wire = _to_wire(hit)
        except (ValidationError, msgspec.ValidationError):
            continue
        seen.add(hit.manifest)
        hits.append(wire)
    notice = result.notice[:MAX_NOTICE_CHARS] if result.notice is not None else None
    mode = result.mode if result.mode in MODES else "text"
    answer = SearchAnswer(hits=hits, total=min(max(result.total, len(hits)), MAX_TOTAL),
                          mode=mode, notice=notice)
    while len(dagcbor.encode(msgspec.to_builtins(answer))) > MAX_RESPONSE_BYTES:
        # Only reachable with pathological text; halving keeps it a few encodes at most.
        answer = msgspec.structs.replace(answer, hits=answer.hits[: len(answer.hits) // 2])
    return answer


def _to_wire(hit: SearchHit) -> WireHit:
    if not math.isfinite(hit.score):
        raise ValidationError(f"hit {hit.name}: score {hit.score} has no DAG-CBOR form")
    fields = msgspec.structs.asdict(hit)
    del fields["source"]
    wire = msgspec.convert(fields, WireHit, strict=True)
    problem = _manifest_problem(wire.manifest)
    if problem is not None:
        raise ValidationError(f"hit {hit.name}: manifest {problem}")
    return wire


def encode_response(response: SearchAnswer | SearchRefused) -> bytes:
    """The framed answer or refusal."""
    if isinstance(response, SearchRefused) and len(response.reason) > MAX_REASON_CHARS:
        response = SearchRefused(response.reason[: MAX_REASON_CHARS - 1] + "…")
    return _frame(response, MAX_RESPONSE_BYTES)


def _manifest_problem(text: str) -> str | None:
    """Why ``text`` is not a manifest CID as the wire carries it, or None if it is."""
    try:
        cid = parse_cid(text)
    except ValidationError as exc:
        return str(exc)
    if cid.version != 1 or cid.codec.code != DAG_CBOR or cid.hashfun.code != SHA2_256:
        return f"{text} is not a dag-cbor sha2-256 CIDv1"
    if str(cid) != text:
        # One spelling per CID: the merge de-duplicates on this text.
        return f"{text} is not in canonical base32 form"
    return None


def decode_response(data: bytes, request: SearchRequest) -> SearchAnswer | SearchRefused:
    """Parse everything a responder sent (one frame, nothing after it) for ``request``.

    :class:`RemoteProtocolError` for anything malformed or out of bounds, more hits than
    ``request`` asked for, a manifest that is not a canonical dag-cbor CIDv1, a manifest twice,
    or a ``total`` smaller than the hits sent.
    """
    if len(data) > MAX_RESPONSE_BYTES + varint.encoded_length(MAX_RESPONSE_BYTES):
        raise RemoteProtocolError(f"search answer longer than {MAX_RESPONSE_BYTES} bytes")
    value = _unframe(data, MAX_RESPONSE_BYTES, "answer")
    try:
        response: Response = msgspec.convert(value, Response, strict=True)
    except msgspec.ValidationError as exc:
        raise RemoteProtocolError(f"invalid search answer: {exc}") from None
    if isinstance(response, SearchRefused):
        return response
    if len(response.hits) > request.query.limit:
        raise RemoteProtocolError(
            f"search answer has {len(response.hits)} hits; {request.query.limit} were asked for"
        )
    if response.total < len(response.hits):
        raise RemoteProtocolError("search answer's total is smaller than its hits")
    seen: set[str] = set()
    for hit in response.hits:
        problem = _manifest_problem(hit.manifest)
        if problem is not None:
            raise RemoteProtocolError(f"search answer: hit manifest {problem}")
        if hit.manifest in seen:
            raise RemoteProtocolError(f"search answer lists manifest {hit.manifest} twice")
        seen.add(hit.manifest)
    return response


def hits_from_answer(answer: SearchAnswer, peer: str) -> list[SearchHit]:
    """The answer's hits as :class:`SearchHit`, in its order, each with ``source=peer``."""
    return [
        SearchHit(
            name=h.name, version=h.version, manifest=h.manifest, description=h.description,
            category=h.category, keywords=list(h.keywords), score=h.score, trust=h.trust,
            reproducible=h.reproducible, downloads=h.downloads, created=h.created,
            updated=h.updated, source=peer,
        )
        for h in answer.hits
    ]


# --------------------------------------------------------------------------------------------------
# Merge.


def fuse_hits(
    local: Sequence[SearchHit],
    answers: Mapping[str, Sequence[SearchHit]],
    *,
    sort: str = "relevance",
) -> list[SearchHit]:
    """Every distinct package among ``local`` and ``answers`` (peer -> its hits, best first), in
    the merged order of ``specs/search.md`` §5; ``score`` is the fused RRF score.

    - One hit per manifest CID: this node's own if it has one (its facts are first-hand), else
      the hit of the peer that ranked it best (ties: the smallest peer ID); ``downloads`` is the
      sum over every list that has it (each node counts the downloads it served).
    - Fused score: ``Σ 1 / (RRF_K + rank)`` over the lists holding it (rank from 1, this node's
      list first, then the peers' in ascending peer ID order).
    - Order: for ``relevance``, fused score, then trust, then reproducible; for ``downloads``,
      ``updated`` and ``created``, that fact first, then the same. Last, name, version and
      manifest, so the order never depends on the order of ``answers``.
    """
    if sort not in SORTS:
        raise ValidationError(f"sort must be one of {', '.join(SORTS)}, not {sort[:40]!r}")
    lists: list[tuple[str, Sequence[SearchHit]]] = [("", local)]
    lists += [(peer, answers[peer]) for peer in sorted(answers)]
    chosen: dict[str, tuple[tuple[int, int, str], SearchHit]] = {}
    downloads: dict[str, int] = {}
    rankings: list[list[str]] = []
    for position, (peer, hits) in enumerate(lists):
        ranking: list[str] = []
        in_ranking: set[str] = set()
        for hit in hits:
            key = hit.manifest
            if key in in_ranking:  # a list naming a manifest twice counts its best rank only
                continue
            in_ranking.add(key)
            ranking.append(key)
            rank = len(ranking)
            downloads[key] = min(downloads.get(key, 0) + hit.downloads, MAX_TOTAL)
            # Local (position 0) beats any peer; among peers, the best rank, then peer ID.
            preference = (0 if position == 0 else 1, rank, peer)
            if key not in chosen or preference < chosen[key][0]:
                chosen[key] = (preference, hit)
        rankings.append(ranking)
    fused = dict(reciprocal_rank_fusion(rankings, k=RRF_K))
    merged = [
        msgspec.structs.replace(hit, score=fused[key], downloads=downloads[key])
        for key, (_, hit) in chosen.items()
    ]

    def order(hit: SearchHit) -> tuple[object, ...]:
        fact = {"relevance": 0, "downloads": hit.downloads, "updated": hit.updated,
                "created": hit.created}[sort]
        return (-fact, -hit.score, -hit.trust, not hit.reproducible, hit.name, hit.version,
                hit.manifest)

    merged.sort(key=order)
    return merged


def merge_federated(
    local: Sequence[SearchHit],
    answers: Mapping[str, Sequence[SearchHit]],
    limit: int,
    *,
    sort: str = "relevance",
    offset: int = 0,
) -> list[SearchHit]:
    """This node's hits and the peers' answers as one page: :func:`fuse_hits`, then ``offset``
    and ``limit``. Hits from ``answers[peer]`` should carry ``source=peer`` (see
    :func:`hits_from_answer`); the merge keeps whatever ``source`` the chosen hit has."""
    if limit < 0 or offset < 0:
        raise ValidationError("limit and offset must not be negative")
    return fuse_hits(local, answers, sort=sort)[offset : offset + limit]
