"""The web pages in a real browser: Debian's headless Chromium driven by Playwright, against a real
`dre node start` process with the example packages published.

Searches, opens a package, switches its tabs, reads a file through the gateway link, sees the
dashboard, and checks in the live DOM that a hostile document stays inert. Screenshots go to
``test-artifacts/screenshots/``. Skipped only when ``/usr/bin/chromium`` is absent (``.ci/run``
installs it); Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dre.storage.repo import Repo
from playwright.sync_api import sync_playwright

from .conftest import publish_examples

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DRE = str(Path(sys.executable).parent / "dre")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

pytestmark = [
    pytest.mark.slow,
    # One node and one browser for the module, on one xdist worker (`make test` uses loadgroup).
    pytest.mark.xdist_group("web-browser"),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="/usr/bin/chromium is not installed (.ci/system-deps installs it)"),
]


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real node process over a home holding the examples; its base URL."""
    root = tmp_path_factory.mktemp("browser")
    home = root / "home"
    Repo.init(home)
    with Repo.open(home) as repo:
        publish_examples(repo)
    log = (root / "node.log").open("wb")
    proc = subprocess.Popen(
        [DRE, "node", "start", "--http", "127.0.0.1:0"],
        env={**os.environ, "DRE_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (home / "api").exists():
            if proc.poll() is not None:
                raise AssertionError(f"node exited {proc.returncode}: "
                                     f"{(root / 'node.log').read_text()}")
            assert time.monotonic() < deadline, "the node did not start within 60 s"
            time.sleep(0.05)
        yield (home / "api").read_text().strip()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; fails the test if the page logs an error (a CSP violation would) or
    throws."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    problems: list[str] = []
    # "Failed to load resource" is also logged for an error page itself; failed subresources
    # are caught by URL below.
    tab.on("console", lambda msg: msg.type == "error"
           and not msg.text.startswith("Failed to load resource") and problems.append(msg.text))
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    # Which resource failed, not just that one did (the console message has no URL).
    tab.on("response", lambda r: r.status >= 400 and r.request.resource_type != "document"
           and problems.append(f"{r.status} {r.url}"))
    tab.problems = problems
    try:
        yield tab
    finally:
        context.close()


def shot(page: Any, name: str, *, full: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full)


def card_names(page: Any) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        ".package-card", "cards => cards.map(c => c.dataset.name)")
    return names


def test_search_open_package_switch_tabs_and_dashboard(page: Any, node_url: str) -> None:
    page.goto(node_url + "/")
    assert page.title() == "Packages · DRE Registry"
    assert len(card_names(page)) == 7
    shot(page, "01-browse")

    # Type in the search box and submit.
    page.fill("#q", "retry backoff")
    page.press("#q", "Enter")
    page.wait_for_url("**/?q=retry+backoff*")
    found = card_names(page)
    assert found[0] == "@acme/retry" and "left-pad" not in found
    assert "retry backoff" in page.inner_text("#result-count")
    shot(page, "02-search")

    # Filters apply on change (the small script); the category narrows the list.
    page.fill("#q", "")
    page.press("#q", "Enter")
    page.wait_for_url("**/?q=*")
    with page.expect_navigation():
        page.select_option("#category", "text")
    assert sorted(card_names(page)) == ["left-pad", "slugify-lite"]
    with page.expect_navigation():
        page.select_option("#category", "")
    with page.expect_navigation():
        page.select_option("#sort", "created")
    assert card_names(page)[0] == "xss-probe" and card_names(page)[-1] == "left-pad"

    # Open a package.
    page.click('.package-card[data-name="@acme/retry"] h2 a')
    page.wait_for_url("**/packages/@acme/retry")
    assert page.inner_text("#package-name").startswith("@acme/retry")
    docs = page.locator("#documentation")
    assert "retry" in docs.locator("h1").inner_text()
    assert docs.locator("figure.code .hl span.k").count() > 0  # highlighted server-side
    assert "dre install @acme/retry@1.1.0" in page.inner_text("#install")
    shot(page, "03-package-docs")

    # Switch tabs: versions, verification, files.
    page.click("#tab-versions")
    page.wait_for_url("**?tab=versions")
    assert page.get_attribute("#tab-versions", "aria-selected") == "true"
    assert page.locator(".timeline-entry").count() == 2
    page.click("details.doc-diff summary")
    assert page.locator("pre.diff span.add").first.is_visible()
    shot(page, "04-package-versions")

    page.click("#tab-verification")
    page.wait_for_url("**?tab=verification")
    assert float(page.inner_text("#trust-score")) == pytest.approx(0.8)
    assert page.inner_text("#publisher").startswith("12D3KooW")
    shot(page, "05-package-verification")

    page.click("#tab-files")
    page.wait_for_url("**?tab=files")
    links = page.eval_on_selector_all(
        "table.file-tree td:first-child a", "as => as.map(a => a.getAttribute('href'))")
    assert links and all(href.startswith("/ipfs/baf") for href in links)
    shot(page, "06-package-files")

    # A file opens through the gateway, by its path under the package root.
    with page.expect_navigation():
        page.click("table.file-tree a:text-is('__init__.py')")
    assert page.url.endswith("/src/acme_retry/__init__.py") and "/ipfs/baf" in page.url
    assert "def call_with_retry(" in page.inner_text("body")

    # An older version, from the version picker.
    page.goto(node_url + "/packages/@acme/retry")
    with page.expect_navigation():
        page.select_option(".version-pick select", "1.0.0")
    assert "v1.0.0" in page.inner_text("#package-name")
    assert "latest is v1.1.0" in page.inner_text("#package-name")

    # The dashboard.
    page.click("header.site nav a:text('Dashboard')")
    page.wait_for_url("**/dashboard")
    assert page.inner_text("#stat-packages .big") == "7"
    assert "saved by deduplication" in page.inner_text("#stat-storage")
    assert "versions published on this node" in page.inner_text("#stat-network")
    assert page.locator("#activity li").count() > 0
    shot(page, "07-dashboard")
    assert page.problems == []


def test_errors_are_pages(page: Any, node_url: str) -> None:
    response = page.goto(node_url + "/packages/@acme/missing")
    assert response.status == 404
    assert "no package named @acme/missing" in page.inner_text("#error-message")
    shot(page, "08-not-found")
    response = page.goto(node_url + "/?sort=popular")
    assert response.status == 400
    assert "sort must be one of" in page.inner_text("#error-message")
    assert page.problems == []


def test_small_screen(browser: Any, node_url: str) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        tab = context.new_page()
        tab.goto(node_url + "/packages/@acme/retry")
        # One column: the side panel sits under the documentation, nothing scrolls sideways.
        width = tab.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        main = tab.locator(".package-main").bounding_box()
        side = tab.locator(".package-side").bounding_box()
        assert side["y"] > main["y"] + main["height"] - 1
        shot(tab, "09-package-mobile", full=False)
    finally:
        context.close()


def test_hostile_document_is_inert_in_the_dom(page: Any, node_url: str) -> None:
    for url in ("/packages/xss-probe", "/packages/xss-probe?tab=versions"):
        page.goto(node_url + url)
        for details in page.locator("details").all():
            details.locator("summary").click()
        found = page.evaluate("""() => {
            const panel = document.querySelector('.tab-content');
            const hrefs = [...document.querySelectorAll('[href], [src], [action]')]
                .map(e => e.getAttribute('href') || e.getAttribute('src')
                          || e.getAttribute('action'));
            return {
                pwned: typeof window.__pwned,
                scriptsInPanel: panel.querySelectorAll('script').length,
                framesInPage: document.querySelectorAll('iframe, frame, object, embed').length,
                imagesInPage: document.querySelectorAll('img, svg, video, audio').length,
                handlers: [...panel.querySelectorAll('*')].flatMap(
                    e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on')),
                unsafe: hrefs.filter(h => /^\\s*(javascript|vbscript|data):/i.test(h)),
                scripts: [...document.scripts].map(s => s.getAttribute('src')),
                text: panel.innerText,
            };
        }""")
        assert found["pwned"] == "undefined", url
        assert found["scriptsInPanel"] == 0 and found["framesInPage"] == 0
        assert found["imagesInPage"] == 0 and found["handlers"] == []
        assert found["unsafe"] == []
        assert found["scripts"] == ["/static/app.js"]  # the page's own, nothing else
        # The hostile markup is shown as text.
        assert "<script>window.__pwned=" in found["text"], url
        if url.endswith("probe"):
            # Clicking the refused link's text does nothing either.
            page.click("text=click me")
        assert page.evaluate("typeof window.__pwned") == "undefined"
        shot(page, "10-xss-probe" + ("-versions" if "versions" in url else ""))
    assert page.problems == []
