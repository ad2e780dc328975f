"""Tree diffs by CID, flattening real imported trees, document diffs and the changelog."""

from __future__ import annotations

import datetime as dt

import pytest
from dre.protocol.cid import CID, Block
from dre.protocol.errors import NotFoundError, ValidationError
from dre.protocol.importer import PROFILE_V1, DirectoryBuilder, ImportProfile, import_bytes
from dre.protocol.treediff import (
    ChangelogEntry,
    TreeDiff,
    changelog,
    diff_trees,
    doc_diff,
    flatten_tree,
    utc_date,
)
from hypothesis import given
from hypothesis import strategies as st


class Store:
    """Blocks in memory, recording which ones were read."""

    def __init__(self) -> None:
        self.blocks: dict[CID, bytes] = {}
        self.reads: list[CID] = []

    def put(self, block: Block) -> None:
        self.blocks[block.cid] = block.data

    def get(self, cid: CID) -> bytes:
        self.reads.append(cid)
        try:
            return self.blocks[cid]
        except KeyError:
            raise NotFoundError(str(cid)) from None


def build(
    store: Store,
    files: dict[str, bytes],
    symlinks: dict[str, str] | None = None,
    profile: ImportProfile = PROFILE_V1,
) -> CID:
    builder = DirectoryBuilder(profile, store.put)
    for path, data in files.items():
        entry, blocks = import_bytes(data, profile)
        for block in blocks:
            store.put(block)
        builder.add_file(path, entry)
    for path, target in (symlinks or {}).items():
        builder.add_symlink(path, target)
    return builder.finish().cid


OLD = {
    "README.md": b"# pkg\n",
    "src/pkg/__init__.py": b"VERSION = '1.0.0'\n",
    "src/pkg/util.py": b"def f(): pass\n",
    "docs/guide.md": b"guide\n",
}
NEW = {
    "README.md": b"# pkg\n",
    "src/pkg/__init__.py": b"VERSION = '1.1.0'\n",
    "src/pkg/extra.py": b"X = 1\n",
    "docs/guide.md": b"guide\n",
    "docs/api/index.md": b"api\n",
}


def test_flatten_lists_files_and_symlinks_only() -> None:
    store = Store()
    root = build(store, OLD, {"bin/run": "../src/pkg/__init__.py"})
    flat = flatten_tree(store.get, root)
    assert list(flat) == sorted([*OLD, "bin/run"])
    for path, data in OLD.items():
        assert flat[path] == import_bytes(data)[0].cid


def test_diff_of_real_trees() -> None:
    store = Store()
    old = flatten_tree(store.get, build(store, OLD))
    new = flatten_tree(store.get, build(store, NEW))
    assert diff_trees(old, new) == TreeDiff(
        added=("docs/api/index.md", "src/pkg/extra.py"),
        removed=("src/pkg/util.py",),
        changed=("src/pkg/__init__.py",),
    )
    assert diff_trees(old, old) == TreeDiff()
    assert not diff_trees(old, old)
    assert diff_trees(new, old) == TreeDiff(
        added=("src/pkg/util.py",),
        removed=("docs/api/index.md", "src/pkg/extra.py"),
        changed=("src/pkg/__init__.py",),
    )


def test_diff_never_reads_file_contents() -> None:
    # A 1 MiB file spans several leaves; flattening loads only its root node, never the leaves.
    store = Store()
    big = bytes(range(256)) * 4096
    root = build(store, {"big.bin": big, "small.txt": b"x"})
    leaves = {b.cid for b in import_bytes(big)[1]} - {import_bytes(big)[0].cid}
    assert leaves
    flatten_tree(store.get, root)
    assert not leaves & set(store.reads)


def test_flatten_refuses_a_file_root() -> None:
    store = Store()
    entry, blocks = import_bytes(b"just a file")
    for block in blocks:
        store.put(block)
    with pytest.raises(ValidationError, match="not a package directory"):
        flatten_tree(store.get, entry.cid)


def test_flatten_missing_block() -> None:
    store = Store()
    root = build(store, OLD)
    del store.blocks[import_bytes(OLD["README.md"])[0].cid]
    with pytest.raises(NotFoundError):
        flatten_tree(store.get, root)


@given(
    st.dictionaries(st.sampled_from("abcdef"), st.binary(max_size=3), max_size=6),
    st.dictionaries(st.sampled_from("abcdef"), st.binary(max_size=3), max_size=6),
)
def test_diff_trees_partitions_paths(
    old_data: dict[str, bytes], new_data: dict[str, bytes]
) -> None:
    old = {p: import_bytes(d)[0].cid for p, d in old_data.items()}
    new = {p: import_bytes(d)[0].cid for p, d in new_data.items()}
    diff = diff_trees(old, new)
    for field in (diff.added, diff.removed, diff.changed):
        assert list(field) == sorted(field)
    assert set(diff.added) == new.keys() - old.keys()
    assert set(diff.removed) == old.keys() - new.keys()
    assert set(diff.changed) == {p for p in old.keys() & new.keys() if old_data[p] != new_data[p]}


# --- doc diff -----------------------------------------------------------------------------------


def test_doc_diff() -> None:
    old = "---\nname: pkg\nversion: 1.0.0\n---\n# Title\n\nSame.\n"
    new = "---\nname: pkg\nversion: 1.1.0\n---\n# Title\n\nSame.\nMore.\n"
    assert doc_diff(old, new, "pkg@1.0.0", "pkg@1.1.0") == (
        "--- pkg@1.0.0\n"
        "+++ pkg@1.1.0\n"
        "@@ -1,7 +1,8 @@\n"
        " ---\n"
        " name: pkg\n"
        "-version: 1.0.0\n"
        "+version: 1.1.0\n"
        " ---\n"
        " # Title\n"
        " \n"
        " Same.\n"
        "+More.\n"
    )
    assert doc_diff(old, old, "a", "b") == ""


def test_doc_diff_marks_a_missing_final_newline() -> None:
    assert doc_diff("a\nb", "a\nc\n", "old", "new") == (
        "--- old\n+++ new\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n"
    )


def test_doc_diff_splits_on_newline_only() -> None:
    # U+2028 and \r are content, not line breaks.
    out = doc_diff("a\u2028b\r\nc\n", "a\u2028b\r\nd\n", "old", "new")
    assert " a\u2028b\r\n" in out
    assert out.count("\n") == 6


# --- changelog ----------------------------------------------------------------------------------


def test_changelog_newest_first() -> None:
    entries = [
        ChangelogEntry("1.0.0", 1_700_000_000, "A package.", None),
        ChangelogEntry(
            "1.1.0",
            1_710_000_000,
            "A package.",
            TreeDiff(added=("src/b.py",), changed=("README.md", "src/a.py")),
        ),
        ChangelogEntry("2.0.0", 1_720_000_000, "A better\npackage.", TreeDiff(removed=("x",))),
        ChangelogEntry("2.0.1", 1_720_086_400, "A better\npackage.", TreeDiff()),
    ]
    assert changelog(entries) == (
        "## 2.0.1 — 2024-07-04\n"
        "\n"
        "- no file changes\n"
        "\n"
        "## 2.0.0 — 2024-07-03\n"
        "\n"
        "- removed: x\n"
        "- description: A better package.\n"
        "\n"
        "## 1.1.0 — 2024-03-09\n"
        "\n"
        "- added: src/b.py\n"
        "- changed: README.md\n"
        "- changed: src/a.py\n"
        "\n"
        "## 1.0.0 — 2023-11-14\n"
        "\n"
        "- initial release\n"
        "- description: A package.\n"
    )
    assert changelog([]) == ""


@given(st.integers(0, 253_402_300_799))
def test_utc_date_matches_datetime(seconds: int) -> None:
    expected = dt.datetime.fromtimestamp(seconds, dt.UTC).date().isoformat()
    assert utc_date(seconds) == expected


def test_utc_date_beyond_datetime() -> None:
    assert utc_date(2**53 - 1) == "285428751-11-12"
    with pytest.raises(ValidationError):
        utc_date(-1)
