"""The generator: spec vectors (trees and root CIDs), the examples, template outputs checked with
independent parsers, generator versions, and byte-identical output across process environments."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dre.protocol.docformat import Comparator, SemVer, parse_document, parse_range, parse_version
from dre.protocol.errors import ValidationError
from dre.protocol.generator import (
    GENERATOR_VERSION,
    SUPPORTED_GENERATOR_VERSIONS,
    GeneratedTree,
    generate,
)
from dre.protocol.importer import PROFILE_V1, DirectoryBuilder, FileImporter
from dre.protocol.packages import build_tree
from dre.protocol.templates import python_name, range_to_pep440, readme, semver_to_pep440
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "specs" / "vectors" / "generator"
EXAMPLES = ROOT / "specs" / "examples"
VECTOR_DOCS = sorted(VECTORS.glob("*.md"))
EXAMPLE_DOCS = sorted(EXAMPLES.glob("*.md"))


def root_cid(files: dict[str, bytes]) -> str:
    """The UnixFS v1 root CID of a generated tree (what a manifest's package CID will be)."""
    builder = DirectoryBuilder(PROFILE_V1, lambda block: None)
    for path, data in files.items():
        importer = FileImporter(PROFILE_V1, lambda block: None)
        importer.write(data)
        builder.add_file(path, importer.finish())
    return str(builder.finish().cid)


# --- vectors ------------------------------------------------------------------------------------


def test_there_are_vectors() -> None:
    assert len(VECTOR_DOCS) >= 15
    assert any(p.name.startswith("err-") for p in VECTOR_DOCS)


@pytest.mark.parametrize("path", VECTOR_DOCS, ids=lambda p: p.stem)
def test_vector(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    document = path.read_bytes()
    version = expected["generator_version"]
    if "error" in expected:
        with pytest.raises(ValidationError) as info:
            generate(document, version)
        assert str(info.value) == expected["error"]
        return
    tree = generate(document, version)
    assert list(tree.files) == list(expected["files"])
    for name, data in tree.files.items():
        want = expected["files"][name]
        assert len(data) == want["size"], name
        assert hashlib.sha256(data).hexdigest() == want["sha256"], name
        if "text" in want:
            assert data.decode("utf-8") == want["text"], name
    assert root_cid(tree.files) == expected["root_cid"]


def test_crlf_vector_really_has_crlf_and_bom() -> None:
    raw = (VECTORS / "crlf-and-bom.md").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf---\r\n")
    assert b"\r\n" in raw


# --- examples -----------------------------------------------------------------------------------


def test_examples_cover_the_issue() -> None:
    metas = [parse_document(p.read_bytes()).metadata for p in EXAMPLE_DOCS]
    assert len(metas) >= 6
    assert {m.template for m in metas} == {"files", "python-library", "node-library"}
    assert any(m.name.startswith("@") for m in metas)
    assert any(m.dependencies for m in metas)
    names = [m.name for m in metas]
    assert any(names.count(n) >= 2 for n in names)  # two versions of one package
    binaries = [b for p in EXAMPLE_DOCS for b in parse_document(p.read_bytes()).blocks if b.binary]
    assert any(b.data.startswith(b"\x89PNG\r\n\x1a\n") for b in binaries)


@pytest.mark.parametrize("path", EXAMPLE_DOCS, ids=lambda p: p.stem)
def test_example_generates_cleanly(path: Path) -> None:
    tree = generate(path.read_bytes())
    assert tree.warnings == ()
    assert list(tree.files) == sorted(tree.files)
    meta = tree.metadata
    if meta.template == "python-library":
        project = tomllib.loads(tree.files["pyproject.toml"].decode())["project"]
        assert project["name"] == python_name(meta.name)
        assert str(Version(project["version"])) == project["version"]  # canonical PEP 440
        assert project["license"] == meta.license
        for requirement in project["dependencies"]:
            Requirement(requirement)
        for module in tree.files:
            if module.endswith(".py"):
                compile(tree.files[module], module, "exec")
    if meta.template == "node-library":
        package = json.loads(tree.files["package.json"])
        assert package["name"] == meta.name
        assert package["version"] == meta.version


# --- template outputs ---------------------------------------------------------------------------

HEAD = (
    "---\nname: '@acme/x_y'\nversion: {v}\ndescription: {d}\nlicense: MIT\n"
    "template: {t}\n{extra}---\n"
)


def make(t: str, v: str = "1.0.0", d: str = "D", extra: str = "", body: str = "\nprose\n") -> str:
    return HEAD.format(t=t, v=v, d=d, extra=extra) + body


def test_files_template_adds_nothing() -> None:
    assert generate(make("files")).files == {}


def test_pyproject_exact() -> None:
    extra = "keywords: [b, a]\ndependencies:\n  zed: '*'\n  '@acme/a.b': '^1.2.3'\n"
    files = generate(make("python-library", v="1.0.0-rc.1", extra=extra)).files
    assert files["pyproject.toml"].decode() == (
        "[build-system]\n"
        'requires = [\n    "setuptools>=77",\n]\n'
        'build-backend = "setuptools.build_meta"\n'
        "\n"
        "[project]\n"
        'name = "acme-x-y"\n'
        'version = "1.0.0rc1"\n'
        'description = "D"\n'
        'readme = "README.md"\n'
        'license = "MIT"\n'
        'keywords = [\n    "b",\n    "a",\n]\n'
        'dependencies = [\n    "acme-a-b>=1.2.3,<2.0.0",\n    "zed",\n]\n'
    )
    assert files["README.md"] == b"prose\n"


def test_pyproject_escapes_parse_back() -> None:
    description = "'quotes \" and \\ back — ünï'"
    files = generate(make("python-library", d=description)).files
    project = tomllib.loads(files["pyproject.toml"].decode())["project"]
    assert project["description"] == 'quotes " and \\ back — ünï'
    assert project["dependencies"] == []
    assert "keywords" not in project


def test_package_json_exact() -> None:
    extra = "keywords: [k]\ndependencies:\n  zed: '^1.0.0 || ^2.0.0'\n  abc: '~1.2'\n"
    files = generate(make("node-library", d="é “x”", extra=extra)).files
    assert files["package.json"].decode() == (
        "{\n"
        '  "name": "@acme/x_y",\n'
        '  "version": "1.0.0",\n'
        '  "description": "é “x”",\n'
        '  "keywords": [\n    "k"\n  ],\n'
        '  "license": "MIT",\n'
        '  "dependencies": {\n    "abc": "~1.2",\n    "zed": "^1.0.0 || ^2.0.0"\n  }\n'
        "}\n"
    )


def test_readme_rule() -> None:
    body = "\n  \n\t\n# T  \n\n```py file=a.py\nx\n```\n  \n\n"
    document = parse_document(make("node-library", body=body))
    assert readme(document) == b"# T  \n\n```py file=a.py\nx\n```\n"
    assert readme(parse_document(make("node-library", body="\n \n"))) == b""


@pytest.mark.parametrize(
    ("semver", "pep440"),
    [
        ("1.2.3", "1.2.3"),
        ("1.0.0-alpha", "1.0.0a0"),
        ("1.0.0-alpha.1", "1.0.0a1"),
        ("1.0.0-a1", "1.0.0a1"),
        ("1.0.0-beta.2", "1.0.0b2"),
        ("1.0.0-rc10", "1.0.0rc10"),
        ("1.0.0-c.3", "1.0.0rc3"),
        ("1.0.0-pre", "1.0.0rc0"),
        ("1.0.0-preview.2", "1.0.0rc2"),
        ("1.0.0-dev.3", "1.0.0.dev3"),
        ("1.0.0+Build-05", "1.0.0+build.5"),
        ("2.0.0-rc.1+exp.sha.5114f85", "2.0.0rc1+exp.sha.5114f85"),
    ],
)
def test_semver_to_pep440(semver: str, pep440: str) -> None:
    got = semver_to_pep440(parse_version(semver))
    assert got == pep440
    assert str(Version(semver)) == got  # our rule equals PEP 440 normalization


@pytest.mark.parametrize(
    "semver", ["1.0.0-x", "1.0.0-alpha.beta", "1.0.0-1", "1.0.0+a-", "1.0.0-rc.1.2"]
)
def test_semver_without_pep440_form(semver: str) -> None:
    with pytest.raises(ValidationError):
        semver_to_pep440(parse_version(semver))


@given(
    st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30)),
    st.sampled_from(["", "^", "~", ">=", "<=", ">", "<", "="]),
    st.integers(1, 3),
)
def test_pep440_specifiers_agree_with_ranges(parts: tuple[int, int, int], op: str, n: int) -> None:
    text = op + ".".join(str(p) for p in parts[:n])
    spec = range_to_pep440(parse_range(text))
    requirement = Requirement("x" + spec)
    # Probe versions around the bound: the PEP 440 specifier and the desugared range agree.
    for probe in _probes(parts):
        version = parse_version(probe)
        in_range = all(_satisfies(version, c) for c in parse_range(text).sets[0])
        assert requirement.specifier.contains(probe) == in_range, (text, spec, probe)


def _probes(parts: tuple[int, int, int]) -> list[str]:
    out = set()
    for dm in (-1, 0, 1):
        for dn in (-1, 0, 1):
            for dp in (-1, 0, 1):
                a, b, c = parts[0] + dm, parts[1] + dn, parts[2] + dp
                if min(a, b, c) >= 0:
                    out.add(f"{a}.{b}.{c}")
    return sorted(out)


def _satisfies(version: SemVer, comparator: Comparator) -> bool:
    a, b = version.key(), comparator.version.key()
    return {"=": a == b, ">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[comparator.op]


# --- generator versions -------------------------------------------------------------------------


def test_generator_version_registry() -> None:
    assert GENERATOR_VERSION == "1.0.0"
    assert SUPPORTED_GENERATOR_VERSIONS == ("1.0.0",)
    tree = generate(make("files"), "1.0.0")
    assert isinstance(tree, GeneratedTree)
    assert tree.generator_version == "1.0.0"


@pytest.mark.parametrize("version", ["2.0.0", "0.9.0", "1.0", "", "latest"])
def test_unknown_generator_version_is_refused(version: str) -> None:
    with pytest.raises(ValidationError) as info:
        generate(make("files"), version)
    assert "not supported by this build (supported: 1.0.0)" in str(info.value)


# --- determinism across process environments ----------------------------------------------------

_CHILD = """
import hashlib, json, sys
from pathlib import Path
from dre.protocol.generator import generate
from dre.protocol.packages import build_tree
out = {}
for p in sorted(Path(sys.argv[1]).glob("*/*.md")) + sorted(Path(sys.argv[2]).glob("*.md")):
    try:
        tree = generate(p.read_bytes())
    except Exception as exc:
        out[p.name] = type(exc).__name__ + ": " + str(exc)
        continue
    out[p.name] = {"root": str(build_tree(tree.files).root),
                   "files": {k: hashlib.sha256(v).hexdigest() for k, v in tree.files.items()}}
sys.stdout.write(json.dumps(out, sort_keys=True))
"""


@pytest.mark.slow
def test_byte_identical_across_environments(tmp_path: Path) -> None:
    environments = [
        {"PYTHONHASHSEED": "0", "TZ": "UTC", "LC_ALL": "C", "LANG": "C"},
        {
            "PYTHONHASHSEED": "12345",
            "TZ": "Asia/Kathmandu",
            "LC_ALL": "tr_TR.UTF-8",
            "LANG": "tr_TR.UTF-8",
        },
        {
            "PYTHONHASHSEED": "random",
            "TZ": "America/St_Johns",
            "LC_ALL": "C.UTF-8",
            "LANG": "de_DE.UTF-8",
        },
    ]
    outputs = []
    for i, extra in enumerate(environments):
        cwd = tmp_path / f"cwd{i}"
        cwd.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONHASH"))}
        env.update(extra)
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(ROOT / "specs" / "vectors"), str(EXAMPLES)],
            cwd=cwd,
            env=env,
            capture_output=True,
            check=True,
            timeout=120,
        )
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] == outputs[2]
    parsed = json.loads(outputs[0])
    assert len(parsed) == len(VECTOR_DOCS) + len(EXAMPLE_DOCS)
    # and equal to this process
    here = {}
    for p in EXAMPLE_DOCS:
        files = generate(p.read_bytes()).files
        here[p.name] = {
            "root": str(build_tree(files).root),
            "files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()},
        }
    assert {k: parsed[k] for k in here} == here
    # The root CIDs are the ones the spec vectors pin.
    pinned = 0
    for p in VECTOR_DOCS:
        expected = json.loads(p.with_suffix(".json").read_text())
        if "root_cid" in expected:
            pinned += 1
            assert parsed[p.name]["root"] == expected["root_cid"], p.name
    assert pinned >= 5
