"""Package documents rendered for the browser: Markdown without raw HTML, code highlighted
server-side, unified diffs split into classed lines.

A published document is untrusted input. Nothing in it may become markup of its own:

- raw HTML is off in the parser (``<script>``, ``<iframe>``, ``<img onerror=…>`` come out as text);
- a link survives only with a relative URL or an ``http``, ``https`` or ``mailto`` scheme
  (so ``javascript:``, ``vbscript:``, ``data:`` and anything unknown never become an ``href``);
- a Markdown image becomes a plain link to its URL (no ``<img>``: the page loads nothing the
  document names);
- code goes through Pygments, which escapes it, or through escaping when it is too large to
  highlight cheaply.

The node also sends a Content-Security-Policy without inline scripts, so even a mistake here would
not run (``pages.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from typing import Any
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.common.utils import unescapeAll
from markdown_it.token import Token
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.util import ClassNotFound

__all__ = [
    "HIGHLIGHT_MAX_CHARS",
    "DiffLine",
    "diff_lines",
    "is_safe_url",
    "pygments_css",
    "render_markdown",
]

#: Code blocks longer than this are escaped but not highlighted (Pygments' regex lexers are
#: linear in practice, but a 1 MiB block would still take seconds to colour).
HIGHLIGHT_MAX_CHARS = 100_000
#: The CSS class Pygments' output is wrapped in (``static/pygments.css`` styles it).
HIGHLIGHT_CLASS = "hl"

_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
_SCHEME_RE = re.compile(r"^([a-z][a-z0-9+.\-]*):")
# Browsers drop ASCII whitespace and control characters inside a scheme ("java\tscript:"), so
# the check looks at the URL with them removed.
_IGNORED_IN_SCHEME_RE = re.compile(r"[\x00-\x20\x7f]+")
_FILE_ATTR_RE = re.compile(r'(?:^|\s)file=(?:"([^"]*)"|(\S+))')
_LANGUAGE_RE = re.compile(r"[A-Za-z0-9_+#.\-]{1,40}")

_FORMATTER = HtmlFormatter(cssclass=HIGHLIGHT_CLASS)


def is_safe_url(url: str) -> bool:
    """Whether ``url`` may become an ``href``: relative, or http(s)/mailto."""
    # Percent-decoded too: the parser's normalization turns a tab into "%09", and a URL that
    # only a lenient reader would take for javascript: is still refused.
    squeezed = _IGNORED_IN_SCHEME_RE.sub("", unquote(url)).lower()
    match = _SCHEME_RE.match(squeezed)
    if match is None:
        # No scheme: a relative path, a fragment or a query. A colon before the first slash
        # would make a browser read a scheme, and the regex above would have caught it.
        return True
    return match.group(1) in _SAFE_SCHEMES


def _lexer(language: str) -> Lexer:
    if _LANGUAGE_RE.fullmatch(language):
        try:
            return get_lexer_by_name(language)
        except ClassNotFound:
            pass
    return TextLexer()


def _code_block(code: str, info: str) -> str:
    words = info.split()
    language = words[0] if words and "=" not in words[0] else ""
    path_match = _FILE_ATTR_RE.search(info)
    path = (path_match.group(1) or path_match.group(2)) if path_match else ""
    if len(code) <= HIGHLIGHT_MAX_CHARS:
        body = highlight(code, _lexer(language), _FORMATTER)
    else:
        body = f'<div class="{HIGHLIGHT_CLASS}"><pre>{escape(code)}</pre></div>\n'
    caption = f'<div class="code-path">{escape(path)}</div>' if path else ""
    lang = f' data-lang="{escape(language)}"' if language else ""
    return f'<figure class="code"{lang}>{caption}{body}</figure>\n'


def _fence(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    return _code_block(token.content, unescapeAll(token.info).strip())


def _code_indented(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    return _code_block(tokens[idx].content, "")


def _image(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    # An image becomes a link to it: the page never loads what a document points at.
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    alt = self.renderInlineAsText(token.children or [], options, env) or src
    if not src or not is_safe_url(src):
        return f'<span class="image-alt">{escape(alt)}</span>'
    return (f'<a class="image-link" href="{escape(src)}" rel="nofollow noopener noreferrer">'
            f'[image: {escape(alt)}]</a>')


def _link_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    href = str(token.attrGet("href") or "")
    if _SCHEME_RE.match(href.lower()):
        token.attrSet("rel", "nofollow noopener noreferrer")
    rendered: str = self.renderToken(tokens, idx, options, env)
    return rendered


def _make_parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    # Called on every link and image URL after normalization; a refused URL is dropped and the
    # link text stays as text.
    md.validateLink = is_safe_url  # type: ignore[method-assign]
    md.add_render_rule("fence", _fence)
    md.add_render_rule("code_block", _code_indented)
    md.add_render_rule("image", _image)
    md.add_render_rule("link_open", _link_open)
    return md


_PARSER = _make_parser()


def render_markdown(text: str) -> Markup:
    """``text`` (CommonMark + tables) as HTML that carries no markup of the document's own."""
    # Safe to mark: the parser escapes all text and the rules above build only escaped parts.
    return Markup(_PARSER.render(text))


def pygments_css() -> str:
    """The stylesheet for highlighted code (served as ``/static/pygments.css``)."""
    return str(_FORMATTER.get_style_defs(f".{HIGHLIGHT_CLASS}"))


class DiffLine:
    """One line of a unified diff and how to show it (``add``, ``del``, ``hunk``, ``meta`` or
    ``ctx``)."""

    __slots__ = ("kind", "text")

    def __init__(self, kind: str, text: str) -> None:
        self.kind = kind
        self.text = text


def diff_lines(diff: str, *, max_lines: int) -> tuple[list[DiffLine], bool]:
    """A unified diff as classed lines (the template escapes the text); True if cut short."""
    out: list[DiffLine] = []
    lines = diff.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines[:max_lines]:
        if line.startswith(("+++", "---")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append(DiffLine(kind, line))
    return out, len(lines) > max_lines
