"""Search: the shapes of a query and its results, shared by the engine, the HTTP API, the CLI and
the federated search protocol (``specs/search.md``).

Pure data and pure functions only: the index lives in :mod:`dre.storage.search_index`, the
engine that runs it (with the embedding worker) in :mod:`dre.node.search_engine`.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "MAX_LIMIT",
    "MAX_QUERY_CHARS",
    "MODES",
    "PERIODS",
    "RECENT_TYPES",
    "SORTS",
    "SearchHit",
    "SearchQuery",
    "SearchResult",
]

#: Longest query text accepted (characters); longer is a ValidationError, not a truncation.
MAX_QUERY_CHARS = 1000
#: Most hits one query returns.
MAX_LIMIT = 100
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
