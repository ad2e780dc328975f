"""Differences between two versions of a package, for ``dre diff`` and the generated changelog.

Trees are compared by CID only: two files are the same exactly when their CIDs are equal, so no
file bytes are read (and a diff of two huge packages costs one walk of each directory structure).
Both trees must come from the same import profile, or every file shows as changed.

Pure: blocks come from a caller-supplied getter; times are given, never read from a clock.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence

import msgspec

from .cid import CID
from .errors import ValidationError
from .exporter import BlockGetter, walk

__all__ = [
    "ChangelogEntry",
    "TreeDiff",
    "changelog",
    "diff_trees",
    "doc_diff",
    "flatten_tree",
    "utc_date",
]


class TreeDiff(msgspec.Struct, frozen=True):
    """Paths added, removed and changed (same path, other CID), each sorted."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class ChangelogEntry(msgspec.Struct, frozen=True):
    """One version in a changelog: ``time`` is the manifest's (unix seconds, UTC); ``diff`` is
    against the previous version, None for the first."""

    version: str
    time: int
    description: str
    diff: TreeDiff | None = None


def diff_trees(old: Mapping[str, CID], new: Mapping[str, CID]) -> TreeDiff:
    """Compare two flattened trees (path -> CID, as :func:`flatten_tree` makes) by CID."""
    return TreeDiff(
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        changed=tuple(sorted(p for p in old.keys() & new.keys() if old[p] != new[p])),
    )


def flatten_tree(get: BlockGetter, root: CID) -> dict[str, CID]:
    """Every file and symlink under the directory ``root``, as relative POSIX path -> CID.

    Directories are implied by the paths, so an empty directory does not appear (a generated
    package never has one). Blocks are verified against their CIDs by the exporter; only directory
    nodes are loaded besides the leaves' roots.
    """
    out: dict[str, CID] = {}
    for path, info in walk(get, root):
        if path == "":
            if info.kind != "directory":
                raise ValidationError(f"{root} is a {info.kind}, not a package directory")
            continue
        if info.kind != "directory":
            out[path] = info.cid
    return dict(sorted(out.items()))


def _lines(text: str) -> list[str]:
    # Split on "\n" only: str.splitlines() would also break on \r, \v, \x1c, U+2028 and so on,
    # which a document may legitimately contain inside a line.
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def doc_diff(
    old_text: str, new_text: str, old_label: str, new_label: str, *, context: int = 3
) -> str:
    """A unified diff of two documents, "" when they are equal.

    Deterministic: no file dates in the header, LF line ends, and a final line without a newline
    is marked ``\\ No newline at end of file`` as diff(1) and git do.
    """
    out: list[str] = []
    for line in difflib.unified_diff(
        _lines(old_text), _lines(new_text), old_label, new_label, n=context
    ):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01, proleptic Gregorian.

    H. Hinnant's algorithm (chrono-compatible low-level date algorithms): exact for any integer,
    where datetime stops at year 9999 and manifest times may go up to 2**53 - 1 seconds.
    """
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def utc_date(time: int) -> str:
    """The ISO 8601 calendar date (``YYYY-MM-DD``, UTC) of a unix time in seconds."""
    if time < 0:
        raise ValidationError(f"time {time} is before 1970")
    year, month, day = _civil_from_days(time // 86_400)
    return f"{year:04d}-{month:02d}-{day:02d}"


def _single_line(text: str) -> str:
    # A description with a newline would break the list item it sits in.
    return " ".join(text.split())


def changelog(entries: Sequence[ChangelogEntry]) -> str:
    """A Markdown changelog, newest first.

    ``entries`` are in history order, oldest first (the order of the ``previous`` chain, which is
    what each ``diff`` is relative to). Each version gets a ``## VERSION — DATE`` heading and one
    list item per added, removed and changed path, plus the new description when it differs from
    the previous version's. The first version is listed as the initial release.
    """
    sections: list[str] = []
    previous: ChangelogEntry | None = None
    for entry in entries:
        sections.append("\n".join(_section(entry, previous)) + "\n")
        previous = entry
    sections.reverse()
    return "\n".join(sections)


def _section(entry: ChangelogEntry, previous: ChangelogEntry | None) -> Iterator[str]:
    yield f"## {entry.version} — {utc_date(entry.time)}"
    yield ""
    if entry.diff is None or previous is None:
        yield "- initial release"
        if entry.description:
            yield f"- description: {_single_line(entry.description)}"
        return
    items = [
        *(f"- added: {p}" for p in entry.diff.added),
        *(f"- removed: {p}" for p in entry.diff.removed),
        *(f"- changed: {p}" for p in entry.diff.changed),
    ]
    if entry.description != previous.description:
        items.append(f"- description: {_single_line(entry.description)}")
    yield from items or ["- no file changes"]
