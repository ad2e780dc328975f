"""Document parsing and validation: every rejection rule with its line number, the YAML
restrictions, names, versions, ranges, licenses, paths, limits against the spec, and fuzzing."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import yaml
from dre.protocol import docformat
from dre.protocol.docformat import (
    LIMITS,
    DocumentError,
    check_license,
    check_name,
    parse_document,
    parse_range,
    parse_version,
)
from dre.protocol.errors import ValidationError
from dre.protocol.generator import generate, validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SPEC = Path(__file__).resolve().parents[2] / "specs" / "doc-format.md"

HEAD = "---\nname: pkg\nversion: 1.0.0\ndescription: d\nlicense: MIT\ntemplate: files\n---\n"
# HEAD is 7 lines; the body starts on line 8.


def doc(body: str = "", head: str = HEAD) -> str:
    return head + body


def error_of(text: str | bytes) -> str:
    with pytest.raises(ValidationError) as info:
        generate(text)
    return str(info.value)


def test_valid_document_parses() -> None:
    document = parse_document(doc("\n```py file=a.py\nx = 1\n```\n"))
    assert document.metadata.name == "pkg"
    assert document.metadata.template == "files"
    assert [(b.path, b.line, b.data) for b in document.blocks] == [("a.py", 9, b"x = 1\n")]
    assert document.body_line == 8


# --- rejection rules, each with its line ----------------------------------------------------------

REJECTIONS: list[tuple[str, str | bytes, int, str]] = [
    ("no front matter", "# hi\n", 1, "starts with front matter"),
    ("unclosed front matter", "---\nname: x\n", 1, "not closed"),
    ("empty front matter", "---\n---\n", 1, "front matter is empty"),
    ("front matter not a mapping", "---\n- a\n---\n", 2, "must be a YAML mapping"),
    ("invalid yaml", "---\nname: [x\nversion: 1.0.0\n---\n", 3, "not valid YAML"),
    ("float version", "---\nname: x\nversion: 1.0\nlicense: MIT\n---\n", 3, 'version: "1.0"'),
    ("int version", "---\nname: x\nversion: 1\nlicense: MIT\n---\n", 3, "quote it"),
    ("bool category", HEAD.replace("template", "category: no\ntemplate"), 6, "a boolean"),
    ("date description", HEAD.replace("d\n", "2024-01-01\n"), 4, "a timestamp"),
    ("null license", HEAD.replace("MIT", "~"), 5, "must be a string"),
    ("duplicate key", HEAD.replace("template: files", "template: files\nname: y"), 7, "duplicate"),
    ("anchor", HEAD.replace("name: pkg", "name: &a pkg"), 2, "anchor"),
    ("alias", HEAD.replace("d\n", "*a\n").replace("name: pkg", "name: &a pkg"), 2, "anchor"),
    ("tag", HEAD.replace("name: pkg", "name: !!str pkg"), 2, "tag"),
    ("custom tag", HEAD.replace("d\n", "!foo d\n"), 4, "tag"),
    ("merge key", HEAD.replace("name: pkg", "<<: {a: 1}\nname: pkg"), 2, "keys must be strings"),
    ("int key", HEAD.replace("name: pkg", "1: x\nname: pkg"), 2, "keys must be strings"),
    ("unknown field", HEAD.replace("name: pkg", "nmae: pkg\nname: pkg"), 2, "unknown"),
    ("deep yaml", HEAD.replace("d\n", "[[[[[1]]]]]\n"), 4, "nested deeper"),
    ("missing version", "---\nname: x\nlicense: MIT\n---\n", 1, "no 'version'"),
    ("bad name", HEAD.replace("pkg", "Pkg"), 2, "lower case"),
    ("bad version", HEAD.replace("1.0.0", "01.0.0"), 3, "SemVer"),
    ("v prefix", HEAD.replace("1.0.0", "v1.0.0"), 3, "SemVer"),
    ("bad license", HEAD.replace("MIT", "mit"), 5, "'MIT'"),
    ("deprecated license", HEAD.replace("MIT", "GPL-3.0"), 5, "GPL-3.0-only"),
    ("unknown template", HEAD.replace("files", "rust-crate"), 6, "unknown template"),
    ("multi-line description", HEAD.replace("d\n", "|\n  a\n  b\n"), 4, "single line"),
    ("keywords not list", HEAD.replace("template", "keywords: a\ntemplate"), 6, "list"),
    ("duplicate keyword", HEAD.replace("template", "keywords: [a, a]\ntemplate"), 6, "duplicate"),
    ("bad category", HEAD.replace("template", "category: Web Dev\ntemplate"), 6, "lower-case"),
    (
        "bad range",
        HEAD.replace("template", "dependencies:\n  a: nope\ntemplate"),
        7,
        "semver range",
    ),
    ("numeric range", HEAD.replace("template", "dependencies:\n  a: 1.2\ntemplate"), 7, "quote"),
    (
        "self dependency",
        HEAD.replace("template", "dependencies:\n  pkg: '1'\ntemplate"),
        7,
        "itself",
    ),
    ("dep name", HEAD.replace("template", "dependencies:\n  A: '1'\ntemplate"), 7, "not a package"),
    ("traversal", doc("\n```t file=../x\n```\n"), 9, "escapes the package root"),
    ("inner traversal", doc("\n```t file=a/../../x\n```\n"), 9, "escapes the package root"),
    ("absolute", doc("\n```t file=/etc/passwd\n```\n"), 9, "absolute"),
    ("backslash", doc("\n```t file=a\\b\n```\n"), 9, "backslash"),
    ("drive letter", doc("\n```t file=C:/x\n```\n"), 9, "Windows"),
    ("empty segment", doc("\n```t file=a//b\n```\n"), 9, "empty segment"),
    ("trailing slash", doc("\n```t file=a/\n```\n"), 9, "empty segment"),
    ("dot segment", doc("\n```t file=./a\n```\n"), 9, "'.' segment"),
    ("control in path", doc('\n```t file="a\x7fb"\n```\n'), 9, "control character"),
    ("empty file=", doc("\n```t file= x\n```\n"), 9, "needs a path"),
    ("two file=", doc("\n```t file=a file=b\n```\n"), 9, "more than one"),
    ("case collision", doc("\n```t file=A.txt\n```\n```t file=a.txt\n```\n"), 11, "case"),
    ("nfc collision", doc("\n```t file=\u00e9\n```\n```t file=e\u0301\n```\n"), 11, "Unicode"),
    ("file vs dir", doc("\n```t file=a\n```\n```t file=a/b\n```\n"), 11, "is a file"),
    ("dir vs file", doc("\n```t file=a/b\n```\n```t file=A\n```\n"), 11, "directory"),
    ("dir case", doc("\n```t file=src/a\n```\n```t file=Src/b\n```\n"), 11, "collides"),
    ("bad base64", doc("\n```base64 file=a\n!!!!\n```\n"), 9, "not valid base64"),
    ("unpadded base64", doc("\n```base64 file=a\nAAE\n```\n"), 9, "not valid base64"),
    ("non-canonical base64", doc("\n```base64 file=a\nAAF=\n```\n"), 9, "canonical"),
    ("control char", doc("\nhello\x01\n"), 9, "U+0001"),
    ("nul", doc("\n\n\x00\n"), 10, "U+0000"),
    ("lone surrogate", doc("\n\ud800\n"), 9, "surrogate"),
    ("bad utf-8", doc("\n").encode() + b"\n\xff\n", 10, "UTF-8"),
    (
        "template collision",
        HEAD.replace("files", "node-library") + "```j file=package.json\n```\n",
        8,
        "generated by template",
    ),
    (
        "template dir collision",
        HEAD.replace("files", "node-library") + "```j file=readme.md/x\n```\n",
        8,
        "generated by template",
    ),
    (
        "pep440 prerelease",
        HEAD.replace("files", "python-library").replace("1.0.0", "1.0.0-x.y"),
        3,
        "PEP 440",
    ),
    (
        "pep440 or",
        HEAD.replace("files", "python-library").replace(
            "template", "dependencies:\n  a: '1 || 2'\ntemplate"
        ),
        7,
        "||",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "needle"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_rejection_has_line(text: str | bytes, line: int, needle: str) -> None:
    message = error_of(text)
    assert message.startswith(f"line {line}: "), message
    assert needle in message, message
    # validate() reports the same first error, never raises.
    first = next(d for d in validate(text) if d.severity == "error")
    assert str(first) == message


def test_duplicate_key_is_caught_though_pyyaml_keeps_the_last() -> None:
    assert yaml.safe_load("a: 1\na: 2\n") == {"a": 2}  # why we must check ourselves
    text = HEAD.replace("template", "name: x\ntemplate")
    assert error_of(text) == "line 6: duplicate key 'name' (first on line 2)"


def test_validate_collects_everything() -> None:
    text = (
        "---\nname: Bad\nversion: 1.0\nlicense: MIT\n---\n"
        "```t file=../a\n```\n```t file=/b\n```\n```base64 file=c\n#\n```\n"
    )
    diagnostics = validate(text)
    errors = [(d.line, d.severity) for d in diagnostics if d.severity == "error"]
    assert errors == [(2, "error"), (3, "error"), (6, "error"), (8, "error"), (10, "error")]
    warnings = [d.message for d in diagnostics if d.severity == "warning"]
    assert any("no description" in w for w in warnings)
    assert any("no template" in w for w in warnings)
    assert diagnostics == sorted(diagnostics, key=lambda d: d.line)


def test_document_error_carries_all_diagnostics() -> None:
    with pytest.raises(DocumentError) as info:
        parse_document("---\nname: Bad\nversion: x\nlicense: MIT\n---\n")
    assert info.value.line == 2
    assert len([d for d in info.value.diagnostics if d.severity == "error"]) == 2


def test_clean_document_has_no_diagnostics() -> None:
    assert validate(doc("\nprose\n")) == []


def test_warnings() -> None:
    messages = [str(d) for d in validate("---\nname: x\nversion: 1.0.0\nlicense: MIT\n---\n")]
    assert messages == [
        "line 1: no template; using 'files' (write template: files to say so)",
        "line 1: no description",
    ]
    unclosed = validate(doc("\n```t file=a\nnever closed\n"))
    assert [(d.line, d.severity) for d in unclosed] == [(9, "warning")]
    empty_readme = validate(HEAD.replace("files", "node-library"))
    assert [d.message for d in empty_readme] == [
        "the document has no prose: README.md will be empty"
    ]


# --- fences -------------------------------------------------------------------------------------


def test_fences_found_like_commonmark() -> None:
    body = (
        "\n- item\n\n  ```t file=a\n  in list\n  ```\n"
        "> ~~~t file=a\n> in quote\n> ~~~\n"
        "\n    ```t file=nope\n    indented code is not a fence\n"
        "\n````md file=b\n```t file=nested-not-a-block\n```\n````\n"
        '\n```t title=x file="c d" other\n```\n'
        "\n```t\nno file= is prose\n```\n"
    )
    document = parse_document(doc(body))
    got = [(b.path, b.line, b.data) for b in document.blocks]
    assert got == [
        ("a", 11, b"in list\n"),
        ("a", 14, b"in quote\n"),
        ("b", 21, b"```t file=nested-not-a-block\n```\n"),
        ("c d", 26, b""),
    ]


def test_crlf_bom_and_missing_final_newline_are_normalized() -> None:
    lf = doc("\n```t file=a\nx\n```\n")
    crlf = "\ufeff" + lf.replace("\n", "\r\n")
    bare = lf.rstrip("\n")
    trees = {k: generate(v).files for k, v in {"lf": lf, "crlf": crlf, "bare": bare}.items()}
    assert trees["lf"] == trees["crlf"] == trees["bare"] == {"a": b"x\n"}
    assert generate(lf.replace("\n", "\r")).files == {"a": b"x\n"}  # lone CR
    assert error_of(crlf.replace("file=a", "file=../a")) == error_of(
        lf.replace("file=a", "file=../a")
    )


def test_base64_whitespace_and_concatenation() -> None:
    text = doc("\n```base64 file=b\nAA EC\n\tAw==\n```\n```base64 file=b\n/w==\n```\n")
    assert generate(text).files == {"b": b"\x00\x01\x02\x03\xff"}


# --- fields -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "left-pad", "a.b_c-d", "@acme/retry", "@a1/b2", "x" * 214])
def test_good_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A",
        "-a",
        "a-",
        ".a",
        "_a",
        "a b",
        "@acme",
        "@/a",
        "@a/",
        "@a/b/c",
        "é",
        "node_modules",
        "@Acme/x",
        "x" * 215,
        "a/b",
    ],
)
def test_bad_names(name: str) -> None:
    with pytest.raises(ValidationError):
        check_name(name)


@pytest.mark.parametrize(
    "text",
    [
        "MIT",
        "Apache-2.0 OR MIT",
        "(MIT OR Apache-2.0) AND BSD-3-Clause",
        "GPL-2.0-or-later WITH Classpath-exception-2.0",
        "LicenseRef-Acme-1.0",
    ],
)
def test_good_licenses(text: str) -> None:
    check_license(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mit",
        "MIT or Apache-2.0",
        "MIT  OR Apache-2.0",
        "( MIT)",
        "MIT OR",
        "(MIT",
        "MIT WITH",
        "MIT WITH Bogus-exception",
        "GPL-2.0+",
        "UNLICENSED",
        "Proprietary",
        "MIT Apache-2.0",
        "(" * 20 + "MIT" + ")" * 20,
    ],
)
def test_bad_licenses(text: str) -> None:
    with pytest.raises(ValidationError):
        check_license(text)


# --- limits -------------------------------------------------------------------------------------


def spec_limits() -> dict[str, int]:
    text = SPEC.read_text(encoding="utf-8")
    section = text.split("## 9. Limits", 1)[1].split("\n## ", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| (\w+) \| (\d+) \|", section, re.M)}


def test_limits_match_spec_table() -> None:
    assert spec_limits() == LIMITS
    for name, value in LIMITS.items():
        assert getattr(docformat, name.upper()) == value


def test_document_size_limit() -> None:
    big = doc("\n" + "x" * docformat.MAX_DOCUMENT_BYTES)
    assert error_of(big) == f"line 1: document is larger than {docformat.MAX_DOCUMENT_BYTES} bytes"
    assert error_of(big.encode()).startswith("line 1: document is larger")


def test_front_matter_size_limit() -> None:
    text = "---\n" + "#" * docformat.MAX_FRONT_MATTER_BYTES + "\n---\n"
    assert "front matter is larger" in error_of(text)


def test_keyword_limits() -> None:
    many = "[" + ", ".join(f"k{i}" for i in range(21)) + "]"
    assert "more than 20 keywords" in error_of(
        HEAD.replace("template", f"keywords: {many}\ntemplate")
    )
    long = "k" * 51
    assert "longer than 50" in error_of(HEAD.replace("template", f"keywords: [{long}]\ntemplate"))


def test_path_limits() -> None:
    assert "longer than 512 bytes" in error_of(doc(f"\n```t file={'a/' * 256}b\n```\n"))
    assert "deeper than 32" in error_of(doc(f"\n```t file={'a/' * 32}b\n```\n"))
    assert "longer than 255" in error_of(doc(f"\n```t file={'é' * 128}\n```\n"))


def test_file_count_and_size_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docformat, "MAX_FILES", 2)
    three = doc("".join(f"\n```t file=f{i}\n```\n" for i in range(3)))
    assert error_of(three) == "line 15: more than 2 files"
    node = HEAD.replace("files", "node-library") + "\n```t file=a\n```\n\n```t file=b\n```\n"
    assert error_of(node) == "line 1: the package has more than 2 files"
    monkeypatch.setattr(docformat, "MAX_FILES", 1000)
    monkeypatch.setattr(docformat, "MAX_FILE_BYTES", 4)
    assert error_of(doc("\n```t file=a\nab\n```\n```t file=a\ncd\n```\n")) == (
        "line 12: file 'a' is larger than 4 bytes"
    )
    monkeypatch.setattr(docformat, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(docformat, "MAX_TOTAL_BYTES", 5)
    assert "package is larger than 5 bytes" in error_of(
        doc("\n```t file=a\nabc\n```\n```t file=b\nabc\n```\n")
    )


def test_diagnostics_are_capped() -> None:
    text = doc("".join(f"\n```t file=../{i}\n```\n" for i in range(500)))
    diagnostics = validate(text)
    assert len(diagnostics) == docformat.MAX_DIAGNOSTICS + 1
    assert diagnostics[-1].message == "too many problems; stopped collecting"
    assert error_of(text) == "line 9: path '../0' escapes the package root"


# --- fuzzing ------------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "---\n",
        "name: x\n",
        "version: 1.0.0\n",
        "license: MIT\n",
        "template: python-library\n",
        "template: node-library\n",
        "dependencies:\n  a: '^1'\n",
        "keywords: [a, b]\n",
        "```",
        "~~~",
        "base64 ",
        "file=",
        "a/b",
        "../",
        "\n",
        "> ",
        "- ",
        "  ",
        "&a ",
        "*a",
        "!!str ",
        "[",
        "{",
        ":",
        "AAEC",
        "é",
        "\r\n",
        "\x00",
        "\ud800",
        "`",
        "\\",
        '"',
        "README.md",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=400), st.lists(_PIECES, max_size=40).map("".join)))
def test_arbitrary_text_never_crashes(text: str) -> None:
    diagnostics = validate(text)
    assert all(d.line >= 1 for d in diagnostics)
    try:
        tree = generate(text)
    except ValidationError as exc:
        assert str(exc).startswith("line ")
        assert any(d.severity == "error" for d in diagnostics)
    else:
        assert list(tree.files) == sorted(tree.files)
        assert not any(d.severity == "error" for d in diagnostics)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        generate(HEAD.encode() + data)
    except ValidationError as exc:
        assert str(exc).startswith("line ")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_fields_never_crash(value: str) -> None:
    for function in (check_name, check_license, parse_range, parse_version, docformat.check_path):
        with contextlib.suppress(ValidationError):
            function(value)
