"""Search: the shapes of a query and its results, shared by the engine, the HTTP API, the CLI and
the federated search protocol (``specs/search.md``).

Pure data and pure functions only: the index lives in :mod:`dre.storage.search_index`, the
engine that runs it (with the embedding worker) in :mod:`dre.node.search_engine`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping, Sequence, Set
from typing import TypeVar

import msgspec
from markdown_it import MarkdownIt

from .errors import ValidationError

__all__ = [
    "BUILTIN_CATEGORIES",
    "HYBRID_K",
    "HYBRID_VECTOR_WEIGHT",
    "MAX_CATEGORY_CHARS",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_TERMS",
    "MODES",
    "PERIODS",
    "RECENT_TYPES",
    "RRF_K",
    "SORTS",
    "SearchHit",
    "SearchQuery",
    "SearchResult",
    "check_category",
    "doc_prose",
    "fts_expression",
    "fts_match_expression",
    "pack_chunks",
    "query_terms",
    "reciprocal_rank_fusion",
    "split_sentences",
    "validate_query",
]

#: Longest query text accepted (characters); longer is a ValidationError, not a truncation.
MAX_QUERY_CHARS = 1000
#: Most hits one query returns.
MAX_LIMIT = 100
#: Deepest page: ``offset`` beyond this is refused (ranking deeper costs more and helps nobody).
MAX_OFFSET = 1000
#: Terms of one query that reach the full-text index; the rest are dropped (an OR of hundreds
#: of terms only costs time).
MAX_QUERY_TERMS = 32
#: Same bound as a category in front matter (``specs/doc-format.md``).
MAX_CATEGORY_CHARS = 64
#: The constant of reciprocal-rank fusion (Cormack et al. 2009): large enough that the first
#: few ranks of one list do not drown agreement between lists.
RRF_K = 60
#: Hybrid search's fusion of its two rankings (chosen on the tuning half of the labelled
#: queries of ``simulations/eval_search.py``, reported on the held-out half): the vector
#: ranking's candidates, re-ranked by weighted RRF with the text ranking, a small ``k`` (the
#: first ranks count most) and the vector ranking weighted up. Plain RRF (k 60, equal weights)
#: lost to vectors alone there, because BM25's paraphrase misses pushed good candidates down.
HYBRID_K = 1
HYBRID_VECTOR_WEIGHT = 1.5
#: How hits are ordered: by relevance, or by one of the counted facts.
SORTS = ("relevance", "downloads", "updated", "created")
#: Which rankings a query uses; ``hybrid`` fuses text and vector rankings.
MODES = ("hybrid", "text", "semantic")
#: Windows of ``trending`` (seconds).
PERIODS = {"day": 86_400, "week": 7 * 86_400, "month": 30 * 86_400}
#: What ``recent`` lists.
RECENT_TYPES = ("created", "updated")


class SearchQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One search, as the CLI, the API and a federated peer send it."""

    text: str
    category: str | None = None
    sort: str = "relevance"
    mode: str = "hybrid"
    limit: int = 20
    offset: int = 0


class SearchHit(msgspec.Struct, frozen=True):
    """One package in a result: its latest version's facts and why it ranked where it did."""

    name: str
    version: str
    #: The manifest's CID (the de-duplication key across peers).
    manifest: str
    description: str
    category: str
    keywords: list[str]
    score: float
    #: Trust score of the version (0 … 1), from independent attestations.
    trust: float
    #: Whether this node regenerated the package from its document byte for byte.
    reproducible: bool
    downloads: int
    #: Unix seconds: first version published, latest version published.
    created: int
    updated: int
    #: The peer that answered (federated search); None for this node's own index.
    source: str | None = None


class SearchResult(msgspec.Struct):
    """The answer to a :class:`SearchQuery`."""

    query: SearchQuery
    hits: list[SearchHit]
    #: Number of matching packages (before ``limit``/``offset``).
    total: int
    #: The mode that ran: ``hybrid`` without the model falls back to ``text``.
    mode: str
    #: A line for the user when the answer is partial (e.g. "semantic search unavailable: …").
    notice: str | None = None


#: Categories every node knows, with the words an embedding classifies packages against. The
#: categories publishers write in front matter are added to these (labelled by their own name).
BUILTIN_CATEGORIES: dict[str, str] = {
    "cli": "command-line tools, terminal applications, shell utilities",
    "configuration": "configuration files, dotfiles, settings, environment setup",
    "cryptography": "encryption, hashing, signatures, keys, certificates",
    "data": "data processing, dataframes, CSV, ETL, analytics",
    "database": "databases, SQL, ORMs, key-value stores, queries",
    "design": "design assets, icons, fonts, colours, logos, brand",
    "developer-tools": "developer tooling, build tools, linters, code generation, debugging",
    "documentation": "documentation, docs generators, markdown, manuals",
    "filesystem": "files, directories, paths, file system access, archives",
    "graphics": "images, drawing, plotting, rendering, visualization",
    "logging": "logging, tracing, monitoring, metrics",
    "machine-learning": "machine learning, neural networks, models, training, inference",
    "networking": "networking, HTTP clients, sockets, protocols, peer-to-peer",
    "security": "security, authentication, authorization, passwords, sandboxing",
    "serialization": "serialization, JSON, YAML, binary formats, encoding, parsing formats",
    "concurrency": "concurrency, async, threads, scheduling, queues",
    "testing": "testing, test frameworks, mocking, fixtures, assertions",
    "text": "strings, text processing, formatting, padding, slugs, unicode",
    "time": "dates, times, time zones, calendars, durations",
    "utilities": "general utilities, helpers, retry, caching, small reusable functions",
    "web": "web frameworks, HTML, servers, routing, templates, browsers",
    "science": "scientific computing, mathematics, statistics, numerical methods",
    "audio-video": "audio, video, media, sound, codecs, streaming",
}

_CATEGORY_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

# Words so common in English questions that an OR over them matches nearly every document:
# dropped unless the query has nothing else (they still reach the embedding unchanged).
_STOPWORDS = frozenset((
    "a", "an", "and", "any", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from",
    "how", "i", "in", "into", "is", "it", "me", "my", "need", "of", "on", "or", "some", "that",
    "the", "this", "to", "want", "what", "when", "where", "which", "with", "without", "you",
    "your",
))

# Runs of letters and digits: exactly what SQLite's unicode61 tokenizer keeps as token
# characters (it splits on everything else, underscore included). Nothing of FTS5's syntax
# (quotes, `*`, `^`, `:`, `-`, `+`, parentheses) can survive in such a run.
_TERM_RE = re.compile(r"[^\W_]+")


def check_category(category: str) -> str:
    """``category`` if it is a well-formed category name, else ValidationError."""
    if len(category) > MAX_CATEGORY_CHARS or not _CATEGORY_RE.fullmatch(category):
        raise ValidationError(
            f"invalid category {category[:70]!r}: use lowercase letters, digits and single "
            f"hyphens, at most {MAX_CATEGORY_CHARS} characters"
        )
    return category


def _check_length(text: str) -> None:
    if len(text) > MAX_QUERY_CHARS:
        raise ValidationError(f"query is longer than {MAX_QUERY_CHARS} characters")


def validate_query(query: SearchQuery) -> SearchQuery:
    """``query`` unchanged if every field is in bounds; a one-line ValidationError otherwise."""
    _check_length(query.text)
    if query.sort not in SORTS:
        raise ValidationError(f"sort must be one of {', '.join(SORTS)}, not {query.sort[:40]!r}")
    if query.mode not in MODES:
        raise ValidationError(f"mode must be one of {', '.join(MODES)}, not {query.mode[:40]!r}")
    if not 1 <= query.limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be from 1 to {MAX_LIMIT}")
    if not 0 <= query.offset <= MAX_OFFSET:
        raise ValidationError(f"offset must be from 0 to {MAX_OFFSET}")
    if query.category is not None:
        check_category(query.category)
    return query


def query_terms(text: str) -> list[str]:
    """The searchable words of ``text``: lowercased, de-duplicated, common words dropped unless
    nothing else is left, at most :data:`MAX_QUERY_TERMS`."""
    _check_length(text)
    words: list[str] = []
    seen: set[str] = set()
    for match in _TERM_RE.finditer(text):
        word = match.group().casefold()
        if word not in seen:
            seen.add(word)
            words.append(word)
    content = [w for w in words if w not in _STOPWORDS]
    return (content or words)[:MAX_QUERY_TERMS]


def fts_match_expression(text: str) -> str | None:
    """A safe FTS5 ``MATCH`` expression for any user text; None if it has no searchable words.

    Every term is quoted (a quoted string is a phrase of plain tokens to FTS5, whatever it
    holds, and our terms hold only letters and digits) and the terms are ORed, so a query
    matches documents with any of its words and BM25 ranks those with more (and rarer) ones
    first. The last term is also a prefix, for people who search while typing. A query longer
    than :data:`MAX_QUERY_CHARS` is a ValidationError.
    """
    terms = query_terms(text)
    return fts_expression(terms, prefix_last=True) if terms else None


def fts_expression(terms: Sequence[str], *, prefix_last: bool = False,
                   operator: str = "OR") -> str:
    """The FTS5 expression joining ``terms`` (from :func:`query_terms`: letters and digits
    only) with ``operator`` (``OR`` or ``AND``), each quoted; the last one also as a prefix if
    ``prefix_last`` (and it has two characters or more)."""
    if operator not in ("OR", "AND"):
        raise ValueError(f"operator must be OR or AND, not {operator!r}")
    quoted = []
    for i, term in enumerate(terms):
        if not _TERM_RE.fullmatch(term):
            raise ValueError(f"not a query term: {term!r}")
        # A one-letter prefix would expand to a large part of the vocabulary.
        star = "*" if prefix_last and i == len(terms) - 1 and len(term) >= 2 else ""
        quoted.append(f'"{term}"{star}')
    return f" {operator} ".join(quoted)


K = TypeVar("K", bound=Hashable)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]],
    *,
    k: int = RRF_K,
    weights: Sequence[float] | None = None,
    only: Set[K] | None = None,
    tie_break: Mapping[K, tuple[float, ...]] | None = None,
) -> list[tuple[K, float]]:
    """Fuse rankings (best first) into one: each item scores ``Σ w / (k + rank)`` over the
    rankings it appears in (rank from 1; ``w`` from ``weights``, 1 by default). With ``only``,
    items outside that set are left out. Equal scores are ordered by ``tie_break`` (higher
    first; e.g. ``(trust, reproducible)``), then by first appearance, so the order is
    deterministic. An item repeated within one ranking counts at its best rank only."""
    if weights is not None and len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    scores: dict[K, float] = {}
    first_seen: dict[K, int] = {}
    for number, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[number]
        seen: set[K] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen or (only is not None and item not in only):
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            first_seen.setdefault(item, len(first_seen))
    breaks = tie_break or {}

    def order(item: K) -> tuple[float, tuple[float, ...], int]:
        return (-scores[item], tuple(-v for v in breaks.get(item, ())), first_seen[item])

    return [(item, scores[item]) for item in sorted(scores, key=order)]


# -- documents ----------------------------------------------------------------------------------

_MARKDOWN = MarkdownIt("commonmark").disable(["inline", "text_join"])
_FRONT_MATTER_RE = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)


def doc_prose(doc: str) -> str:
    """The prose of a package document: its Markdown without the front matter and without any
    code (fenced or indented blocks), the part that says what the package does."""
    text = doc.replace("\r\n", "\n").replace("\r", "\n")
    body = _FRONT_MATTER_RE.sub("", text, count=1)
    lines = body.split("\n")
    keep = [True] * len(lines)
    for token in _MARKDOWN.parse(body):
        if token.type in ("fence", "code_block") and token.map is not None:
            for i in range(token.map[0], min(token.map[1], len(lines))):
                keep[i] = False
    prose = "\n".join(line for line, k in zip(lines, keep, strict=True) if k)
    return re.sub(r"\n{3,}", "\n\n", prose).strip()


_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def split_sentences(text: str) -> list[str]:
    """``text`` cut after sentence ends and at blank lines; pieces stripped, empty ones gone."""
    return [piece.strip() for piece in _SENTENCE_END_RE.split(text) if piece.strip()]


def pack_chunks(
    pieces: Sequence[str], count_tokens: Callable[[str], int], max_tokens: int
) -> list[str]:
    """Greedily join consecutive ``pieces`` (sentences) into chunks of at most ``max_tokens``
    tokens as ``count_tokens`` counts them; a piece longer than that on its own is cut on word
    boundaries (and a single overlong word is left whole: the model truncates it). Counts are
    taken as additive over whitespace-separated words, which holds for WordPiece tokenizers
    (they split on whitespace before anything else)."""
    chunks: list[str] = []
    current: list[str] = []
    current_tokens = 0
    for piece in pieces:
        n = count_tokens(piece)
        if n > max_tokens:
            if current:
                chunks.append(" ".join(current))
                current, current_tokens = [], 0
            chunks.extend(_cut_words(piece, count_tokens, max_tokens))
            continue
        if current and current_tokens + n > max_tokens:
            chunks.append(" ".join(current))
            current, current_tokens = [], 0
        current.append(piece)
        current_tokens += n
    if current:
        chunks.append(" ".join(current))
    return chunks


def _cut_words(piece: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    current_tokens = 0
    for word in piece.split():
        n = count_tokens(word)
        if current and current_tokens + n > max_tokens:
            out.append(" ".join(current))
            current, current_tokens = [], 0
        current.append(word)
        current_tokens += n
    if current:
        out.append(" ".join(current))
    return out
