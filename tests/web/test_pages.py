"""The web pages in process (httpx over ASGI, no socket) against a real node home with the example
packages published: every page renders what the registry holds, filters filter, hostile documents
stay inert, bad input gets a 400 page and unknown packages a 404 page."""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from dre.node.config import NodeConfig
from dre.node.http_api import NodeState, make_app
from dre.node.search_engine import SearchEngine
from dre.node.web.render import is_safe_url, pygments_css, render_markdown
from dre.protocol.cid import Block
from dre.protocol.keys import PublisherKey
from dre.protocol.treediff import flatten_tree
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import ALICE, CAROL, EXAMPLE_ORDER, EXAMPLES, T0, publish_examples

NODE = PublisherKey.from_seed(bytes(range(2, 34)))
PAGES = ("/", "/dashboard", "/packages/@acme/retry", "/packages/@acme/retry?tab=versions",
         "/packages/@acme/retry?tab=verification", "/packages/@acme/retry?tab=files")


@pytest.fixture
def state(repo: Repo) -> NodeState:
    return NodeState(repo=repo, peer_id=NODE.peer_id, config=NodeConfig(),
                     http_url="http://127.0.0.1:5860")


@pytest.fixture
async def client(state: NodeState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
        yield c


@pytest.fixture
def registry(repo: Repo) -> LocalRegistry:
    return publish_examples(repo)


def names_on(page: str) -> list[str]:
    """Package names of the result cards, in page order."""
    return [html.unescape(n) for n in re.findall(r'class="package-card" data-name="([^"]+)"', page)]


def text_of(page: str) -> str:
    """The page's visible text, roughly (tags dropped, entities decoded, spaces squeezed)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


# -- the browser -------------------------------------------------------------------------------


@pytest.mark.trio
async def test_browser_lists_every_package_with_its_facts(client: httpx.AsyncClient,
                                                          registry: LocalRegistry) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    names = names_on(page.text)
    assert sorted(names) == sorted(registry.index.names())
    assert len(names) == 7  # six example names (retry has two versions) and the probe
    text = text_of(page.text)
    assert "v1.1.0" in text and "Retry a flaky call with exponential backoff" in text
    # The search engine does not run in this state: the page says what it does instead.
    assert "search engine is not running" in text
    assert 'name="q"' in page.text and 'name="category"' in page.text and 'name="sort"' in page.text


@pytest.mark.trio
async def test_verified_badge_follows_reproducing_attestations(client: httpx.AsyncClient,
                                                               registry: LocalRegistry) -> None:
    def badge_of(page: str, name: str) -> bool:
        card = page.split(f'data-name="{name}"', 1)[1].split("</li>", 1)[0]
        return "✓ Verified" in card

    before = (await client.get("/")).text
    assert not badge_of(before, "left-pad")
    registry.verify("left-pad", None, CAROL, now=T0 + 10**6)
    after = (await client.get("/")).text
    assert badge_of(after, "left-pad") and not badge_of(after, "slugify-lite")


@pytest.mark.trio
async def test_search_and_filters(client: httpx.AsyncClient, registry: LocalRegistry) -> None:
    retry = names_on((await client.get("/", params={"q": "retry"})).text)
    assert retry[0] == "@acme/retry"  # the name matches; @acme/cli only mentions it
    assert "left-pad" not in retry
    assert names_on((await client.get("/", params={"q": "backoff jitter"})).text) == [
        "@acme/retry"]
    assert names_on((await client.get("/", params={"q": "no-such-thing"})).text) == []
    text_pkgs = names_on((await client.get("/", params={"category": "text"})).text)
    assert sorted(text_pkgs) == ["left-pad", "slugify-lite"]
    page = (await client.get("/", params={"category": "text"})).text
    assert '<option value="text" selected>' in page
    # Newest first: published one day apart in EXAMPLE_ORDER, the probe last.
    created = names_on((await client.get("/", params={"sort": "created"})).text)
    assert created[0] == "xss-probe" and created[-1] == "left-pad"
    assert created.index("@acme/cli") < created.index("dotfiles-kit")
    both = names_on((await client.get("/", params={"q": "pad", "category": "text"})).text)
    assert both == ["left-pad"]


@pytest.mark.trio
async def test_results_are_paged(client: httpx.AsyncClient, repo: Repo) -> None:
    registry = LocalRegistry(repo)
    template = (EXAMPLES / "left-pad.md").read_text()
    for i in range(23):
        registry.publish(template.replace("name: left-pad", f"name: pad-{i:02d}").encode(),
                         ALICE, now=T0)
    first = (await client.get("/")).text
    second = (await client.get("/", params={"page": "2"})).text
    assert len(names_on(first)) == 20 and len(names_on(second)) == 3
    assert not set(names_on(first)) & set(names_on(second))
    assert "page 1 of 2" in first and 'rel="next"' in first and 'rel="prev"' in second


# -- a package ---------------------------------------------------------------------------------


@pytest.mark.trio
async def test_documentation_tab_renders_markdown_with_highlighted_code(
        client: httpx.AsyncClient, registry: LocalRegistry) -> None:
    page = await client.get("/packages/@acme/retry")
    assert page.status_code == 200
    body = page.text
    assert "<h1>@acme/retry</h1>" in body
    assert '<div class="code-path">src/acme_retry/__init__.py</div>' in body
    # Pygments ran: Python keywords carry its classes.
    assert '<span class="k">def</span>' in body and 'class="hl"' in body
    # The front matter is metadata in the header, not a paragraph of the document.
    assert "template: python-library" not in body
    assert "Apache-2.0" in body and "v1.1.0" in body
    # Install instructions, by name and by CID.
    _, cid = registry.resolve_version("@acme/retry", "1.1.0")
    package = registry.manifest(cid).package
    text = text_of(body)
    assert "dre install @acme/retry@1.1.0" in text
    assert f"dre get {package} -o retry" in text
    assert f"/ipfs/{package}?format=car" in text


@pytest.mark.trio
async def test_version_urls(client: httpx.AsyncClient, registry: LocalRegistry) -> None:
    for url in ("/packages/@acme/retry/versions/1.0.0", "/packages/@acme/retry?version=1.0.0"):
        page = await client.get(url)
        assert page.status_code == 200
        assert '<span class="version">v1.0.0</span>' in page.text
        assert "latest is v1.1.0" in page.text
        assert "call_with_retry" not in page.text  # added in 1.1.0
    missing = await client.get("/packages/@acme/retry/versions/9.9.9")
    assert missing.status_code == 404
    assert "@acme/retry@9.9.9 is not published here" in html.unescape(missing.text)


@pytest.mark.trio
async def test_versions_tab_shows_the_timeline_with_doc_diffs(
        client: httpx.AsyncClient, registry: LocalRegistry) -> None:
    page = (await client.get("/packages/@acme/retry", params={"tab": "versions"})).text
    assert page.index('id="v1.1.0"') < page.index('id="v1.0.0"')  # newest first
    assert "initial release" in page
    assert "changed <code>src/acme_retry/__init__.py</code>" in page
    diff = page.split('<pre class="diff">', 1)[1].split("</pre>", 1)[0]
    assert '<span class="meta">--- @acme/retry@1.0.0</span>' in diff
    assert '<span class="meta">+++ @acme/retry@1.1.0</span>' in diff
    assert re.search(r'<span class="add">\+def call_with_retry', diff)
    assert re.search(r'<span class="del">-version: 1.0.0</span>', diff)


@pytest.mark.trio
async def test_verification_tab(client: httpx.AsyncClient, registry: LocalRegistry) -> None:
    url = "/packages/@acme/retry"
    page = (await client.get(url, params={"tab": "verification"})).text
    assert ALICE.peer_id in page
    assert "valid Ed25519 signature" in page and "blocks re-hashed" in page
    assert "the document regenerates" in page and "exactly" in page
    assert "No attestation stored yet" in page
    score = float(re.search(r'id="trust-score">([0-9.]+)<', page).group(1))  # type: ignore[union-attr]
    # Everything holds but no independent attestation yet: the attestation share is missing.
    assert score == pytest.approx(0.8)
    report = registry.verify("@acme/retry", None, CAROL, now=T0 + 10**6)
    page = (await client.get(url, params={"tab": "verification"})).text
    assert CAROL.peer_id in page and "reproduced" in page
    score = float(re.search(r'id="trust-score">([0-9.]+)<', page).group(1))  # type: ignore[union-attr]
    # CAROL's report was computed before her own attestation existed; the page counts it now:
    # one of the three independent attesters for the 0.2 attestation share.
    assert report.trust == pytest.approx(0.8)
    assert score == pytest.approx(round(0.8 + 0.2 / 3, 2))
    for check in ("signature", "authorization", "integrity", "reproducible", "license",
                  "attestations"):
        assert f"<td>{check}</td>" in page


@pytest.mark.trio
async def test_verification_reports_a_missing_block(client: httpx.AsyncClient,
                                                    registry: LocalRegistry, repo: Repo) -> None:
    _, cid = registry.resolve_version("left-pad", None)
    package = registry.manifest(cid).package
    victim = sorted(flatten_tree(repo.store.get, package).values(), key=str)[0]
    repo.store.delete(victim)
    page = (await client.get("/packages/left-pad", params={"tab": "verification"})).text
    assert "1 missing" in page
    assert re.search(r'id="trust-score">0\.00<', page)


@pytest.mark.trio
async def test_files_tab_links_every_file_to_the_gateway(client: httpx.AsyncClient,
                                                         registry: LocalRegistry,
                                                         repo: Repo) -> None:
    page = (await client.get("/packages/@acme/retry", params={"tab": "files"})).text
    _, cid = registry.resolve_version("@acme/retry", None)
    package = registry.manifest(cid).package
    files = flatten_tree(repo.store.get, package)
    assert files
    for path, file_cid in files.items():
        # By path under the package root (the gateway names the type), and by its own CID.
        assert f'href="/ipfs/{package}/{path}"' in page, path
        assert f'href="/ipfs/{file_cid}"' in page, path
    assert f'href="/ipfs/{package}/"' in page
    assert "src/" in text_of(page)


@pytest.mark.trio
async def test_scoped_and_unscoped_package_pages(client: httpx.AsyncClient,
                                                 registry: LocalRegistry) -> None:
    for name in registry.index.names():
        for tab in ("docs", "versions", "verification", "files"):
            page = await client.get(f"/packages/{name}", params={"tab": tab})
            assert page.status_code == 200, (name, tab)
            assert f"{name} <span" in page.text
    cli = (await client.get("/packages/@acme/cli")).text
    assert 'href="/packages/@acme/retry"' in cli  # dependencies link to their pages


# -- the dashboard -----------------------------------------------------------------------------


@pytest.mark.trio
async def test_dashboard_counts(client: httpx.AsyncClient, registry: LocalRegistry,
                                repo: Repo, tmp_path: Path) -> None:
    # A package that arrived from a peer: published in another home, its record accepted here.
    Repo.init(tmp_path / "peer")
    with Repo.open(tmp_path / "peer") as peer_repo:
        peer = LocalRegistry(peer_repo)
        doc = (EXAMPLES / "left-pad.md").read_text().replace("name: left-pad", "name: pad-peer")
        result = peer.publish(doc.encode(), CAROL, now=T0)
        envelope = peer_repo.store.get(result.manifest)
    assert registry.accept_record(Block(result.manifest, envelope), now=T0) == "dre/manifest/1"
    registry.verify("left-pad", None, CAROL, now=T0)

    page = (await client.get("/dashboard")).text
    stats = repo.store.stats()

    def card(card_id: str) -> str:
        return text_of(page.split(f'id="{card_id}">', 1)[1].split("</section>", 1)[0])

    packages = card("stat-packages")
    assert packages.startswith("Packages 8 ")  # 6 example names, the probe and pad-peer
    assert "1 verified" in packages
    # Every example was published years before today's clock: nothing in the last 24 h.
    assert "0 new in the last 24 h" in packages and "10 in all" in packages
    storage = card("stat-storage")
    assert f"{stats.blocks:,} blocks" in storage
    assert "saved by deduplication" in storage
    network = card("stat-network")
    assert "0 peers" in network and "libp2p is off" in network
    assert "versions published on this node" in network
    assert re.search(r"\b9 versions published on this node", network)
    assert re.search(r"\b1 versions synced from peers", network)
    assert "Downloads are counted by the search engine" in card("stat-downloads")
    activity = page.split('id="activity"', 1)[1].split("</ol>", 1)[0]
    assert "pad-peer@1.3.0" in activity and "synced from a peer" in activity


@pytest.mark.trio
async def test_dashboard_counts_recent_publishes(client: httpx.AsyncClient, repo: Repo) -> None:
    registry = LocalRegistry(repo)
    registry.publish((EXAMPLES / "left-pad.md").read_bytes(), ALICE, now=int(time.time()) - 60)
    page = text_of((await client.get("/dashboard")).text)
    assert "1 new in the last 24 h" in page
    assert "1 versions published in the last 24 h" in page


# -- with the search engine --------------------------------------------------------------------


@pytest.fixture
def engine(state: NodeState, registry: LocalRegistry) -> Iterator[SearchEngine]:
    """The node's real search engine over the same home (full text only: no model load)."""
    engine = SearchEngine.open(state.repo, semantic=False)
    engine.catch_up()
    state.search = engine
    try:
        yield engine
    finally:
        state.search = None
        engine.close()


@pytest.mark.trio
async def test_browser_searches_through_the_engine(client: httpx.AsyncClient,
                                                   engine: SearchEngine) -> None:
    page = (await client.get("/")).text
    assert "search engine is not running" not in page
    assert len(names_on(page)) == 7 and "0 downloads" in page
    retry = names_on((await client.get("/", params={"q": "retry"})).text)
    assert retry[0] == "@acme/retry" and "left-pad" not in retry
    text = names_on((await client.get("/", params={"category": "text"})).text)
    assert sorted(text) == ["left-pad", "slugify-lite"]
    for _ in range(3):
        engine.record_download("slugify-lite", "0.4.2")
    engine.record_download("left-pad", "1.3.0")
    by_downloads = (await client.get("/", params={"sort": "downloads"})).text
    assert names_on(by_downloads)[:2] == ["slugify-lite", "left-pad"]
    assert "3 downloads" in by_downloads and "1 download<" in by_downloads
    # The package page lists similar packages from the engine.
    similar = (await client.get("/packages/@acme/retry")).text.split('class="similar"', 1)
    assert len(similar) == 2 and 'href="/packages/' in similar[1]


@pytest.mark.trio
async def test_dashboard_downloads_from_the_engine(client: httpx.AsyncClient,
                                                   engine: SearchEngine) -> None:
    for _ in range(4):
        engine.record_download("left-pad", "1.3.0")
    engine.record_download("@acme/retry", "1.1.0")
    page = (await client.get("/dashboard")).text
    downloads = text_of(page.split('id="stat-downloads">', 1)[1].split("</section>", 1)[0])
    assert downloads.startswith("Downloads 5 ")
    assert "5 today (UTC)" in downloads and "5 in the last 24 h" in downloads
    trending = page.split('id="trending"', 1)[1].split("</ol>", 1)[0]
    assert trending.index("left-pad") < trending.index("@acme/retry")


@pytest.mark.trio
async def test_engine_rejects_what_the_page_would_not(client: httpx.AsyncClient,
                                                      engine: SearchEngine) -> None:
    page = await client.get("/", params={"q": "x" * 1001})
    assert page.status_code == 400


# -- errors and headers ------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(("url", "message"), [
    ("/?q=" + "x" * 1001, "the q parameter is longer than 1000 characters"),
    ("/?sort=popular", "sort must be one of: relevance, downloads, updated, created"),
    ("/?page=0", "page must be a number from 1 to 500"),
    ("/?page=abc", "page must be a number from 1 to 500"),
    ("/?category=Not%20A%20Category", "a category is lowercase letters"),
    ("/packages/@acme/retry?tab=secrets", "tab must be one of: docs, versions"),
    ("/packages/Bad_Name", "package name"),
    ("/packages/@acme/retry/versions/1.0.0%3Cscript%3E", "a version looks like 1.2.3"),
])
async def test_bad_input_is_a_400_page(client: httpx.AsyncClient, registry: LocalRegistry,
                                       url: str, message: str) -> None:
    page = await client.get(url)
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    line = html.unescape(re.search(r'id="error-message">([^<]*)<', page.text).group(1))  # type: ignore[union-attr]
    assert message in line
    assert "Traceback" not in page.text and "<script" not in page.text.split("</head>")[1]


@pytest.mark.trio
async def test_unknown_package_is_a_404_page(client: httpx.AsyncClient,
                                             registry: LocalRegistry) -> None:
    page = await client.get("/packages/@acme/nothing-here")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "no package named @acme/nothing-here on this node" in page.text
    # An API route under the same prefix keeps answering JSON.
    api = await client.get("/api/v1/packages/@acme/nothing-here")
    assert api.status_code == 404 and "error" in api.json()
    # Any other address a browser may type is a 404 page too; API paths keep JSON.
    stray = await client.get("/no/such/page")
    assert stray.status_code == 404 and stray.headers["content-type"].startswith("text/html")
    assert "there is no page at this address" in stray.text
    assert (await client.get("/api/v1/nowhere")).json() == {"error": "no such API route"}
    assert (await client.post("/api/v1/node/status")).status_code == 405


@pytest.mark.trio
async def test_security_headers_on_pages_and_static_files(client: httpx.AsyncClient,
                                                          registry: LocalRegistry) -> None:
    for url in (*PAGES, "/packages/none-such", "/?sort=x", "/static/style.css",
                "/static/app.js"):
        response = await client.get(url)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp, url
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    for url in PAGES:
        page = (await client.get(url)).text
        # No inline script or style anywhere: the CSP would block them, so none may be needed.
        assert re.findall(r"<script(?![^>]*\bsrc=)", page) == [], url
        assert "<style" not in page and " style=" not in page and "onclick" not in page


@pytest.mark.trio
async def test_static_files(client: httpx.AsyncClient) -> None:
    css = await client.get("/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = await client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert (await client.get("/static/nope.css")).status_code == 404


def test_pygments_stylesheet_is_current() -> None:
    shipped = (Path(__file__).resolve().parents[2] / "node" / "web" / "static" / "pygments.css")
    assert pygments_css() in shipped.read_text()


# -- hostile documents -------------------------------------------------------------------------


class _Elements(HTMLParser):
    """Every element and attribute a browser would build from a fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))


FORBIDDEN_TAGS = {"script", "iframe", "img", "svg", "object", "embed", "style", "frame",
                  "base", "meta", "link", "form", "input", "math", "video", "audio"}


def assert_inert(fragment: str) -> None:
    """No element, event handler or unsafe URL of the document's own survives in ``fragment``."""
    parser = _Elements()
    parser.feed(fragment)
    parser.close()
    for tag, attrs in parser.elements:
        assert tag not in FORBIDDEN_TAGS, tag
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name)
            if name in ("href", "src", "action", "formaction", "xlink:href"):
                assert is_safe_url(value or ""), (tag, name, value)
                assert not re.match(r"\s*(javascript|vbscript|data):", value or "", re.I)


@pytest.mark.trio
async def test_hostile_document_renders_inert(client: httpx.AsyncClient,
                                              registry: LocalRegistry) -> None:
    for url in ("/packages/xss-probe", "/packages/xss-probe?tab=versions"):
        page = (await client.get(url)).text
        # The tab's panel: everything of the document's that is on the page.
        panel = page.split('<div class="tab-content"', 1)[1].split("</section>", 1)[0]
        assert "window.__pwned" in panel
        assert_inert(panel)
    doc = (await client.get("/packages/xss-probe")).text
    # The text is all there, shown as text.
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in doc
    assert "&lt;img src=x onerror=&#34;window.__pwned=2&#34;&gt;" in doc or \
        "&lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt;" in doc
    assert "&lt;iframe" in doc
    assert "[click me](javascript:alert(1))" in doc  # the link was refused, its text kept
    versions = (await client.get("/packages/xss-probe", params={"tab": "versions"})).text
    assert '<span class="add">+&lt;script&gt;window.__pwned=7&lt;/script&gt;</span>' in versions


@pytest.mark.trio
async def test_query_text_is_reflected_escaped(client: httpx.AsyncClient,
                                              registry: LocalRegistry) -> None:
    probe = '"><script>window.__pwned=9</script><img src=x onerror=alert(1)>'
    page = (await client.get("/", params={"q": probe})).text
    main = page.split('<main class="wrap">', 1)[1].split("</main>", 1)[0]
    assert "window.__pwned=9" in html.unescape(main)  # shown back to the user, as text
    parser = _Elements()
    parser.feed(main)
    assert not [tag for tag, _ in parser.elements if tag in ("script", "img")]
    assert all(not name.startswith("on") for _, attrs in parser.elements for name, _ in attrs)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    "<script>x()</script>", "<img src=x onerror=y>", "<iframe src=a>", "[a](", "](", ")", "![i](",
    "javascript:", "JaVaScRiPt:", "java\tscript:", "&#x09;", "&#106;avascript:", "%6a", "data:",
    "vbscript:", "http://ok/", "<", ">", "\"", "'", "`", "```", "\n", " ", "<a href=", "onload=",
    "<svg/onload=", "&lt;", "\\", "*", "[x]: javascript:y\n", "<javascript:alert(1)>",
]), max_size=30).map("".join))
def test_rendered_markdown_never_carries_markup_or_unsafe_links(text: str) -> None:
    assert_inert(str(render_markdown(text)))


@pytest.mark.parametrize(("url", "safe"), [
    ("https://example.com/a", True), ("http://x", True), ("mailto:a@b.c", True),
    ("docs/readme.md", True), ("#section", True), ("?q=1", True), ("../up", True),
    ("javascript:alert(1)", False), ("JAVASCRIPT:alert(1)", False), (" javascript:x", False),
    ("java\tscript:x", False), ("java%09script:x", False), ("%6aavascript:x", False),
    ("vbscript:x", False), ("data:text/html,x", False), ("file:///etc/passwd", False),
    ("ftp://x", False), ("blob:https://x/1", False),
])
def test_is_safe_url(url: str, safe: bool) -> None:
    assert is_safe_url(url) is safe


def test_examples_order_covers_every_example() -> None:
    assert sorted(EXAMPLE_ORDER) == sorted(p.name for p in EXAMPLES.glob("*.md"))
