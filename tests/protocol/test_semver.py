"""SemVer 2.0.0 versions and npm-style ranges: parsing, desugaring, precedence (a total order that
matches the spec's example chain), and ``satisfies`` checked against an independent reference
interpreter and, when Node.js is around, against npm's own ``semver`` package."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from dre.protocol import docformat
from dre.protocol.errors import ValidationError
from dre.protocol.semver import (
    MAX_RANGE_CHARS,
    MAX_VERSION_CHARS,
    Comparator,
    SemVer,
    SemverRange,
    max_satisfying,
    parse_range,
    parse_version,
)
from hypothesis import given, settings
from hypothesis import strategies as st

JS_DIR = Path(__file__).resolve().parents[1] / "interop" / "js"

# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version",
    [
        "0.0.0",
        "1.2.3",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0-x-y.z",
        "1.0.0+20130313",
        "1.0.0-rc.1+build.1",
    ],
)
def test_good_versions(version: str) -> None:
    assert str(parse_version(version)) == version


@pytest.mark.parametrize(
    "version",
    [
        "1",
        "1.2",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.3-01",
        "1.2.3-",
        "1.2.3+",
        "v1.2.3",
        " 1.2.3",
        "1.2.3\n",
        "１.２.３",
        "1.2.3-a..b",
        "1.2.3-" + "a" * MAX_VERSION_CHARS,
    ],
)
def test_bad_versions(version: str) -> None:
    with pytest.raises(ValidationError):
        parse_version(version)


RANGES = {
    "*": [[]],
    "1.2.3": [["=1.2.3"]],
    "=1.2.3": [["=1.2.3"]],
    "1.2": [[">=1.2.0", "<1.3.0"]],
    "1.x": [[">=1.0.0", "<2.0.0"]],
    "1.2.X": [[">=1.2.0", "<1.3.0"]],
    ">=1.2": [[">=1.2.0"]],
    ">1.2": [[">=1.3.0"]],
    ">1.2.3": [[">1.2.3"]],
    "<1.2": [["<1.2.0"]],
    "<=1.2": [["<1.3.0"]],
    "<=1.2.3": [["<=1.2.3"]],
    "~1.2.3": [[">=1.2.3", "<1.3.0"]],
    "~1": [[">=1.0.0", "<2.0.0"]],
    "^1.2.3": [[">=1.2.3", "<2.0.0"]],
    "^0.2.3": [[">=0.2.3", "<0.3.0"]],
    "^0.0.3": [[">=0.0.3", "<0.0.4"]],
    "^0.0": [[">=0.0.0", "<0.1.0"]],
    "^0": [[">=0.0.0", "<1.0.0"]],
    "^1.0.0-beta.2": [[">=1.0.0-beta.2", "<2.0.0"]],
    "1.2.3 - 2.3": [[">=1.2.3", "<2.4.0"]],
    "1.2.3 - 2.3.4": [[">=1.2.3", "<=2.3.4"]],
    ">=1.0.0 <2.0.0": [[">=1.0.0", "<2.0.0"]],
    "^1.0.0 || ^2.0.0": [[">=1.0.0", "<2.0.0"], [">=2.0.0", "<3.0.0"]],
}


@pytest.mark.parametrize(("text", "expected"), RANGES.items())
def test_range_desugaring(text: str, expected: list[list[str]]) -> None:
    rng = parse_range(text)
    assert [[str(c) for c in s] for s in rng.sets] == expected
    assert str(rng) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ^1.0.0",
        "^1.0.0 ",
        "^1.0.0  <2",
        ">= 1.0.0",
        "^1.0.0||^2.0.0",
        "1.x.3",
        "v1.2.3",
        "latest",
        "1.2.3+build",
        "1.2-beta",
        ">*",
        "<*",
        "01.2.3",
        "1.2.3 -2",
        "^" + "1" * (MAX_RANGE_CHARS + 1),
    ],
)
def test_bad_ranges(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_range(text)


def test_docformat_reexports_the_same_objects() -> None:
    # Existing callers import these from docformat; they must be the very same objects.
    for name in ("SemVer", "SemverRange", "Comparator", "parse_version", "parse_range"):
        assert getattr(docformat, name) is globals()[name]
    assert docformat.LIMITS["max_version_chars"] == MAX_VERSION_CHARS
    assert docformat.LIMITS["max_range_chars"] == MAX_RANGE_CHARS


# --- precedence -----------------------------------------------------------------------------------

# semver.org §11, example chain, extended with releases on both sides.
SPEC_CHAIN = [
    "0.9.9",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "2.0.0",
    "2.1.1",
]


def test_spec_precedence_chain() -> None:
    versions = [parse_version(v) for v in SPEC_CHAIN]
    for i, a in enumerate(versions):
        for j, b in enumerate(versions):
            assert (a < b) == (i < j), (a, b)
            assert (a <= b) == (i <= j), (a, b)
            assert (a > b) == (i > j), (a, b)
            assert (a >= b) == (i >= j), (a, b)
    shuffled = versions[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled) == versions


def test_build_metadata_does_not_affect_precedence() -> None:
    a, b = parse_version("1.0.0+a"), parse_version("1.0.0+b")
    assert a.key() == b.key()
    assert not a < b and not b < a and a <= b and b <= a
    assert a != b  # equality stays structural, so it agrees with hashing


def test_numeric_identifiers_compare_numerically_and_below_alphanumeric() -> None:
    v = parse_version
    assert v("1.0.0-2") < v("1.0.0-10") < v("1.0.0-a") < v("1.0.0-a.0") < v("1.0.0")
    assert v("1.0.0-0a") > v("1.0.0-999")  # "0a" is alphanumeric
    assert v("1.0.0-B") < v("1.0.0-a")  # ASCII order


_IDENT = st.one_of(
    st.integers(0, 12).map(str),
    st.text("abAB-0", min_size=1, max_size=3).filter(lambda s: not s.isdigit()),
)
VERSIONS = st.builds(
    SemVer,
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    st.lists(_IDENT, max_size=3).map(tuple),
)


def _reference_compare(a: SemVer, b: SemVer) -> int:
    """semver.org §11 written as the spec words it, step by step (not via key())."""
    for x, y in ((a.major, b.major), (a.minor, b.minor), (a.patch, b.patch)):
        if x != y:
            return -1 if x < y else 1
    if not a.prerelease or not b.prerelease:
        return (not a.prerelease) - (not b.prerelease)
    for x, y in zip(a.prerelease, b.prerelease, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(a.prerelease) > len(b.prerelease)) - (len(a.prerelease) < len(b.prerelease))


@settings(max_examples=500)
@given(VERSIONS, VERSIONS, VERSIONS)
def test_precedence_is_a_total_order_matching_the_spec(a: SemVer, b: SemVer, c: SemVer) -> None:
    expected = _reference_compare(a, b)
    assert (a < b) == (expected < 0)
    assert (a > b) == (expected > 0)
    assert (a <= b) == (expected <= 0)
    # Totality and antisymmetry: without build metadata, equal precedence means equal versions.
    assert (a < b) + (b < a) + (a == b) == 1
    # Transitivity.
    if a <= b <= c:
        assert a <= c
    # Round trip through text keeps the order.
    assert (parse_version(str(a)) < parse_version(str(b))) == (a < b)


# --- satisfies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "version", "expected"),
    [
        ("^1.2.3", "1.2.3", True),
        ("^1.2.3", "1.9.0", True),
        ("^1.2.3", "2.0.0", False),
        ("^1.2.3", "1.2.2", False),
        ("*", "0.0.0", True),
        ("*", "1.0.0-rc.1", False),  # * admits no prerelease
        ("^1.2.3", "1.3.0-beta", False),  # prerelease of another release line
        ("^1.2.3", "2.0.0-rc.1", False),
        (">=1.0.0-beta", "1.0.0-rc.1", True),  # same [1, 0, 0]: opted in
        (">=1.0.0-beta", "1.0.0-alpha", False),  # opted in, but below the bound
        (">=1.0.0-beta", "1.0.1-alpha", False),  # another [major, minor, patch]
        (">=1.0.0-beta", "1.0.1", True),
        ("^1.0.0-beta.2", "1.0.0-beta.11", True),
        ("1.0.0-rc.1", "1.0.0-rc.1", True),
        ("1.0.0-rc.1 || 2.x", "2.5.0", True),
        ("1.0.0-rc.1 || 2.x", "2.5.0-rc.1", False),  # the opt-in is per comparator set
        (">1.0.0 <2.0.0", "1.5.0", True),
        (">1.0.0 <2.0.0", "1.0.0", False),
        ("1.2.3 - 2.3.4-beta", "2.3.4-alpha", True),
        ("<1.0.0", "1.0.0-rc.1", False),  # below 1.0.0 by precedence, but not opted in
        ("1.2.3", "1.2.3+build.7", True),  # build metadata is ignored
    ],
)
def test_satisfies(text: str, version: str, expected: bool) -> None:
    assert parse_range(text).satisfies(parse_version(version)) is expected


def test_max_satisfying() -> None:
    versions = [parse_version(v) for v in ["1.0.0", "1.4.2", "2.0.0-rc.1", "1.5.0-beta", "0.9.0"]]
    assert str(max_satisfying(versions, "^1.0.0")) == "1.4.2"
    assert str(max_satisfying(versions, parse_range(">=1.0.0"))) == "1.4.2"
    assert str(max_satisfying(versions, ">=1.5.0-alpha")) == "1.5.0-beta"
    assert str(max_satisfying(versions, "^2.0.0-rc.0")) == "2.0.0-rc.1"
    assert max_satisfying(versions, "^3.0.0") is None
    assert max_satisfying([], "*") is None


def test_max_satisfying_ignores_input_order_for_build_ties() -> None:
    versions = [parse_version("1.0.0+b"), parse_version("1.0.0+a")]
    assert max_satisfying(versions, "*") == max_satisfying(versions[::-1], "*")


# A reference interpreter for a subset of the range grammar, written from npm's documentation
# rather than from the desugaring: a piece is [op][partial version], pieces are AND-ed by " " and
# OR-ed by " || ". Versions are compared with _reference_compare.

_OPS = ["", "=", "^", "~", ">", ">=", "<", "<="]


def _bump(parts: list[int], index: int) -> SemVer:
    """The smallest release above everything whose first ``index + 1`` parts equal ``parts``'."""
    bumped = [*parts[: index + 1], *([0] * (3 - index - 1))]
    bumped[index] += 1
    return SemVer(*bumped)


def _reference_piece(op: str, parts: list[int], pre: tuple[str, ...]) -> Callable[[SemVer], bool]:
    n = len(parts)
    low = SemVer(*(parts + [0] * (3 - n)), pre)

    def cmp(v: SemVer, bound: SemVer) -> int:
        return _reference_compare(v, bound)

    if op in ("", "="):
        if n == 3:
            return lambda v: cmp(v, low) == 0
        upper = _bump(parts, n - 1)
        return lambda v: cmp(v, low) >= 0 and cmp(v, upper) < 0
    if op == ">=":
        return lambda v: cmp(v, low) >= 0
    if op == ">":
        if n == 3:
            return lambda v: cmp(v, low) > 0
        upper = _bump(parts, n - 1)
        return lambda v: cmp(v, upper) >= 0
    if op == "<":
        return lambda v: cmp(v, low) < 0
    if op == "<=":
        if n == 3:
            return lambda v: cmp(v, low) <= 0
        upper = _bump(parts, n - 1)
        return lambda v: cmp(v, upper) < 0
    if op == "~":
        upper = _bump(parts, 0 if n == 1 else 1)
        return lambda v: cmp(v, low) >= 0 and cmp(v, upper) < 0
    # "^": do not change the left-most non-zero part among those given.
    index = next((i for i, p in enumerate(parts) if p != 0), n - 1)
    upper = _bump(parts, index)
    return lambda v: cmp(v, low) >= 0 and cmp(v, upper) < 0


Piece = tuple[str, list[int], tuple[str, ...]]
PIECES = st.builds(
    lambda op, parts, pre: (op, parts, pre if len(parts) == 3 else ()),
    st.sampled_from(_OPS),
    st.lists(st.integers(0, 3), min_size=1, max_size=3),
    st.one_of(st.just(()), st.lists(_IDENT, min_size=1, max_size=2).map(tuple)),
)
RANGE_SETS = st.lists(st.lists(PIECES, min_size=1, max_size=3), min_size=1, max_size=3)


def _text(sets: list[list[Piece]]) -> str:
    def piece(op: str, parts: list[int], pre: tuple[str, ...]) -> str:
        return op + ".".join(map(str, parts)) + ("-" + ".".join(pre) if pre else "")

    return " || ".join(" ".join(piece(*p) for p in s) for s in sets)


def _reference_satisfies(sets: list[list[Piece]], v: SemVer) -> bool:
    for pieces in sets:
        if not all(_reference_piece(*p)(v) for p in pieces):
            continue
        # npm: a prerelease needs a piece that itself names a prerelease of the same release.
        if not v.prerelease or any(
            pre and parts == [v.major, v.minor, v.patch] for _, parts, pre in pieces
        ):
            return True
    return False


@settings(max_examples=500)
@given(RANGE_SETS, VERSIONS)
def test_satisfies_agrees_with_reference(sets: list[list[Piece]], version: SemVer) -> None:
    text = _text(sets)
    rng = parse_range(text)
    assert rng.satisfies(version) == _reference_satisfies(sets, version), (text, str(version))


def _npm_semver_available() -> bool:
    return shutil.which("node") is not None and (JS_DIR / "node_modules" / "semver").is_dir()


@pytest.mark.skipif(not _npm_semver_available(), reason="Node.js or npm's semver not installed")
def test_satisfies_agrees_with_npm_semver() -> None:
    rnd = random.Random(20240601)
    ops = [*_OPS, "x"]
    cases: list[tuple[str, str]] = []
    for _ in range(3000):
        sets = []
        for _ in range(rnd.randint(1, 2)):
            pieces = []
            for _ in range(rnd.randint(1, 2)):
                op = rnd.choice(ops)
                n = rnd.randint(1, 3)
                parts = [str(rnd.randint(0, 2)) for _ in range(n)]
                if op == "x":
                    op, parts = "", [*parts[: n - 1], "x"]
                pre = "-" + rnd.choice(["alpha", "beta.2", "0", "rc.1"]) if n == 3 else ""
                if parts[-1] == "x" or rnd.random() < 0.6:
                    pre = ""
                pieces.append(op + ".".join(parts) + pre)
            sets.append(" ".join(pieces))
        version = ".".join(str(rnd.randint(0, 2)) for _ in range(3))
        if rnd.random() < 0.4:
            version += "-" + rnd.choice(["alpha", "beta", "beta.2", "0", "rc.1", "rc.1.x"])
        cases.append((" || ".join(sets), version))
    script = (
        "const s = require('semver');"
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(cases.map(([r, v]) => s.satisfies(v, r))));"
    )
    proc = subprocess.run(
        ["node", "--input-type=commonjs", "-e", script],
        cwd=JS_DIR,
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    npm = json.loads(proc.stdout)
    ours = [parse_range(r).satisfies(parse_version(v)) for r, v in cases]
    mismatches = [(r, v, n) for (r, v), n, o in zip(cases, npm, ours, strict=True) if n != o]
    assert not mismatches, mismatches[:10]


def test_comparator_test() -> None:
    one = parse_version("1.0.0")
    assert Comparator(">=", one).test(one)
    assert not Comparator(">", one).test(one)
    assert Comparator("<=", one).test(parse_version("1.0.0+x"))
    assert isinstance(parse_range("*"), SemverRange)
