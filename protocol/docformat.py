"""The package document format: one Markdown file that is the source of a package.

A document is YAML front matter between two ``---`` lines, followed by Markdown prose whose fenced
code blocks may carry a target path (```` ```python file=src/x.py ````). This module parses and
validates a document into a :class:`Document`; :mod:`dre.protocol.generator` turns that into files.
The normative rules, with the limits table, are in ``specs/doc-format.md``; every rule here that
rejects input says so with the 1-based line number of the offending document line.

Everything here is pure: no I/O, no clock, no locale, no hash-order dependence.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable, Iterator
from typing import Literal

import msgspec
import yaml
from markdown_it import MarkdownIt

from .errors import ValidationError
from .semver import (
    MAX_RANGE_CHARS,
    MAX_VERSION_CHARS,
    Comparator,
    SemVer,
    SemverRange,
    parse_range,
    parse_version,
)

__all__ = [
    "KNOWN_LICENSE_EXCEPTIONS",
    "KNOWN_LICENSE_IDS",
    "LIMITS",
    "MAX_BLOCKS",
    "MAX_CATEGORY_CHARS",
    "MAX_DEPENDENCIES",
    "MAX_DESCRIPTION_CHARS",
    "MAX_DIAGNOSTICS",
    "MAX_DOCUMENT_BYTES",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_FRONT_MATTER_BYTES",
    "MAX_KEYWORDS",
    "MAX_KEYWORD_CHARS",
    "MAX_LICENSE_CHARS",
    "MAX_NAME_CHARS",
    "MAX_PATH_BYTES",
    "MAX_PATH_DEPTH",
    "MAX_RANGE_CHARS",
    "MAX_SEGMENT_BYTES",
    "MAX_TOTAL_BYTES",
    "MAX_VERSION_CHARS",
    "MAX_YAML_DEPTH",
    "TEMPLATES",
    "CodeBlock",
    "Comparator",
    "Diagnostic",
    "Document",
    "DocumentError",
    "Metadata",
    "SemVer",
    "SemverRange",
    "Sink",
    "check_license",
    "check_name",
    "check_path",
    "collision_key",
    "normalize_text",
    "parse_document",
    "parse_range",
    "parse_version",
    "scan_document",
]

# --- limits (specs/doc-format.md §9; tests compare these with the spec's table) -------------------

MAX_DOCUMENT_BYTES = 1_048_576  # UTF-8 bytes of the whole document, before any normalization
MAX_FRONT_MATTER_BYTES = 65_536
MAX_YAML_DEPTH = 4  # the deepest legal front matter is 2 (a map of maps); 4 leaves headroom
MAX_BLOCKS = 10_000  # fenced blocks carrying file=
MAX_FILES = 1000  # files in the generated tree, template files included
MAX_FILE_BYTES = 1_048_576
MAX_TOTAL_BYTES = 4_194_304  # the generated tree, template files included
MAX_PATH_BYTES = 512
MAX_SEGMENT_BYTES = 255  # the common file-system limit for one name
MAX_PATH_DEPTH = 32
MAX_NAME_CHARS = 214  # npm's limit, scope included
# MAX_VERSION_CHARS (128) and MAX_RANGE_CHARS (256) live in .semver, which enforces them.
MAX_DESCRIPTION_CHARS = 512
MAX_KEYWORDS = 20
MAX_KEYWORD_CHARS = 50
MAX_CATEGORY_CHARS = 64
MAX_LICENSE_CHARS = 256
MAX_DEPENDENCIES = 200
MAX_DIAGNOSTICS = 200  # validate() stops collecting after this many, so a hostile input stays cheap

#: name -> value, in the order of the spec's table.
LIMITS: dict[str, int] = {
    "max_document_bytes": MAX_DOCUMENT_BYTES,
    "max_front_matter_bytes": MAX_FRONT_MATTER_BYTES,
    "max_yaml_depth": MAX_YAML_DEPTH,
    "max_blocks": MAX_BLOCKS,
    "max_files": MAX_FILES,
    "max_file_bytes": MAX_FILE_BYTES,
    "max_total_bytes": MAX_TOTAL_BYTES,
    "max_path_bytes": MAX_PATH_BYTES,
    "max_segment_bytes": MAX_SEGMENT_BYTES,
    "max_path_depth": MAX_PATH_DEPTH,
    "max_name_chars": MAX_NAME_CHARS,
    "max_version_chars": MAX_VERSION_CHARS,
    "max_description_chars": MAX_DESCRIPTION_CHARS,
    "max_keywords": MAX_KEYWORDS,
    "max_keyword_chars": MAX_KEYWORD_CHARS,
    "max_category_chars": MAX_CATEGORY_CHARS,
    "max_license_chars": MAX_LICENSE_CHARS,
    "max_dependencies": MAX_DEPENDENCIES,
    "max_range_chars": MAX_RANGE_CHARS,
    "max_diagnostics": MAX_DIAGNOSTICS,
}

TEMPLATES: tuple[str, ...] = ("files", "node-library", "python-library")

# --- public structs ---------------------------------------------------------------------------

Severity = Literal["error", "warning"]


class Diagnostic(msgspec.Struct, frozen=True):
    """One problem found in a document: 1-based line, severity and a one-line message."""

    line: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class DocumentError(ValidationError):
    """A document was rejected. ``str()`` is the first error ("line 12: ..."); ``diagnostics``
    holds every error and warning found before giving up."""

    def __init__(self, first: Diagnostic, diagnostics: tuple[Diagnostic, ...] = ()) -> None:
        super().__init__(str(first))
        self.line = first.line
        self.diagnostics = diagnostics or (first,)


class Metadata(msgspec.Struct, frozen=True, kw_only=True):
    """The validated front matter. Optional fields are empty when absent, so that two documents
    that say the same thing have equal metadata. ``dependencies`` is sorted by name."""

    name: str
    version: str
    license: str
    template: str = "files"
    description: str = ""
    keywords: tuple[str, ...] = ()
    category: str = ""
    dependencies: dict[str, str] = msgspec.field(default_factory=dict)


class CodeBlock(msgspec.Struct, frozen=True, kw_only=True):
    """A fenced block that is tangled into a file: its bytes, after base64 decoding if any."""

    path: str
    line: int  # the opening fence's line
    language: str
    binary: bool
    data: bytes


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed, valid document. ``body`` is the normalized text after the front matter and
    ``body_line`` the document line it starts on; ``lines`` maps front matter fields
    (``"version"``, ``"dependencies.NAME"``) to their lines, for errors found later."""

    metadata: Metadata
    body: str
    body_line: int
    blocks: tuple[CodeBlock, ...]
    lines: dict[str, int]
    warnings: tuple[Diagnostic, ...] = ()


# --- diagnostics sink -------------------------------------------------------------------------


class _TooMany(Exception):
    """Raised inside the parser once MAX_DIAGNOSTICS problems are collected."""


class Sink:
    """Collects diagnostics; the generator shares one with the parser so validate() sees all."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []
        self.errors = 0

    def error(self, line: int, message: str) -> None:
        """Record an error at ``line``."""
        self._add(Diagnostic(line, "error", message))
        self.errors += 1

    def warning(self, line: int, message: str) -> None:
        """Record a warning at ``line``."""
        self._add(Diagnostic(line, "warning", message))

    def _add(self, diagnostic: Diagnostic) -> None:
        if len(self.items) >= MAX_DIAGNOSTICS:
            # Placed at the last line reached, so that the real first error still sorts first.
            line = max(d.line for d in self.items)
            self.items.append(Diagnostic(line, "error", "too many problems; stopped collecting"))
            self.errors += 1
            raise _TooMany
        self.items.append(diagnostic)

    def sorted(self) -> list[Diagnostic]:
        """Diagnostics by line; within a line in the order found (sort is stable)."""
        return sorted(self.items, key=lambda d: d.line)

    def raise_first(self) -> None:
        """Raise a DocumentError for the first error by line, if there is any error."""
        ordered = self.sorted()
        for diagnostic in ordered:
            if diagnostic.severity == "error":
                raise DocumentError(diagnostic, tuple(ordered))


# --- names ------------------------------------------------------------------------------------

_SEGMENT = r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?"
_NAME_RE = re.compile(rf"(?:@({_SEGMENT})/)?({_SEGMENT})")
_RESERVED_NAMES = frozenset({"node_modules", "favicon.ico"})


def check_name(name: str) -> None:
    """Check a package name: ``name`` or ``@scope/name`` (rules in the spec, §4.1)."""
    if len(name) > MAX_NAME_CHARS:
        raise ValidationError(f"name is longer than {MAX_NAME_CHARS} characters")
    match = _NAME_RE.fullmatch(name)
    if match is None:
        hint = " (names are lower case)" if name.lower() != name else ""
        raise ValidationError(
            f"name {name!r} is not a package name: 'name' or '@scope/name', each part lower-case "
            f"a-z 0-9 . _ -, starting and ending with a letter or digit{hint}"
        )
    if match.group(2) in _RESERVED_NAMES:
        raise ValidationError(f"name {name!r} is reserved")


# --- SPDX licenses ----------------------------------------------------------------------------

#: The bundled SPDX license list (a common subset of SPDX License List 3.x, non-deprecated ids).
KNOWN_LICENSE_IDS: frozenset[str] = frozenset(
    [
        "0BSD",
        "AFL-3.0",
        "AGPL-3.0-only",
        "AGPL-3.0-or-later",
        "Apache-1.1",
        "Apache-2.0",
        "APSL-2.0",
        "Artistic-1.0",
        "Artistic-2.0",
        "BlueOak-1.0.0",
        "BSD-1-Clause",
        "BSD-2-Clause",
        "BSD-2-Clause-Patent",
        "BSD-3-Clause",
        "BSD-3-Clause-Clear",
        "BSD-4-Clause",
        "BSL-1.0",
        "CAL-1.0",
        "CC-BY-3.0",
        "CC-BY-4.0",
        "CC-BY-SA-3.0",
        "CC-BY-SA-4.0",
        "CC-BY-NC-4.0",
        "CC-BY-NC-SA-4.0",
        "CC-BY-ND-4.0",
        "CC0-1.0",
        "CDDL-1.0",
        "CDDL-1.1",
        "CECILL-2.1",
        "CPL-1.0",
        "ECL-2.0",
        "EFL-2.0",
        "EPL-1.0",
        "EPL-2.0",
        "EUPL-1.1",
        "EUPL-1.2",
        "GPL-2.0-only",
        "GPL-2.0-or-later",
        "GPL-3.0-only",
        "GPL-3.0-or-later",
        "HPND",
        "ISC",
        "LGPL-2.0-only",
        "LGPL-2.0-or-later",
        "LGPL-2.1-only",
        "LGPL-2.1-or-later",
        "LGPL-3.0-only",
        "LGPL-3.0-or-later",
        "LPPL-1.3c",
        "MIT",
        "MIT-0",
        "MPL-1.1",
        "MPL-2.0",
        "MPL-2.0-no-copyleft-exception",
        "MS-PL",
        "MS-RL",
        "MulanPSL-2.0",
        "NCSA",
        "ODbL-1.0",
        "OFL-1.1",
        "OpenSSL",
        "OSL-3.0",
        "PHP-3.01",
        "PostgreSQL",
        "PSF-2.0",
        "Python-2.0",
        "Ruby",
        "Sleepycat",
        "Unicode-3.0",
        "Unicode-DFS-2016",
        "Unlicense",
        "UPL-1.0",
        "W3C",
        "WTFPL",
        "X11",
        "Zlib",
        "ZPL-2.1",
    ]
)

#: Exceptions allowed after WITH.
KNOWN_LICENSE_EXCEPTIONS: frozenset[str] = frozenset(
    [
        "Autoconf-exception-3.0",
        "Bison-exception-2.2",
        "Classpath-exception-2.0",
        "Font-exception-2.0",
        "GCC-exception-3.1",
        "GPL-3.0-linking-exception",
        "LLVM-exception",
        "OpenJDK-assembly-exception-1.0",
        "Qt-GPL-exception-1.0",
        "Swift-exception",
        "Universal-FOSS-exception-1.0",
    ]
)

_DEPRECATED_LICENSES = {
    "GPL-2.0": "GPL-2.0-only or GPL-2.0-or-later",
    "GPL-3.0": "GPL-3.0-only or GPL-3.0-or-later",
    "LGPL-2.0": "LGPL-2.0-only or LGPL-2.0-or-later",
    "LGPL-2.1": "LGPL-2.1-only or LGPL-2.1-or-later",
    "LGPL-3.0": "LGPL-3.0-only or LGPL-3.0-or-later",
    "AGPL-3.0": "AGPL-3.0-only or AGPL-3.0-or-later",
}
_LICENSE_REF_RE = re.compile(r"LicenseRef-[A-Za-z0-9.-]+")
_LICENSE_TOKEN_RE = re.compile(r"\(|\)|[^\s()]+")
_LICENSE_BY_FOLD = {i.casefold(): i for i in KNOWN_LICENSE_IDS | KNOWN_LICENSE_EXCEPTIONS}


def _license_id(token: str, known: frozenset[str], what: str) -> None:
    if token in known or (what == "license" and _LICENSE_REF_RE.fullmatch(token)):
        return
    if what == "license" and token.rstrip("+") in _DEPRECATED_LICENSES:
        raise ValidationError(
            f"license {token!r} is a deprecated SPDX id; use "
            f"{_DEPRECATED_LICENSES[token.rstrip('+')]}"
        )
    proper = _LICENSE_BY_FOLD.get(token.casefold())
    if proper is not None:
        raise ValidationError(f"{what} {token!r}: write it as {proper!r}")
    raise ValidationError(
        f"{what} {token!r} is not in the bundled SPDX list (use an SPDX id such as 'MIT' or "
        "'Apache-2.0', or 'LicenseRef-...' for a custom license)"
    )


def check_license(expression: str) -> None:
    """Check an SPDX license expression: ids from the bundled list or ``LicenseRef-...``,
    combined with ``AND``, ``OR``, ``WITH`` and parentheses, written in canonical spacing."""
    if len(expression) > MAX_LICENSE_CHARS:
        raise ValidationError(f"license is longer than {MAX_LICENSE_CHARS} characters")
    tokens = _LICENSE_TOKEN_RE.findall(expression)
    canonical = " ".join(tokens).replace("( ", "(").replace(" )", ")")
    pos = 0
    depth = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def simple() -> None:
        nonlocal pos, depth
        token = peek()
        if token == "(":
            depth += 1
            if depth > 8:
                raise ValidationError("license expression is nested too deeply")
            pos += 1
            compound()
            if peek() != ")":
                raise ValidationError(f"license {expression!r}: missing ')'")
            pos += 1
            depth -= 1
            return
        if token is None or token in ("AND", "OR", "WITH", ")"):
            raise ValidationError(f"license {expression!r}: expected a license id")
        _license_id(token, KNOWN_LICENSE_IDS, "license")
        pos += 1
        if peek() == "WITH":
            pos += 1
            exception = peek()
            if exception is None:
                raise ValidationError(f"license {expression!r}: WITH needs an exception id")
            _license_id(exception, KNOWN_LICENSE_EXCEPTIONS, "license exception")
            pos += 1

    def compound() -> None:
        nonlocal pos
        simple()
        while peek() in ("AND", "OR"):
            pos += 1
            simple()

    compound()
    if pos != len(tokens):
        raise ValidationError(f"license {expression!r}: unexpected {tokens[pos]!r}")
    if canonical != expression:
        raise ValidationError(f"license {expression!r}: write it as {canonical!r}")


# --- paths ------------------------------------------------------------------------------------

# Characters Windows cannot store in a name; a package must unpack on every system.
_UNPORTABLE = frozenset('<>:"|?*')


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F


def check_path(path: str) -> None:
    """Check a ``file=`` target path (spec §5.3). Raises ValidationError naming the problem."""
    if not path:
        raise ValidationError("empty path")
    for ch in path:
        if _is_control(ch):
            raise ValidationError(f"path {path!r} contains a control character U+{ord(ch):04X}")
    if "\\" in path:
        raise ValidationError(f"path {path!r} contains a backslash; separate with '/'")
    if path.startswith("/"):
        raise ValidationError(f"path {path!r} is absolute; paths are relative to the package root")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise ValidationError(f"path {path!r} is longer than {MAX_PATH_BYTES} bytes")
    bad = sorted(set(path) & _UNPORTABLE)
    if bad:
        raise ValidationError(f"path {path!r} contains {bad[0]!r}, which Windows cannot store")
    segments = path.split("/")
    if len(segments) > MAX_PATH_DEPTH:
        raise ValidationError(f"path {path!r} is deeper than {MAX_PATH_DEPTH} segments")
    for segment in segments:
        if segment == "..":
            raise ValidationError(f"path {path!r} escapes the package root")
        if segment == "":
            raise ValidationError(f"path {path!r} has an empty segment")
        if segment == ".":
            raise ValidationError(f"path {path!r} has a '.' segment")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise ValidationError(f"path {path!r} has a name longer than {MAX_SEGMENT_BYTES} bytes")


def collision_key(path: str) -> str:
    """Key under which two paths collide: NFC-normalized, then case-folded."""
    return unicodedata.normalize("NFC", path).casefold()


# --- the parser -------------------------------------------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_FIELDS = (
    "name",
    "version",
    "description",
    "license",
    "keywords",
    "category",
    "dependencies",
    "template",
)
_CATEGORY_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_STR_TAG = "tag:yaml.org,2002:str"
_INFO_WORD_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)=(?:"([^"]*)"|([^\s"]\S*))|(\S+)')


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def normalize_text(text: str | bytes, sink: Sink) -> str | None:
    """Decode and normalize a document (spec §3): UTF-8, one leading BOM dropped, CRLF and CR to
    LF, a final LF added if missing. Returns None after recording a fatal error."""
    if isinstance(text, bytes):
        raw = text
        if len(raw) > MAX_DOCUMENT_BYTES:
            sink.error(1, f"document is larger than {MAX_DOCUMENT_BYTES} bytes")
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            sink.error(raw.count(b"\n", 0, exc.start) + 1, "document is not valid UTF-8")
            return None
    if len(text) > MAX_DOCUMENT_BYTES:  # no need to encode a huge text to know it is too big
        sink.error(1, f"document is larger than {MAX_DOCUMENT_BYTES} bytes")
        return None
    try:
        encoded_size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a str with lone surrogates is not Unicode text
        sink.error(_line_of(text, exc.start), "document contains a lone surrogate (not Unicode)")
        return None
    if encoded_size > MAX_DOCUMENT_BYTES:
        sink.error(1, f"document is larger than {MAX_DOCUMENT_BYTES} bytes")
        return None
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    return text


def _check_controls(text: str, sink: Sink) -> None:
    line, counted_to, last_line = 1, 0, 0
    for match in _CONTROL_RE.finditer(text):
        # Count lines incrementally: a line of a million control characters stays linear.
        line += text.count("\n", counted_to, match.start())
        counted_to = match.start()
        if line != last_line:  # one error per line is enough
            sink.error(
                line,
                f"control character U+{ord(match.group()):04X} (only tab and newline are allowed; "
                "carry binary data in a base64 block)",
            )
            last_line = line


def _yaml_line(error: yaml.YAMLError, yaml_text: str, first_line: int) -> int:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is not None:
        return int(mark.line) + first_line
    position = getattr(error, "position", None)  # ReaderError (bad characters)
    if isinstance(position, int):
        return _line_of(yaml_text, position) - 1 + first_line
    return first_line


def _check_events(yaml_text: str, first_line: int, sink: Sink) -> bool:
    """Reject anchors, aliases, tags, directives and deep nesting before composing: they make
    one document mean different things to different YAML libraries, or cost unbounded work."""
    depth = 0
    ok = True
    for event in yaml.parse(yaml_text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + first_line
        if isinstance(event, yaml.AliasEvent):
            sink.error(line, f"YAML alias '*{event.anchor}' is not allowed in front matter")
            ok = False
        elif isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            sink.error(line, f"YAML anchor '&{event.anchor}' is not allowed in front matter")
            ok = False
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)) and event.tag:
            sink.error(line, f"YAML tag {event.tag!r} is not allowed in front matter")
            ok = False
        if isinstance(event, yaml.DocumentStartEvent) and (event.version or event.tags):
            sink.error(line, "YAML directives are not allowed in front matter")
            ok = False
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                sink.error(line, f"front matter is nested deeper than {MAX_YAML_DEPTH} levels")
                return False
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return ok


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = str(node.tag).rsplit(":", 1)[-1]
    return {"null": "empty", "bool": "a boolean", "int": "a number", "float": "a number"}.get(
        tag, f"a {tag}"
    )


def _string(node: yaml.Node, field: str, first_line: int, sink: Sink) -> str | None:
    line = node.start_mark.line + first_line
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        return str(node.value)
    if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null":
        raw = str(node.value)
        sink.error(
            line,
            f"{field} must be a string, but YAML reads {raw!r} as {_kind(node)}; "
            f'quote it: {field.rsplit(".", 1)[-1]}: "{raw}"',
        )
    else:
        sink.error(line, f"{field} must be a string, not {_kind(node)}")
    return None


def _single_line(value: str, field: str, line: int, limit: int, sink: Sink) -> bool:
    if len(value) > limit:
        sink.error(line, f"{field} is longer than {limit} characters")
        return False
    if "\n" in value or any(_is_control(ch) for ch in value):
        sink.error(line, f"{field} must be a single line without control characters")
        return False
    if value != value.strip():
        sink.error(line, f"{field} has leading or trailing whitespace")
        return False
    return True


def _front_matter(
    yaml_text: str, first_line: int, sink: Sink
) -> tuple[dict[str, object], dict[str, int]] | None:
    """Parse and type-check the front matter; returns raw field values and their lines."""
    try:
        if not _check_events(yaml_text, first_line, sink):
            return None
        root = yaml.compose(yaml_text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        sink.error(
            _yaml_line(exc, yaml_text, first_line), f"front matter is not valid YAML: {problem}"
        )
        return None
    if root is None:
        sink.error(
            first_line - 1, "front matter is empty; it needs at least name, version, license"
        )
        return None
    if not isinstance(root, yaml.MappingNode):
        sink.error(first_line, "front matter must be a YAML mapping of field: value")
        return None
    values: dict[str, object] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + first_line
        if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG):
            sink.error(line, f"front matter keys must be strings, not {_kind(key_node)}")
            continue
        key = str(key_node.value)
        if key in lines:
            # PyYAML silently keeps the last of duplicate keys; a document must say one thing.
            sink.error(line, f"duplicate key {key!r} (first on line {lines[key]})")
            continue
        lines[key] = line
        if key not in _FIELDS:
            sink.error(line, f"unknown front matter field {key!r} (known: {', '.join(_FIELDS)})")
            continue
        value: object = None
        if key == "keywords":
            value = _keywords(value_node, first_line, sink)
        elif key == "dependencies":
            value = _dependencies(value_node, first_line, sink, lines)
        else:
            value = _string(value_node, key, first_line, sink)
        if value is not None:
            values[key] = value
    return values, lines


def _keywords(node: yaml.Node, first_line: int, sink: Sink) -> tuple[str, ...] | None:
    line = node.start_mark.line + first_line
    if not isinstance(node, yaml.SequenceNode):
        sink.error(line, f"keywords must be a list of strings, not {_kind(node)}")
        return None
    if len(node.value) > MAX_KEYWORDS:
        sink.error(line, f"more than {MAX_KEYWORDS} keywords")
        return None
    result: list[str] = []
    ok = True
    for item in node.value:
        item_line = item.start_mark.line + first_line
        word = _string(item, "keyword", first_line, sink)
        if word is None:
            ok = False
            continue
        if not word:
            sink.error(item_line, "keyword is empty")
            ok = False
        elif not _single_line(word, "keyword", item_line, MAX_KEYWORD_CHARS, sink):
            ok = False
        elif word in result:
            sink.error(item_line, f"duplicate keyword {word!r}")
            ok = False
        else:
            result.append(word)
    return tuple(result) if ok else None


def _dependencies(
    node: yaml.Node, first_line: int, sink: Sink, lines: dict[str, int]
) -> dict[str, str] | None:
    line = node.start_mark.line + first_line
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return {}  # `dependencies:` with nothing after it: none
    if not isinstance(node, yaml.MappingNode):
        sink.error(line, f"dependencies must be a mapping of name: range, not {_kind(node)}")
        return None
    if len(node.value) > MAX_DEPENDENCIES:
        sink.error(line, f"more than {MAX_DEPENDENCIES} dependencies")
        return None
    result: dict[str, str] = {}
    ok = True
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + first_line
        name = _string(key_node, "dependency name", first_line, sink)
        rng = _string(value_node, "dependency range", first_line, sink)
        if name is None or rng is None:
            ok = False
            continue
        if f"dependencies.{name}" in lines:
            sink.error(key_line, f"duplicate dependency {name!r}")
            ok = False
            continue
        lines[f"dependencies.{name}"] = key_line
        try:
            check_name(name)
            parse_range(rng)
        except ValidationError as exc:
            sink.error(key_line, f"dependency {name!r}: {exc}")
            ok = False
            continue
        result[name] = rng
    return dict(sorted(result.items())) if ok else None


def _metadata(values: dict[str, object], lines: dict[str, int], sink: Sink) -> Metadata | None:
    errors_before = sink.errors
    fm_line = 1

    def required(field: str) -> str | None:
        if field not in values:
            if field not in lines:
                sink.error(fm_line, f"front matter has no {field!r} field")
            return None
        value = values[field]
        assert isinstance(value, str)
        return value

    def required_and_checked(field: str, check: Callable[[str], object]) -> str | None:
        value = required(field)
        if value is not None:
            try:
                check(value)
            except ValidationError as exc:
                sink.error(lines[field], str(exc))
        return value

    name = required_and_checked("name", check_name)
    version = required_and_checked("version", parse_version)
    license_ = required_and_checked("license", check_license)
    template = values.get("template")
    if template is None and "template" not in lines:
        sink.warning(fm_line, "no template; using 'files' (write template: files to say so)")
        template = "files"
    if isinstance(template, str) and template not in TEMPLATES:
        sink.error(
            lines["template"], f"unknown template {template!r} (known: {', '.join(TEMPLATES)})"
        )
    description = values.get("description", "")
    assert isinstance(description, str)
    if "description" not in lines:
        sink.warning(fm_line, "no description")
    elif description:
        _single_line(description, "description", lines["description"], MAX_DESCRIPTION_CHARS, sink)
    category = values.get("category", "")
    assert isinstance(category, str)
    if category and len(category) > MAX_CATEGORY_CHARS:
        sink.error(lines["category"], f"category is longer than {MAX_CATEGORY_CHARS} characters")
    elif category and not _CATEGORY_RE.fullmatch(category):
        sink.error(
            lines["category"], f"category {category!r} must be lower-case words joined by '-'"
        )
    dependencies = values.get("dependencies", {})
    assert isinstance(dependencies, dict)
    if name is not None and name in dependencies:
        sink.error(lines[f"dependencies.{name}"], "a package cannot depend on itself")
    keywords = values.get("keywords", ())
    assert isinstance(keywords, tuple)
    if sink.errors != errors_before or name is None or version is None or license_ is None:
        return None
    assert isinstance(template, str)
    return Metadata(
        name=name,
        version=version,
        license=license_,
        template=template,
        description=description,
        keywords=keywords,
        category=category,
        dependencies=dependencies,
    )


# Block structure only: inline parsing (emphasis, links) cannot create or hide a fence, and on
# hostile input it is where the parser spends its time.
_MARKDOWN = MarkdownIt("commonmark").disable(["inline", "text_join"])


def _fence_closed(body_lines: list[str], end: int, markup: str) -> bool:
    if end < 1 or end > len(body_lines):
        return False
    last = body_lines[end - 1]
    pattern = rf"[ \t>]*{re.escape(markup[0])}{{{len(markup)},}}[ \t]*"
    return re.fullmatch(pattern, last) is not None


def _info_words(info: str) -> Iterator[tuple[str | None, str]]:
    """Split an info string into (attribute, value) pairs; bare words have attribute None."""
    for match in _INFO_WORD_RE.finditer(info):
        if match.group(4) is not None:
            yield None, match.group(4)
        else:
            yield match.group(1), match.group(2) if match.group(2) is not None else match.group(3)


def _blocks(body: str, body_line: int, sink: Sink) -> list[CodeBlock]:
    """Find the fenced blocks carrying file= with markdown-it, so that fences in lists, quotes and
    tilde fences are found exactly as a CommonMark renderer sees them."""
    body_lines = body.split("\n")
    blocks: list[CodeBlock] = []
    seen: dict[str, tuple[str, int]] = {}  # collision key -> (path as first written, line)
    dirs: dict[str, tuple[str, int]] = {}  # collision key of every parent directory
    sizes: dict[str, int] = {}
    for token in _MARKDOWN.parse(body):
        if token.type != "fence" or token.map is None:
            continue
        line = token.map[0] + body_line
        info = token.info.strip()
        words = list(_info_words(info))
        targets = [value for attr, value in words if attr == "file"]
        if any(attr is None and value.startswith("file=") for attr, value in words):
            sink.error(line, "file= needs a path")
            continue
        if not targets:
            continue
        if len(targets) > 1:
            sink.error(line, "a block has more than one file= attribute")
            continue
        if len(blocks) >= MAX_BLOCKS:
            sink.error(line, f"more than {MAX_BLOCKS} blocks carry file=")
            break
        path = targets[0]
        try:
            check_path(path)
        except ValidationError as exc:
            sink.error(line, str(exc))
            continue
        if not _fence_closed(body_lines, token.map[1], token.markup):
            sink.warning(line, "this fence is never closed; it runs to the end of its container")
        language = words[0][1] if words and words[0][0] is None else ""
        binary = language == "base64"
        if binary:
            data = _decode_base64(token.content, line, sink)
            if data is None:
                continue
        else:
            data = token.content.encode("utf-8")
        if not _register(path, line, seen, dirs, sink):
            continue
        if path not in sizes and len(sizes) >= MAX_FILES:
            sink.error(line, f"more than {MAX_FILES} files")
            continue
        sizes[path] = sizes.get(path, 0) + len(data)
        if sizes[path] > MAX_FILE_BYTES:
            sink.error(line, f"file {path!r} is larger than {MAX_FILE_BYTES} bytes")
            continue
        blocks.append(CodeBlock(path=path, line=line, language=language, binary=binary, data=data))
    return blocks


def _register(
    path: str,
    line: int,
    seen: dict[str, tuple[str, int]],
    dirs: dict[str, tuple[str, int]],
    sink: Sink,
) -> bool:
    """Record a path; refuse case/NFC collisions and file-versus-directory clashes."""
    key = collision_key(path)
    if key in seen:
        first, first_line = seen[key]
        if first == path:
            return True  # another block for the same file: concatenated
        how = (
            "the same name in another Unicode normalization form"
            if unicodedata.normalize("NFC", first) == unicodedata.normalize("NFC", path)
            else "the names differ only in case"
        )
        sink.error(line, f"path {path!r} collides with {first!r} (line {first_line}): {how}")
        return False
    if key in dirs:
        sink.error(line, f"path {path!r} is a directory of {dirs[key][0]!r} (line {dirs[key][1]})")
        return False
    segments = path.split("/")
    prefixes = ["/".join(segments[:i]) for i in range(1, len(segments))]
    for prefix in prefixes:
        pkey = collision_key(prefix)
        if pkey in seen:
            sink.error(
                line,
                f"path {path!r} needs {prefix!r} to be a directory, but it is a file "
                f"(line {seen[pkey][1]})",
            )
            return False
        if pkey in dirs and not dirs[pkey][0].startswith(prefix + "/") and dirs[pkey][0] != prefix:
            other = dirs[pkey][0]
            sink.error(
                line,
                f"directory {prefix!r} collides with {other!r} (line {dirs[pkey][1]}) "
                "ignoring case and Unicode normalization",
            )
            return False
    seen[key] = (path, line)
    for prefix in prefixes:
        dirs.setdefault(collision_key(prefix), (prefix, line))
    return True


_BASE64_WS = re.compile(r"[ \t\n]")


def _decode_base64(content: str, line: int, sink: Sink) -> bytes | None:
    """Strict RFC 4648 base64: standard alphabet, padding required, only canonical encodings
    (unused bits zero), so one file has exactly one spelling in a document."""
    compact = _BASE64_WS.sub("", content)
    try:
        data = base64.b64decode(compact.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        sink.error(line, "base64 block is not valid base64 (RFC 4648 alphabet, padded)")
        return None
    if base64.b64encode(data).decode("ascii") != compact:
        sink.error(line, "base64 block is not canonical base64 (non-zero padding bits)")
        return None
    return data


def scan_document(text: str | bytes, sink: Sink) -> Document | None:
    """Parse a document, recording every problem in ``sink``. Returns the Document when there was
    no error. :func:`parse_document` is the raising form."""
    try:
        return _scan(text, sink)
    except _TooMany:
        return None


def _scan(text: str | bytes, sink: Sink) -> Document | None:
    normalized = normalize_text(text, sink)
    if normalized is None:
        return None
    _check_controls(normalized, sink)
    lines = normalized.split("\n")
    if lines[0] != "---":
        sink.error(
            1, "a document starts with front matter: a line '---', YAML fields, a line '---'"
        )
        return None
    try:
        close = lines.index("---", 1)
    except ValueError:
        sink.error(1, "front matter is not closed by a line '---'")
        return None
    yaml_text = "\n".join(lines[1:close]) + "\n"
    body_line = close + 2
    body = "\n".join(lines[close + 1 :])
    if len(yaml_text.encode("utf-8")) > MAX_FRONT_MATTER_BYTES:
        sink.error(2, f"front matter is larger than {MAX_FRONT_MATTER_BYTES} bytes")
        parsed = None
    else:
        parsed = _front_matter(yaml_text, 2, sink)
    blocks = _blocks(body, body_line, sink)
    if parsed is None:
        return None
    values, field_lines = parsed
    metadata = _metadata(values, field_lines, sink)
    if metadata is None or sink.errors:
        return None
    warnings = tuple(d for d in sink.sorted() if d.severity == "warning")
    return Document(
        metadata=metadata,
        body=body,
        body_line=body_line,
        blocks=tuple(blocks),
        lines=field_lines,
        warnings=warnings,
    )


def parse_document(text: str | bytes) -> Document:
    """Parse and validate a document. Raises :class:`DocumentError` (a ValidationError) whose
    message is the first error by line, e.g. ``"line 12: path '../x' escapes the package root"``."""
    sink = Sink()
    document = scan_document(text, sink)
    sink.raise_first()
    if document is None:  # only when MAX_DIAGNOSTICS warnings were hit without an error
        raise DocumentError(Diagnostic(1, "error", "too many problems in this document"))
    return document
