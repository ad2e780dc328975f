"""Template outputs of generator 1.0.0: README.md, pyproject.toml, package.json.

Each output is a pure function of the parsed document, written by hand rather than by a TOML or
JSON library's pretty-printer so that its bytes are fixed by specs/doc-format.md §7 and cannot
drift with a library release. Template files are built from validated metadata, so no string that
reaches them contains a control character.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from .docformat import Document, Metadata, SemVer, SemverRange, Sink, parse_range, parse_version
from .errors import ValidationError

__all__ = [
    "PYTHON_BUILD_BACKEND",
    "PYTHON_BUILD_REQUIRES",
    "TEMPLATE_OUTPUTS",
    "package_json",
    "pyproject_toml",
    "python_name",
    "range_to_pep440",
    "readme",
    "render",
    "semver_to_pep440",
]

PYTHON_BUILD_REQUIRES = "setuptools>=77"  # the first setuptools that takes an SPDX `license` string
PYTHON_BUILD_BACKEND = "setuptools.build_meta"

#: The files each template adds, besides the tangled blocks.
TEMPLATE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "files": (),
    "node-library": ("README.md", "package.json"),
    "python-library": ("README.md", "pyproject.toml"),
}


def readme(document: Document) -> bytes:
    """The prose of the document (its body, fenced blocks kept verbatim) without leading and
    trailing blank lines, ending in one LF; empty when the body is blank."""
    lines = document.body.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


# --- Python --------------------------------------------------------------------------------------

_PEP440_PRE = {
    "alpha": "a",
    "a": "a",
    "beta": "b",
    "b": "b",
    "rc": "rc",
    "c": "rc",
    "pre": "rc",
    "preview": "rc",
}
_PRE_WORD_RE = re.compile(r"([a-z]+)([0-9]*)")
_LOCAL_RE = re.compile(r"[a-z0-9]+(?:\.[a-z0-9]+)*")


def python_name(name: str) -> str:
    """The Python distribution name of a package: ``@scope/name`` becomes ``scope-name``, then the
    PEP 503 normalization (runs of ``-_.`` to one ``-``)."""
    if name.startswith("@"):
        name = name[1:].replace("/", "-", 1)
    return re.sub(r"[-_.]+", "-", name).lower()


def semver_to_pep440(version: SemVer) -> str:
    """The PEP 440 normalized form of a SemVer version (spec §7.2). Raises ValidationError for a
    prerelease PEP 440 cannot express."""
    text = f"{version.major}.{version.minor}.{version.patch}"
    pre = version.prerelease
    if pre:
        word, number = "", "0"
        if len(pre) == 1 and (match := _PRE_WORD_RE.fullmatch(pre[0])) is not None:
            word, number = match.group(1), match.group(2) or "0"
        elif len(pre) == 2 and pre[1].isdigit():
            word, number = pre[0], pre[1]
        number = str(int(number))
        if word == "dev":
            text += f".dev{number}"
        elif word in _PEP440_PRE:
            text += f"{_PEP440_PRE[word]}{number}"
        else:
            raise ValidationError(
                f"prerelease '-{'.'.join(pre)}' has no PEP 440 form; use alpha.N, beta.N, rc.N "
                "or dev.N"
            )
    if version.build:
        local = ".".join(version.build).lower().replace("-", ".")
        if not _LOCAL_RE.fullmatch(local):
            raise ValidationError(
                f"build metadata '+{'.'.join(version.build)}' has no PEP 440 form"
            )
        text += "+" + ".".join(str(int(s)) if s.isdigit() else s for s in local.split("."))
    return text


def range_to_pep440(rng: SemverRange) -> str:
    """A PEP 440 specifier equivalent to a semver range: the desugared comparators joined by
    commas (empty for ``*``). Ranges with ``||`` or prerelease bounds have no equivalent."""
    if len(rng.sets) != 1:
        raise ValidationError(f"range {rng.text!r} uses '||', which PEP 440 cannot express")
    clauses = []
    for comparator in rng.sets[0]:
        if comparator.version.prerelease:
            raise ValidationError(
                f"range {rng.text!r} has a prerelease bound, which has no exact PEP 440 form"
            )
        op = "==" if comparator.op == "=" else comparator.op
        clauses.append(f"{op}{comparator.version}")
    return ",".join(clauses)


def _toml_string(value: str) -> str:
    # json.dumps writes a valid TOML basic string for control-free text; ensure_ascii=False keeps
    # UTF-8 readable. Control characters never get here (the parser rejects them).
    return json.dumps(value, ensure_ascii=False)


def _toml_array(values: list[str]) -> str:
    if not values:
        return "[]"
    return "[\n" + "".join(f"    {_toml_string(v)},\n" for v in values) + "]"


def pyproject_toml(document: Document, sink: Sink) -> bytes | None:
    """pyproject.toml (PEP 517/518/621/639) for python-library; None after recording errors."""
    meta = document.metadata
    errors_before = sink.errors
    try:
        version = semver_to_pep440(parse_version(meta.version))
    except ValidationError as exc:
        sink.error(document.lines.get("version", 1), f"python-library: version: {exc}")
        version = ""
    requirements: dict[str, str] = {}
    origin: dict[str, str] = {}
    for dep, text in meta.dependencies.items():
        line = document.lines.get(f"dependencies.{dep}", 1)
        py = python_name(dep)
        if py in origin:
            sink.error(
                line,
                f"python-library: dependencies {origin[py]!r} and {dep!r} are both "
                f"the Python distribution {py!r}",
            )
            continue
        origin[py] = dep
        try:
            requirements[py] = py + range_to_pep440(parse_range(text))
        except ValidationError as exc:
            sink.error(line, f"python-library: dependency {dep!r}: {exc}")
    if sink.errors != errors_before:
        return None
    out = [
        "[build-system]",
        f"requires = {_toml_array([PYTHON_BUILD_REQUIRES])}",
        f"build-backend = {_toml_string(PYTHON_BUILD_BACKEND)}",
        "",
        "[project]",
        f"name = {_toml_string(python_name(meta.name))}",
        f"version = {_toml_string(version)}",
    ]
    if meta.description:
        out.append(f"description = {_toml_string(meta.description)}")
    out.append('readme = "README.md"')
    out.append(f"license = {_toml_string(meta.license)}")
    if meta.keywords:
        out.append(f"keywords = {_toml_array(list(meta.keywords))}")
    # Sorted by distribution name: the canonical order, whatever order the document used.
    out.append(f"dependencies = {_toml_array([requirements[k] for k in sorted(requirements)])}")
    return ("\n".join(out) + "\n").encode("utf-8")


# --- Node.js -------------------------------------------------------------------------------------


def package_json(document: Document) -> bytes:
    """package.json for node-library: fixed key order, 2-space indent, LF, final newline; equal to
    ``JSON.stringify(value, null, 2) + "\\n"`` in JavaScript."""
    meta: Metadata = document.metadata
    value: dict[str, object] = {"name": meta.name, "version": meta.version}
    if meta.description:
        value["description"] = meta.description
    if meta.keywords:
        value["keywords"] = list(meta.keywords)
    value["license"] = meta.license
    if meta.dependencies:
        value["dependencies"] = {k: meta.dependencies[k] for k in sorted(meta.dependencies)}
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# --- dispatch ------------------------------------------------------------------------------------


def _render_files(document: Document, sink: Sink) -> dict[str, bytes] | None:
    return {}


def _readme_checked(document: Document, sink: Sink) -> bytes:
    text = readme(document)
    if not text:
        sink.warning(document.body_line - 1, "the document has no prose: README.md will be empty")
    return text


def _render_python(document: Document, sink: Sink) -> dict[str, bytes] | None:
    pyproject = pyproject_toml(document, sink)
    if pyproject is None:
        return None
    return {"README.md": _readme_checked(document, sink), "pyproject.toml": pyproject}


def _render_node(document: Document, sink: Sink) -> dict[str, bytes] | None:
    return {"README.md": _readme_checked(document, sink), "package.json": package_json(document)}


_RENDERERS: dict[str, Callable[[Document, Sink], dict[str, bytes] | None]] = {
    "files": _render_files,
    "node-library": _render_node,
    "python-library": _render_python,
}


def render(document: Document, sink: Sink) -> dict[str, bytes] | None:
    """The files the document's template adds (path -> bytes); None after recording errors."""
    return _RENDERERS[document.metadata.template](document, sink)
