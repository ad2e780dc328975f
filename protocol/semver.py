"""SemVer 2.0.0 versions and npm-style ranges: parsing, precedence, and range matching.

Versions follow semver.org exactly (§11 precedence; build metadata never affects it). Ranges use
the npm grammar given in ``specs/doc-format.md`` §4.3 and match like npm's ``semver`` package with
``includePrerelease`` off: a prerelease version only satisfies a range that names a prerelease of
the same ``major.minor.patch``, so ``^1.0.0`` never silently picks ``2.0.0-rc.1`` or ``1.5.0-dev``.

Pure: no I/O, no locale, no hash-order dependence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import msgspec

from .errors import ValidationError

__all__ = [
    "MAX_RANGE_CHARS",
    "MAX_VERSION_CHARS",
    "Comparator",
    "SemVer",
    "SemverRange",
    "max_satisfying",
    "parse_range",
    "parse_version",
]

# The document format's limits (specs/doc-format.md §9); docformat re-exports them in LIMITS.
MAX_VERSION_CHARS = 128
MAX_RANGE_CHARS = 256


# semver.org's regular expression, with [0-9] instead of \d: \d also matches non-ASCII digits.
_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
_PRE = rf"{_PRE_ID}(?:\.{_PRE_ID})*"
_BUILD = r"[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*"
_SEMVER_RE = re.compile(rf"({_NUM})\.({_NUM})\.({_NUM})(?:-({_PRE}))?(?:\+({_BUILD}))?")


class SemVer(msgspec.Struct, frozen=True, order=False):
    """A SemVer 2.0.0 version, ordered by precedence (§11).

    ``<``, ``<=``, ``>``, ``>=`` compare :meth:`key`, so build metadata is ignored: ``1.0.0+a``
    and ``1.0.0+b`` are neither smaller nor larger than each other. ``==`` stays structural (it
    sees the build) so that equal values hash equally; use ``a.key() == b.key()`` for "same
    precedence". On versions without build metadata the two agree and the order is total.
    """

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        """Sort key implementing SemVer §11 precedence."""
        # Numeric identifiers (ASCII digits only, as the grammar allows) compare as numbers and
        # below alphanumeric ones, which compare in ASCII order; a longer list of identifiers wins
        # when the shorter is its prefix -- exactly what tuple comparison does.
        pre = tuple(
            (0, int(ident), "") if ident.isdigit() else (1, 0, ident) for ident in self.prerelease
        )
        # A version without prerelease sorts after all its prereleases.
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def release(self) -> tuple[int, int, int]:
        """``(major, minor, patch)``: what npm compares to decide whether a prerelease may match."""
        return (self.major, self.minor, self.patch)

    # Typed SemVer-only: comparing a version with another type is a bug, not a False.
    def __lt__(self, other: SemVer) -> bool:
        return self.key() < other.key()

    def __le__(self, other: SemVer) -> bool:
        return self.key() <= other.key()

    def __gt__(self, other: SemVer) -> bool:
        return self.key() > other.key()

    def __ge__(self, other: SemVer) -> bool:
        return self.key() >= other.key()


def parse_version(text: str) -> SemVer:
    """Parse a strict SemVer 2.0.0 version (no ``v`` prefix, no leading zeros, no spaces)."""
    if len(text) > MAX_VERSION_CHARS:
        raise ValidationError(f"version is longer than {MAX_VERSION_CHARS} characters")
    match = _SEMVER_RE.fullmatch(text)
    if match is None:
        raise ValidationError(f"version {text!r} is not a SemVer 2.0.0 version like '1.2.3'")
    major, minor, patch, pre, build = match.groups()
    return SemVer(
        int(major),
        int(minor),
        int(patch),
        tuple(pre.split(".")) if pre else (),
        tuple(build.split(".")) if build else (),
    )


Operator = Literal["=", ">", ">=", "<", "<="]


class Comparator(msgspec.Struct, frozen=True):
    """One primitive comparison, e.g. ``>= 1.2.0``."""

    op: Operator
    version: SemVer

    def __str__(self) -> str:
        return f"{self.op}{self.version}"

    def test(self, version: SemVer) -> bool:
        """Whether ``version`` passes this comparison by precedence (no prerelease rule)."""
        a, b = version.key(), self.version.key()
        if self.op == "=":
            return a == b
        if self.op == ">":
            return a > b
        if self.op == ">=":
            return a >= b
        if self.op == "<":
            return a < b
        return a <= b


class SemverRange(msgspec.Struct, frozen=True):
    """A parsed npm-style range: ``sets`` are OR-ed, the comparators inside one set AND-ed. An
    empty set matches every release version (``*``)."""

    text: str
    sets: tuple[tuple[Comparator, ...], ...]

    def __str__(self) -> str:
        return self.text

    def satisfies(self, version: SemVer) -> bool:
        """Whether ``version`` is in the range, with npm's semantics (``includePrerelease`` off).

        A version satisfies a comparator set when it passes every comparator and, if it is a
        prerelease, some comparator of that same set names a prerelease with the same
        ``major.minor.patch``. That keeps prereleases opt-in per release line: ``>=1.0.0-beta``
        admits ``1.0.0-rc.1`` but not ``1.1.0-alpha``, and ``*`` admits no prerelease at all.
        """
        return any(_set_satisfies(comparators, version) for comparators in self.sets)


def _set_satisfies(comparators: tuple[Comparator, ...], version: SemVer) -> bool:
    if not all(c.test(version) for c in comparators):
        return False
    if not version.prerelease:
        return True
    release = version.release()
    return any(c.version.prerelease and c.version.release() == release for c in comparators)


def max_satisfying(versions: Iterable[SemVer], rng: SemverRange | str) -> SemVer | None:
    """The highest-precedence version in ``versions`` that satisfies ``rng``, or None.

    ``rng`` may be range text, parsed here. Between versions of equal precedence (differing only
    in build metadata) the one with the larger build identifiers wins, so the answer never
    depends on the order of ``versions``.
    """
    parsed = parse_range(rng) if isinstance(rng, str) else rng
    best: SemVer | None = None
    for version in versions:
        if parsed.satisfies(version) and (
            best is None or (version.key(), version.build) > (best.key(), best.build)
        ):
            best = version
    return best


_PARTIAL_RE = re.compile(
    rf"(?P<op>>=|<=|>|<|=|\^|~)?"
    rf"(?P<major>{_NUM}|[xX*])(?:\.(?P<minor>{_NUM}|[xX*])(?:\.(?P<patch>{_NUM}|[xX*])"
    rf"(?:-(?P<pre>{_PRE}))?)?)?"
)

_Partial = tuple[int | None, int | None, int | None, tuple[str, ...]]


def _partial(match: re.Match[str], text: str) -> _Partial:
    parts: list[int | None] = []
    for group in ("major", "minor", "patch"):
        raw = match.group(group)
        parts.append(None if raw is None or raw in ("x", "X", "*") else int(raw))
    # Once a part is a wildcard, the rest must be too: '1.x.3' means nothing sensible.
    seen_wild = False
    for raw_part, group in zip(parts, ("major", "minor", "patch"), strict=True):
        if raw_part is None:
            seen_wild = True
        elif seen_wild and match.group(group) is not None:
            raise ValidationError(f"range {text!r}: a number follows a wildcard")
    pre = match.group("pre")
    if pre and None in parts:
        raise ValidationError(f"range {text!r}: a prerelease needs a full version")
    return (parts[0], parts[1], parts[2], tuple(pre.split(".")) if pre else ())


def _v(major: int, minor: int = 0, patch: int = 0, pre: tuple[str, ...] = ()) -> SemVer:
    return SemVer(major, minor, patch, pre)


def _lower(p: _Partial) -> list[Comparator]:
    major, minor, patch, pre = p
    if major is None:
        return []
    return [Comparator(">=", _v(major, minor or 0, patch or 0, pre))]


def _upper_inclusive(p: _Partial) -> list[Comparator]:
    """``<= p`` where missing parts mean 'any': <=1.2 is <1.3.0."""
    major, minor, patch, pre = p
    if major is None:
        return []
    if minor is None:
        return [Comparator("<", _v(major + 1))]
    if patch is None:
        return [Comparator("<", _v(major, minor + 1))]
    return [Comparator("<=", _v(major, minor, patch, pre))]


def _desugar(op: str | None, p: _Partial, text: str) -> list[Comparator]:
    major, minor, patch, pre = p
    full = patch is not None
    if op in (None, "="):
        if full:
            assert major is not None and minor is not None and patch is not None
            return [Comparator("=", _v(major, minor, patch, pre))]
        return _lower(p) + _upper_inclusive(p)
    if op == ">=":
        return _lower(p)
    if op == "<=":
        return _upper_inclusive(p)
    if op == ">":
        if major is None:
            raise ValidationError(f"range {text!r} matches no version")
        if minor is None:
            return [Comparator(">=", _v(major + 1))]
        if patch is None:
            return [Comparator(">=", _v(major, minor + 1))]
        return [Comparator(">", _v(major, minor, patch, pre))]
    if op == "<":
        if major is None:
            raise ValidationError(f"range {text!r} matches no version")
        return [Comparator("<", _v(major, minor or 0, patch or 0, pre))]
    if op == "~":
        if major is None:
            return []
        upper = _v(major + 1) if minor is None else _v(major, minor + 1)
        return [*_lower(p), Comparator("<", upper)]
    # op == "^": the upper bound bumps the left-most non-zero part that was given.
    if major is None:
        return []
    if major > 0 or minor is None:
        upper = _v(major + 1)
    elif minor > 0 or patch is None:
        upper = _v(0, minor + 1)
    else:
        upper = _v(0, 0, patch + 1)
    return [*_lower(p), Comparator("<", upper)]


def parse_range(text: str) -> SemverRange:
    """Parse an npm-style semver range (grammar in specs/doc-format.md §4.3) into comparator sets.

    Spacing is canonical and strict (one space between comparators, ``" || "``, ``" - "``) because
    the range is copied verbatim into generated files.
    """
    if not text:
        raise ValidationError("empty range; use '*' for any version")
    if len(text) > MAX_RANGE_CHARS:
        raise ValidationError(f"range is longer than {MAX_RANGE_CHARS} characters")
    sets: list[tuple[Comparator, ...]] = []
    for part in text.split(" || "):
        comparators: list[Comparator] = []
        if " - " in part:
            low, _, high = part.partition(" - ")
            lm, hm = _PARTIAL_RE.fullmatch(low), _PARTIAL_RE.fullmatch(high)
            if lm is None or hm is None or lm.group("op") or hm.group("op"):
                raise ValidationError(f"range {text!r}: a hyphen range is 'A.B.C - X.Y.Z'")
            comparators += _lower(_partial(lm, text)) + _upper_inclusive(_partial(hm, text))
        else:
            for word in part.split(" "):
                match = _PARTIAL_RE.fullmatch(word)
                if match is None:
                    raise ValidationError(
                        f"range {text!r} is not a semver range like '^1.2.3', '~1.2', "
                        "'>=1.0.0 <2.0.0', '1.x' or '^1.0.0 || ^2.0.0'"
                    )
                comparators += _desugar(match.group("op"), _partial(match, text), text)
        sets.append(tuple(comparators))
    return SemverRange(text, tuple(sets))
