"""Dependency resolution for ``dre install NAME[@RANGE]``.

The result is flat, like npm's ``node_modules`` but strict: exactly one version per package name,
so two packages that need incompatible versions of a third are an error, never two nested copies.
Each name gets the highest version that satisfies every range applying to it; when a choice makes
something else unsatisfiable, the search backtracks and revisits it. Dependency cycles are errors
too (a package cannot be installed before itself), and the search avoids a version that would
close one if another version does not.

The search is chronological backtracking with forward checking: names are decided in the order
they are first required (breadth first, dependencies by name), versions newest first; every new
range immediately narrows the candidates left for its name, so a dead end is noticed where it is
caused. It is bounded by ``max_steps`` attempts, after which it gives up with a clear error.

Pure: the caller supplies the catalog (all known versions of a name). Errors are
:class:`~dre.protocol.errors.ValidationError` with one human line; a catalog that contradicts
itself raises :class:`~dre.protocol.errors.IntegrityError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from .errors import IntegrityError, ValidationError
from .semver import SemVer, SemverRange, parse_range

__all__ = [
    "DEFAULT_MAX_STEPS",
    "Candidate",
    "Catalog",
    "Resolution",
    "resolve",
]

#: Candidate versions tried before giving up. A resolution without conflicts takes one step per
#: package, so this only bites on pathological catalogs.
DEFAULT_MAX_STEPS = 100_000
#: Versions listed in a "no version satisfies" error; the newest are shown.
_MAX_LISTED = 10


class Candidate(msgspec.Struct, frozen=True):
    """One version of a package as the resolver sees it.

    ``dependencies`` maps names to range text, as in the manifest. ``key`` is opaque to the
    resolver and handed back in the :class:`Resolution` (e.g. the manifest CID).
    """

    name: str
    version: SemVer
    dependencies: dict[str, str] = msgspec.field(default_factory=dict)
    key: object = None

    def label(self) -> str:
        """``name@version``, as errors show it."""
        return f"{self.name}@{self.version}"


#: All known versions of a name, in any order; an empty sequence if the name is unknown.
Catalog = Callable[[str], Sequence[Candidate]]


class Resolution(msgspec.Struct, frozen=True):
    """A consistent set of packages to install.

    ``packages`` holds every package, the root included, keyed and sorted by name. ``order`` lists
    the same names with every package after all of its dependencies (the root last), the order to
    install them in.
    """

    root: Candidate
    packages: dict[str, Candidate]
    order: tuple[str, ...]


# A requirement: who asked (None for the install request itself), the range text, the parsed range.
_Requirement = tuple[Candidate | None, str, SemverRange]


def _who(requirer: Candidate | None) -> str:
    return "the request" if requirer is None else requirer.label()


def _by(requirer: Candidate | None) -> str:
    return "" if requirer is None else f" (required by {requirer.label()})"


@dataclass
class _Frame:
    """One decision: the name being decided, its options newest first, and how to undo the
    option currently applied."""

    name: str
    options: list[Candidate]
    next: int = 0
    applied: bool = False
    undo: list[tuple[str, str, list[Candidate] | None]] = field(default_factory=list)


class _Failure(Exception):
    """Internal: an attempt failed, either with a ready message or with the requirements on one
    name that could not be met, explained only if the message is going to be used."""

    def __init__(
        self,
        message: str = "",
        *,
        name: str = "",
        requirements: Sequence[_Requirement] = (),
        chosen: Candidate | None = None,
    ) -> None:
        super().__init__(message or name)
        self.message = message
        self.name = name
        self.requirements = tuple(requirements)  # a copy: undo() pops the live list
        self.chosen = chosen


class _Resolver:
    def __init__(self, catalog: Catalog, max_packages: int, max_steps: int) -> None:
        self.catalog = catalog
        self.max_packages = max_packages
        self.max_steps = max_steps
        self.versions: dict[str, list[Candidate]] = {}  # catalog answers, newest first
        self.ranges: dict[str, SemverRange | ValidationError] = {}
        self.selected: dict[str, Candidate] = {}
        self.requirements: dict[str, list[_Requirement]] = {}
        self.remaining: dict[str, list[Candidate]] = {}  # options left for names not yet decided
        self.pending: list[str] = []  # names in the order they were first required
        self.position: dict[str, int] = {}  # name -> index in pending
        self.first_hard: str | None = None
        self.first_soft: str | None = None

    # --- catalog and ranges -------------------------------------------------------------------

    def all_versions(self, name: str) -> list[Candidate]:
        cached = self.versions.get(name)
        if cached is not None:
            return cached
        seen: dict[str, Candidate] = {}
        for candidate in self.catalog(name):
            if candidate.name != name:
                raise IntegrityError(
                    f"catalog returned {candidate.label()} when asked for {name!r}"
                )
            text = str(candidate.version)
            if text in seen:
                raise IntegrityError(f"catalog lists {name}@{text} twice")
            seen[text] = candidate
        # Newest first; build metadata breaks precedence ties so the catalog's order never matters.
        ordered = sorted(seen.values(), key=lambda c: (c.version.key(), c.version.build))
        ordered.reverse()
        self.versions[name] = ordered
        return ordered

    def parse(self, text: str) -> SemverRange:
        cached = self.ranges.get(text)
        if cached is None:
            try:
                cached = parse_range(text)
            except ValidationError as exc:
                cached = exc
            self.ranges[text] = cached
        if isinstance(cached, ValidationError):
            raise cached
        return cached

    # --- messages -----------------------------------------------------------------------------

    def explain(
        self, name: str, requirements: Sequence[_Requirement], chosen: Candidate | None
    ) -> tuple[str, bool]:
        """Why no version of ``name`` fits ``requirements`` (the newest is the last), and whether
        that is "hard": a fact about the ranges (unknown name, a range nothing satisfies, ranges
        that cannot agree) rather than about ``chosen``, an earlier choice that backtracking may
        still revise. A hard reason makes the better final message."""
        versions = self.all_versions(name)
        newest_requirer = requirements[-1][0]
        if not versions:
            return f"no package named {name!r}{_by(newest_requirer)}", True
        for requirer, text, rng in reversed(requirements):
            if not any(rng.satisfies(c.version) for c in versions):
                shown = [str(c.version) for c in reversed(versions[:_MAX_LISTED])]
                more = len(versions) - len(shown)
                available = ", ".join(shown) + (f" and {more} older" if more else "")
                return (
                    f"no version of {name!r} satisfies {text}{_by(requirer)}; "
                    f"available: {available}"
                ), True
        # A pair that cannot agree, preferring one that involves the newest requirement.
        for i in range(len(requirements) - 1, 0, -1):
            for j in range(i):
                (b, b_text, b_rng), (a, a_text, a_rng) = requirements[i], requirements[j]
                if not any(
                    a_rng.satisfies(c.version) and b_rng.satisfies(c.version) for c in versions
                ):
                    return (
                        f"{name!r}: {_who(a)} requires {a_text} but {_who(b)} requires {b_text}"
                    ), True
        if not any(all(r.satisfies(c.version) for _, _, r in requirements) for c in versions):
            listed = ", ".join(f"{_who(r)} requires {t}" for r, t, _ in requirements)
            return f"{name!r}: no version satisfies all of: {listed}", True
        # The ranges agree; only the version already chosen for `name` does not fit.
        assert chosen is not None
        requirer, text, _ = requirements[-1]
        earlier = ", ".join(f"{_who(r)} requires {t}" for r, t, _ in requirements[:-1])
        return (
            f"{name!r}: {_who(requirer)} requires {text} but {chosen.label()} was chosen "
            f"({earlier})"
        ), False

    def record(self, failure: _Failure) -> None:
        """Keep the first hard and the first soft reason. Once a hard one is known nothing else
        is needed, which keeps long backtracking cheap."""
        if self.first_hard is not None:
            return
        if failure.message:
            message, hard = failure.message, True
        else:
            message, hard = self.explain(failure.name, failure.requirements, failure.chosen)
        if hard:
            self.first_hard = message
        elif self.first_soft is None:
            self.first_soft = message

    # --- the search ---------------------------------------------------------------------------

    def cycle_through(self, candidate: Candidate) -> list[str] | None:
        """A cycle of selected packages through ``candidate`` (just selected), as names from
        ``candidate`` back to it, or None. Any new cycle must pass through the newest choice."""
        target = candidate.name
        parents: dict[str, str] = {}
        stack = [target]
        while stack:
            current = stack.pop()
            for dep in sorted(self.selected[current].dependencies):
                if dep == target:
                    path = [current]
                    while path[-1] != target:
                        path.append(parents[path[-1]])
                    path.reverse()
                    return [*path, target]
                if dep in self.selected and dep not in parents and dep != target:
                    parents[dep] = current
                    stack.append(dep)
        return None

    def apply(self, frame: _Frame, candidate: Candidate) -> None:
        """Select ``candidate`` for ``frame.name`` and add its requirements, recording how to
        undo each change in ``frame.undo``; raise _Failure (after undoing) if it cannot fit."""
        frame.applied = True
        self.selected[candidate.name] = candidate
        frame.undo.append(("select", candidate.name, None))
        try:
            cycle = self.cycle_through(candidate)
            if cycle is not None:
                # Start at the package decided first, so the message reads from the root down.
                start = min(range(len(cycle) - 1), key=lambda i: self.position[cycle[i]])
                names = cycle[start:-1] + cycle[: start + 1]
                path = " -> ".join(self.selected[n].label() for n in names)
                raise _Failure(f"dependency cycle: {path}")
            for dep in sorted(candidate.dependencies):
                text = candidate.dependencies[dep]
                try:
                    rng = self.parse(text)
                except ValidationError as exc:
                    raise _Failure(
                        f"{candidate.label()} has an invalid range for {dep!r}: {exc}"
                    ) from None
                requirements = self.requirements.setdefault(dep, [])
                requirements.append((candidate, text, rng))
                frame.undo.append(("require", dep, None))
                chosen = self.selected.get(dep)
                if chosen is not None:
                    if not rng.satisfies(chosen.version):
                        raise _Failure(name=dep, requirements=requirements, chosen=chosen)
                    continue
                if dep not in self.position:
                    self.position[dep] = len(self.pending)
                    self.pending.append(dep)
                    self.remaining[dep] = self.all_versions(dep)
                    frame.undo.append(("queue", dep, None))
                options = self.remaining[dep]
                narrowed = [c for c in options if rng.satisfies(c.version)]
                if len(narrowed) != len(options):
                    self.remaining[dep] = narrowed
                    frame.undo.append(("narrow", dep, options))
                if not narrowed:
                    raise _Failure(name=dep, requirements=requirements)
            if len(self.pending) > self.max_packages:
                raise ValidationError(
                    f"resolution needs more than {self.max_packages} packages; refusing"
                )
        except _Failure:
            self.undo(frame)
            raise

    def undo(self, frame: _Frame) -> None:
        for action, name, old in reversed(frame.undo):
            if action == "select":
                del self.selected[name]
            elif action == "require":
                self.requirements[name].pop()
            elif action == "queue":
                self.pending.pop()
                del self.position[name]
                del self.remaining[name]
            else:  # "narrow"
                assert old is not None
                self.remaining[name] = old
        frame.undo.clear()
        frame.applied = False

    def run(self, root_name: str, root_range: str) -> Resolution:
        rng = parse_range(root_range)  # a bad range on the command line fails right here
        self.pending.append(root_name)
        self.position[root_name] = 0
        self.requirements[root_name] = [(None, root_range, rng)]
        self.remaining[root_name] = [
            c for c in self.all_versions(root_name) if rng.satisfies(c.version)
        ]
        frames: list[_Frame] = []
        steps = 0
        while len(frames) < len(self.pending):
            name = self.pending[len(frames)]
            frames.append(_Frame(name, self.remaining[name]))
            if not frames[-1].options:
                self.record(_Failure(name=name, requirements=self.requirements[name]))
            # Advance the innermost frame to its next option that fits, backtracking outward
            # when a frame runs out.
            while frames:
                frame = frames[-1]
                if frame.applied:
                    self.undo(frame)
                if frame.next >= len(frame.options):
                    frames.pop()
                    continue
                candidate = frame.options[frame.next]
                frame.next += 1
                steps += 1
                if steps > self.max_steps:
                    raise ValidationError(
                        f"resolution too complex: gave up after {self.max_steps} attempts "
                        f"(resolving {root_name}@{root_range})"
                    )
                try:
                    self.apply(frame, candidate)
                except _Failure as failure:
                    self.record(failure)
                    continue
                break
            if not frames:
                message = self.first_hard or self.first_soft
                assert message is not None
                raise ValidationError(message)
        return self.result(root_name)

    def result(self, root_name: str) -> Resolution:
        packages = dict(sorted(self.selected.items()))
        # Post-order depth-first walk from the root: dependencies before dependents. The graph is
        # acyclic (apply() refused every cycle), so "seen" is enough.
        order: list[str] = []
        seen = {root_name}
        stack: list[tuple[str, list[str]]] = [
            (root_name, sorted(packages[root_name].dependencies, reverse=True))
        ]
        while stack:
            name, todo = stack[-1]
            if todo:
                dep = todo.pop()
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, sorted(packages[dep].dependencies, reverse=True)))
                continue
            stack.pop()
            order.append(name)
        return Resolution(packages[root_name], packages, tuple(order))


def resolve(
    root_name: str,
    root_range: str,
    catalog: Catalog,
    *,
    max_packages: int = 10_000,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Resolution:
    """Choose one version of ``root_name`` matching ``root_range`` and of everything it needs.

    Every name gets the highest version that satisfies all the ranges applying to it (npm
    semantics: prereleases only where a range opts in), revising earlier choices when they make a
    later name unsatisfiable. The answer depends only on the catalog's contents, not its order.

    Raises :class:`ValidationError` with one line: an unknown package, a range nothing satisfies,
    two incompatible ranges, a dependency cycle, more than ``max_packages`` packages, or more
    than ``max_steps`` attempts ("resolution too complex"). Raises :class:`IntegrityError` if the
    catalog answers for another name or lists a version twice.
    """
    return _Resolver(catalog, max_packages, max_steps).run(root_name, root_range)
