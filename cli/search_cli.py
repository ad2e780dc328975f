"""Discovery commands: ``dre search``, ``dre similar``, ``dre recommend``, ``dre trending``,
``dre recent``.

With a node running for the home, the CLI asks it over HTTP (``/api/v1/search`` …): the node
holds the embedding model, so semantic and hybrid search work. Without one, the commands open
the home's search index themselves, bring it up to date with the registry's log, and search its
full text only, saying so in one line on stderr (loading the model would cost seconds and
hundreds of MB on every command).
"""

from __future__ import annotations

import sqlite3
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec
from dre.protocol.errors import DreError
from dre.protocol.search import (
    MAX_LIMIT,
    MODES,
    PERIODS,
    RECENT_TYPES,
    SORTS,
    SearchHit,
    SearchQuery,
    SearchResult,
    validate_query,
)
from dre.protocol.search_wire import FederatedResult

from .node_cli import api_call, local_node_running, node_target
from .output import emit_json, json_option

if TYPE_CHECKING:
    from dre.node.search_engine import SearchEngine

    from .main import Context

__all__ = ["record_downloads", "register"]

#: An answer of MAX_LIMIT hits is ~100 KB; the node is local, but a busy one may be slow.
_TIMEOUT = 30.0
_DESCRIPTION_CHARS = 60
_limit_option = click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=10,
                             show_default=True, help="Most results to show.")


def _ctx() -> Context:
    obj: Context = click.get_current_context().obj
    return obj


def _ask_node(path: str, params: list[tuple[str, str]]) -> Any:
    home, target = node_target()
    query = urllib.parse.urlencode(params)
    return api_call(home, target, f"/api/v1{path}{'?' + query if query else ''}",
                    timeout=_TIMEOUT)


def _with_local_engine(call: Any) -> Any:
    """Run ``call(engine)`` on this home's index (text only), caught up with the registry."""
    from dre.node.search_engine import SearchEngine  # noqa: PLC0415

    with _ctx().open_repo() as repo:
        engine: SearchEngine = SearchEngine.open(repo, semantic=False)
        try:
            engine.catch_up()
            return call(engine)
        except sqlite3.Error as exc:
            raise DreError(f"the search index failed: {exc}") from None
        finally:
            engine.close()


def _hits(doc: Any) -> list[SearchHit]:
    try:
        return msgspec.convert(doc.get("hits") if isinstance(doc, dict) else None,
                               list[SearchHit])
    except msgspec.ValidationError as exc:
        raise DreError(f"the node sent an answer this dre does not understand: {exc}") from None


_HEADER = SearchHit(name="NAME", version="VERSION", manifest="", description="",
                    category="CATEGORY", keywords=[], score=0, trust=0, reproducible=False,
                    downloads=0, created=0, updated=0)


def _print_table(hits: list[SearchHit], score: str | None = None) -> None:
    if not hits:
        click.echo("no packages found")
        return
    name_width = min(40, max(len(h.name) for h in [*hits, _HEADER]))
    version_width = min(16, max(len(h.version) for h in [*hits, _HEADER]))
    category_width = min(20, max(len(h.category) for h in [*hits, _HEADER]))
    extra = f"{score:>9} " if score else ""
    click.echo(f"{'NAME':<{name_width}} {'VERSION':<{version_width}} "
               f"{'CATEGORY':<{category_width}} TRUST {extra}DESCRIPTION")
    for h in hits:
        description = h.description.replace("\n", " ")
        if len(description) > _DESCRIPTION_CHARS:
            description = description[:_DESCRIPTION_CHARS - 1] + "…"
        mark = "R" if h.reproducible else " "
        value = ""
        if score == "DOWNLOADS":
            value = f"{int(h.score):>9} "
        elif score in ("CREATED", "UPDATED"):
            value = time.strftime("%Y-%m-%d ", time.gmtime(int(h.score))).rjust(10)
        click.echo(f"{h.name:<{name_width}} {h.version:<{version_width}} "
                   f"{h.category or '-':<{category_width}} {h.trust:.2f}{mark} {value}"
                   f"{description}")


def _local_notice(line: str) -> None:
    click.echo(f"dre: {line}", err=True)


# -- dre search ------------------------------------------------------------------------------------


@click.command("search")
@click.argument("query", required=False, default="")
@click.option("--category", default=None, help="Only packages of this category.")
@click.option("--sort", type=click.Choice(SORTS), default="relevance", show_default=True,
              help="Order of the results.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True,
              help="Full text, semantic (embeddings), or both fused.")
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many results.")
@_limit_option
@click.option("--federated", is_flag=True,
              help="Also ask the node's connected peers (needs a running node).")
@click.option("--deadline", type=click.FloatRange(0.1, 10.0), default=2.0, show_default=True,
              help="With --federated: seconds to wait for peers; late ones are reported.")
@json_option
def search(query: str, category: str | None, sort: str, mode: str, offset: int, limit: int,
           federated: bool, deadline: float, as_json: bool) -> None:
    """Search packages by what they do (QUERY in plain words; empty lists packages)."""
    request = validate_query(SearchQuery(text=query, category=category or None, sort=sort,
                                         mode=mode, limit=limit, offset=offset))
    if federated:
        _federated_search(request, deadline, as_json)
        return
    if local_node_running():
        params = [("q", request.text), ("sort", sort), ("mode", mode),
                  ("limit", str(limit)), ("offset", str(offset))]
        if request.category:
            params.append(("category", request.category))
        doc = _ask_node("/search", params)
        try:
            result = msgspec.convert(doc, SearchResult)
        except msgspec.ValidationError as exc:
            raise DreError(f"the node sent a search result this dre does not understand: "
                           f"{exc}") from None
    else:
        result = _with_local_engine(lambda engine: engine.search(request))
    if result.notice:
        _local_notice(result.notice)
    if as_json:
        emit_json(result)
        return
    _print_table(result.hits)
    if result.total > offset + len(result.hits):
        click.echo(f"({len(result.hits)} of {result.total}; --offset {offset + len(result.hits)}"
                   " for more)")


def _federated_search(request: SearchQuery, deadline: float, as_json: bool) -> None:
    if not local_node_running():
        raise DreError("--federated needs a running node (`dre node start`): peers are "
                       "reached through it")
    params = [("q", request.text), ("sort", request.sort), ("mode", request.mode),
              ("limit", str(request.limit)), ("offset", str(request.offset)),
              ("federated", "1"), ("timeout_ms", str(round(deadline * 1000)))]
    if request.category:
        params.append(("category", request.category))
    doc = _ask_node("/search", params)
    try:
        result = msgspec.convert(doc, FederatedResult)
    except msgspec.ValidationError as exc:
        raise DreError(f"the node sent a federated result this dre does not understand: "
                       f"{exc}") from None
    if result.notice and request.mode != "text":
        _local_notice(result.notice)
    for peer in result.timed_out:
        _local_notice(f"peer {peer} did not answer within {deadline:g} s")
    for failure in result.failed:
        _local_notice(f"peer {failure.peer}: {failure.reason}")
    if as_json:
        emit_json(result)
        return
    _print_table(result.hits)
    for hit in result.hits:
        if hit.source is not None:
            click.echo(f"{hit.name}@{hit.version} from peer {hit.source}")
    click.echo(f"({len(result.answered)} of "
               f"{len(result.answered) + len(result.timed_out) + len(result.failed)} peers "
               "answered)")


# -- similar / recommend ---------------------------------------------------------------------------


@click.command("similar")
@click.argument("name")
@_limit_option
@json_option
def similar(name: str, limit: int, as_json: bool) -> None:
    """Packages most like NAME (by meaning with a running node; by words without)."""
    if local_node_running():
        doc = _ask_node(f"/similar/{urllib.parse.quote(name, safe='@/')}",
                        [("limit", str(limit))])
        hits = _hits(doc)
    else:
        _local_notice("similarity by meaning needs a running node (`dre node start`); "
                      "comparing words only")
        hits = _with_local_engine(lambda engine: engine.similar(name, limit))
    if as_json:
        emit_json({"name": name, "hits": hits})
        return
    _print_table(hits)


@click.command("recommend")
@click.option("--based-on", "based_on", multiple=True, required=True, metavar="NAME",
              help="A package you use; repeat for several.")
@_limit_option
@json_option
def recommend(based_on: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Packages to look at given the ones you use (similar, or sharing dependencies)."""
    if local_node_running():
        doc = _ask_node("/recommendations",
                        [*(("based_on", n) for n in based_on), ("limit", str(limit))])
        hits = _hits(doc)
    else:
        _local_notice("recommendations by meaning need a running node (`dre node start`); "
                      "using words and dependencies only")
        hits = _with_local_engine(lambda engine: engine.recommend(list(based_on), limit))
    if as_json:
        emit_json({"based_on": list(based_on), "hits": hits})
        return
    _print_table(hits)


# -- trending / recent -----------------------------------------------------------------------------


@click.command("trending")
@click.option("--period", type=click.Choice(list(PERIODS)), default="week", show_default=True,
              help="Count downloads over the last day, week or month.")
@_limit_option
@json_option
def trending(period: str, limit: int, as_json: bool) -> None:
    """The most downloaded (installed) packages on this node lately."""
    if local_node_running():
        hits = _hits(_ask_node("/trending", [("period", period), ("limit", str(limit))]))
    else:
        hits = _with_local_engine(lambda engine: engine.trending(period, limit))
    if as_json:
        emit_json({"period": period, "hits": hits})
        return
    _print_table(hits, score="DOWNLOADS")


@click.command("recent")
@click.option("--type", "kind", type=click.Choice(RECENT_TYPES), default="created",
              show_default=True, help="New packages, or packages with a new version.")
@_limit_option
@json_option
def recent(kind: str, limit: int, as_json: bool) -> None:
    """The newest packages on this node."""
    if local_node_running():
        hits = _hits(_ask_node("/recent", [("type", kind), ("limit", str(limit))]))
    else:
        hits = _with_local_engine(lambda engine: engine.recent(kind, limit))
    if as_json:
        emit_json({"type": kind, "hits": hits})
        return
    _print_table(hits, score=kind.upper())


def record_downloads(home: Path, installed: Iterable[tuple[str, str]]) -> None:
    """Count one download of each installed ``(name, version)`` in the home's search index
    (what ``dre trending`` ranks by). The install already happened: a failure here is a
    warning line, not an error."""
    from dre.storage.search_index import SearchIndex  # noqa: PLC0415

    try:
        with SearchIndex.open_home(home) as index:
            now = int(time.time())
            for name, version in installed:
                index.record_download(name, version, now)
    except (DreError, sqlite3.Error) as exc:
        click.echo(f"dre: warning: downloads not counted: {exc}", err=True)


def register(group: click.Group) -> None:
    """Attach these commands to the top-level `dre` group."""
    for command in (search, similar, recommend, trending, recent):
        group.add_command(command)
