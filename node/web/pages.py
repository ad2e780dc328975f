"""The web pages' handlers: the package browser (``/``), a package (``/packages/NAME``) with its
tabs, and the dashboard (``/dashboard``).

Every page is rendered on the server from Jinja2 templates with autoescaping on; the only HTML
that is not escaped is what :mod:`.render` builds from escaped parts. Pages carry a strict
Content-Security-Policy (scripts and styles from this node's ``/static`` only, nothing inline),
``nosniff`` and ``Referrer-Policy``. Errors are HTML pages too: a readable line and the status
(400 for bad input, 404 for an unknown package), never a traceback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from dre.protocol.cid import CID
from dre.protocol.docformat import MAX_CATEGORY_CHARS, MAX_VERSION_CHARS, check_name
from dre.protocol.errors import DreError, IntegrityError, NotFoundError, ValidationError
from dre.protocol.search import MAX_QUERY_CHARS, SORTS, SearchQuery
from dre.protocol.treediff import utc_date
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import model
from .render import DiffLine, diff_lines, render_markdown

if TYPE_CHECKING:
    from dre.node.http_api import NodeState

__all__ = ["PAGE_SIZE", "SECURITY_HEADERS", "TABS", "SecureHeaders", "WebPages"]

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

#: Results per page of the browser.
PAGE_SIZE = 20
#: Highest page number accepted (the engine caps offsets anyway).
MAX_PAGE_NUMBER = 500
#: The package page's tabs, in order, with their labels.
TABS = {"docs": "Documentation", "versions": "Versions", "verification": "Verification",
        "files": "Files"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_CATEGORY_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_VERSION_RE = re.compile(r"[0-9A-Za-z.+\-]+")


class SecureHeaders:
    """ASGI wrapper adding :data:`SECURITY_HEADERS` to every response of ``app`` (static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- template helpers --------------------------------------------------------------------------


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _short(cid: object, keep: int = 8) -> str:
    text = str(cid)
    return text if len(text) <= 2 * keep + 1 else f"{text[:keep + 4]}…{text[-keep:]}"


def _number(value: int) -> str:
    return f"{value:,}"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(bytes=_human_bytes, when=_when, date=utc_date, short=_short,
                       number=_number)
    return env


# -- input checks ------------------------------------------------------------------------------


def _text_param(request: Request, name: str, limit: int) -> str:
    value = request.query_params.get(name, "")
    if len(value) > limit:
        raise ValidationError(f"the {name} parameter is longer than {limit} characters")
    return value


def _category_param(request: Request) -> str | None:
    value = request.query_params.get("category", "").strip()
    if not value:
        return None
    if len(value) > MAX_CATEGORY_CHARS or not _CATEGORY_RE.fullmatch(value):
        raise ValidationError("a category is lowercase letters, digits and single hyphens")
    return value


def _choice(request: Request, name: str, choices: tuple[str, ...] | list[str],
            default: str) -> str:
    value = request.query_params.get(name, default)
    if value not in choices:
        raise ValidationError(f"{name} must be one of: {', '.join(choices)}")
    return value


def _page_param(request: Request) -> int:
    value = request.query_params.get("page", "1")
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_NUMBER:
        raise ValidationError(f"page must be a number from 1 to {MAX_PAGE_NUMBER}")
    return int(value)


def _split_package_path(path: str, query_version: str | None) -> tuple[str, str | None]:
    """``@acme/retry`` or ``@acme/retry/versions/1.0.0`` (or ``?version=``) to name and version."""
    name, version = path, query_version
    if "/versions/" in path:
        name, version = path.split("/versions/", 1)
    name = name.rstrip("/")
    if len(name) > 300:
        raise ValidationError("that package name is too long")
    check_name(name)
    if version is not None and (len(version) > MAX_VERSION_CHARS
                                or not _VERSION_RE.fullmatch(version)):
        raise ValidationError("a version looks like 1.2.3 (SemVer)")
    return name, version


# -- the pages ---------------------------------------------------------------------------------


Handler = Callable[[Request], Awaitable[Response]]


class WebPages:
    """The page handlers over one node's state."""

    def __init__(self, state: NodeState) -> None:
        self.state = state
        self.env = _environment()
        self.cache = model.ReadCache()
        self.tally = model.LogTally()

    # -- plumbing ------------------------------------------------------------------------------

    def html(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """``template`` rendered with ``context``, with the security headers."""
        body = self.env.get_template(template).render(
            node_peer_id=self.state.peer_id, **context)
        return HTMLResponse(body, status_code=status,
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    def error_page(self, status: int, message: str) -> HTMLResponse:
        titles = {400: "Bad request", 404: "Not found", 500: "Something went wrong"}
        return self.html("error.html", status=status, title=titles.get(status, "Error"),
                         code=status, message=message)

    def page(self, handler: Handler) -> Handler:
        """``handler`` with its errors turned into HTML pages."""

        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except ValidationError as exc:
                return self.error_page(400, str(exc))
            except NotFoundError as exc:
                return self.error_page(404, str(exc))
            except IntegrityError as exc:
                return self.error_page(500, f"this node's store returned bad data: {exc}")
            except DreError as exc:
                return self.error_page(500, str(exc))

        return wrapped

    async def not_found(self, request: Request) -> Response:
        """Any other path: a browser gets an HTML 404 page; API and gateway paths keep their
        JSON answer (the app's HTTPException handler)."""
        path = request.url.path
        if path.startswith(("/api/", "/ipfs/")):
            raise HTTPException(404)
        return self.error_page(404, "there is no page at this address")

    def _repo_call(self, fn: Callable[[], Any]) -> Awaitable[Any]:
        # LMDB reads are fine on a worker thread; this keeps walks and regeneration off the loop.
        return trio.to_thread.run_sync(fn)

    # -- / -------------------------------------------------------------------------------------

    async def browse(self, request: Request) -> Response:
        """The package browser: search box, category and sort filters, one page of results."""
        text = _text_param(request, "q", MAX_QUERY_CHARS).strip()
        category = _category_param(request)
        sort = _choice(request, "sort", SORTS, "relevance")
        page = _page_param(request)
        offset = (page - 1) * PAGE_SIZE
        engine = self.state.search
        notice = None
        if engine is not None:
            query = SearchQuery(text=text, category=category, sort=sort, limit=PAGE_SIZE,
                                offset=offset)
            result = await self._repo_call(lambda: engine.search(query))
            rows = [model.PackageRow(
                name=h.name, version=h.version, description=h.description, category=h.category,
                keywords=list(h.keywords), downloads=h.downloads, trust=h.trust,
                reproducible=h.reproducible, created=h.created, updated=h.updated,
            ) for h in result.hits]
            total, notice = result.total, result.notice
            categories = await self._repo_call(engine.categories)
        else:
            rows, total, categories = await self._repo_call(lambda: model.list_packages(
                self.state.repo, self.cache, text=text, category=category, sort=sort,
                offset=offset, limit=PAGE_SIZE))
            notice = ("The search engine is not running on this node: packages are listed from"
                      " the registry index, matched by name, description and keywords.")
        pages = max(1, -(-total // PAGE_SIZE))
        return self.html(
            "browse.html", title="Packages", rows=rows, total=total, text=text,
            category=category, sort=sort, sorts=SORTS, categories=categories, page=page,
            pages=pages, notice=notice, engine=engine is not None,
        )

    # -- /packages/NAME ------------------------------------------------------------------------

    async def package(self, request: Request) -> Response:
        """One package: header, install instructions and the selected tab."""
        name, wanted = _split_package_path(request.path_params["name"],
                                           request.query_params.get("version"))
        tab = _choice(request, "tab", list(TABS), "docs")
        repo, cache = self.state.repo, self.cache
        versions = await self._repo_call(lambda: model.package_versions(repo, cache, name))
        if wanted is None:
            version, manifest_cid, manifest = versions[-1]
        else:
            chosen = [v for v in versions if v[0] == wanted]
            if not chosen:
                known = ", ".join(v for v, _, _ in versions[-10:])
                raise NotFoundError(f"{name}@{wanted} is not published here (versions: {known})")
            version, manifest_cid, manifest = chosen[0]
        context: dict[str, Any] = {}
        if tab == "docs":
            context["doc_html"] = await self._repo_call(lambda: self._rendered_doc(manifest.doc))
        elif tab == "versions":
            await self._repo_call(lambda: self.tally.update(repo))
            received = set(self.tally.received_records)
            entries = await self._repo_call(lambda: model.timeline(repo, versions, received))
            context["timeline"] = [(e, *self._diff(e.doc_diff)) for e in entries]
            context["timeline_cut"] = len(versions) > model.MAX_TIMELINE
        elif tab == "verification":
            context["check"] = await self._repo_call(lambda: model.verification(
                repo, cache, manifest_cid, self.state.peer_id))
        else:
            context["files"] = await self._repo_call(
                lambda: model.file_tree(repo, manifest.package))
        similar = []
        engine = self.state.search
        if engine is not None:
            try:
                similar = await self._repo_call(lambda: engine.similar(name, 5))
            except NotFoundError:  # published a moment ago, not indexed yet
                similar = []
        base = self.state.http_url or str(request.base_url).rstrip("/")
        return self.html(
            "package.html", title=f"{name}@{version}", name=name, version=version,
            latest=versions[-1][0], versions=[v for v, _, _ in reversed(versions)],
            manifest=manifest, manifest_cid=str(manifest_cid), tab=tab, tabs=TABS,
            similar=similar, base_url=base, **context,
        )

    def _rendered_doc(self, doc: CID) -> Any:
        def render() -> Any:
            text = model.document_text(self.state.repo, doc)
            return render_markdown(model.document_body(text))

        return self.cache.rendered.get_or_make(doc, render)

    @staticmethod
    def _diff(diff: str) -> tuple[list[DiffLine], bool]:
        return diff_lines(diff, max_lines=model.MAX_DIFF_LINES)

    # -- /dashboard ----------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        """Packages, downloads, storage and network at a glance."""
        now = int(time.time())
        stats = await self._repo_call(lambda: model.dashboard(
            self.state.repo, self.cache, self.tally, now=now))
        engine = self.state.search
        downloads: dict[str, Any] | None = None
        if engine is not None:
            midnight = now - now % model.DAY
            downloads = await self._repo_call(lambda: {
                "total": engine.downloads_total(),
                "today": engine.downloads_since(midnight),
                "last_24h": engine.downloads_since(now - model.DAY),
                "trending": engine.trending("week", 5),
            })
        network = self.state.network
        return self.html(
            "dashboard.html", title="Dashboard", stats=stats, downloads=downloads,
            peers=self.state.peer_count(), p2p=self.state.p2p,
            network_stats=dict(getattr(network, "stats", {}) or {}) if network else None,
            addrs=list(self.state.addrs), now=now,
        )

