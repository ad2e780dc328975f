"""Shared pieces of the web page tests: example packages and a hostile document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dre.protocol.keys import PublisherKey
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
ALICE = PublisherKey.from_seed(bytes(range(32)))
#: A second key: its attestations count as independent of ALICE's.
CAROL = PublisherKey.from_seed(bytes(range(5, 37)))
#: Publish times: one per example, a day apart, oldest first (so "created" sorts are known).
T0 = 1_790_000_000

# Published in this order, one day apart.
EXAMPLE_ORDER = (
    "left-pad.md", "slugify-lite.md", "acme-retry-1.0.0.md", "acme-retry-1.1.0.md",
    "dotfiles-kit.md", "acme-brand-assets.md", "acme-cli.md",
)

#: Prose that tries every way we know to put markup or script into the page.
XSS_PROSE = """\
# Probe

<script>window.__pwned=1</script>

[click me](javascript:alert(1)) and [tabbed](java&#x09;script:alert(3)) and
[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==) and [vb](vbscript:msgbox(1))

<img src=x onerror="window.__pwned=2">

<iframe src="https://example.com/"></iframe>

<a href="javascript:window.__pwned=4">raw anchor</a>

![picture](javascript:window.__pwned=5)

<svg onload="window.__pwned=6"></svg>
"""


def xss_document(version: str = "1.0.0", extra: str = "") -> bytes:
    """A valid package document whose prose is hostile (the format allows any Markdown)."""
    return f"""\
---
name: xss-probe
version: {version}
description: A document that tries to inject markup into the page.
license: MIT
category: testing
template: files
---

{XSS_PROSE}{extra}
```text file=README.txt
hello
```
""".encode()


def publish_examples(repo: Repo, *, now: int = T0) -> LocalRegistry:
    """Publish every example of ``specs/examples`` (one day apart from ``now``) and the XSS
    probe in two versions (the second adds a script line, so the doc diff shows one)."""
    registry = LocalRegistry(repo)
    registry.create_scope("@acme", ALICE, now=now)
    for day, doc in enumerate(EXAMPLE_ORDER):
        registry.publish((EXAMPLES / doc).read_bytes(), ALICE, now=now + day * 86_400)
    later = now + len(EXAMPLE_ORDER) * 86_400
    registry.publish(xss_document("1.0.0"), ALICE, now=later)
    registry.publish(xss_document("1.1.0", "\n<script>window.__pwned=7</script>\n"), ALICE,
                     now=later + 60)
    return registry


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    Repo.init(tmp_path / "home")
    with Repo.open(tmp_path / "home") as opened:
        yield opened
