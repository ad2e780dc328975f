"""End-to-end tests of the IPFS-style commands, through the real `dre` executable."""

from __future__ import annotations

import random
from pathlib import Path

from .conftest import Runner, run_dre

HELLO_V1 = "bafkreifecoayx32gyqjxzuhzhy7duxyhnsjsanle4mpa7whwna4fjpsxlm"
HELLO_V0 = "QmaxtiD78ZJ6ZcoweeNCf6zDR1FD262n5DxtNiCUA42a2C"
DIR_V1 = "bafybeihlyq3dklezcx34pqqcxkw52zleeqvt7bmjulgev4nkik3uezxvma"
DIR_V0 = "QmT5ereKN8BxJduMvYGd9c4umQ9Rx4c2MztMpE4Wvt7GH6"


def make_reference_dir(root: Path) -> Path:
    tree = root / "tree"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"alpha\n")
    (tree / "b.txt").write_bytes(b"bravo\n")
    (tree / "c.bin").write_bytes(random.Random(7).randbytes(300000))
    return tree


def test_init_is_idempotent(dre: Runner) -> None:
    again = dre("init", "--json").json()
    assert again["created"] is False


def test_add_file_gives_reference_cids_and_cat_returns_bytes(dre: Runner, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello registry\n")
    added = dre("add", "--json", "hello.txt").json()
    assert added["cid"] == HELLO_V1
    assert dre("cat", HELLO_V1).out == b"hello registry\n"
    assert dre("add", "-q", "--cid-version", "0", "hello.txt").text.strip() == HELLO_V0
    assert dre("cat", HELLO_V0).out == b"hello registry\n"


def test_add_directory_prints_directory_cid_last(dre: Runner, tmp_path: Path) -> None:
    make_reference_dir(tmp_path)
    lines = dre("add", "tree").text.splitlines()
    assert lines[-1] == f"added {DIR_V1} tree"
    assert {line.split()[2] for line in lines} == {"tree", "tree/a.txt", "tree/b.txt", "tree/c.bin"}
    assert dre("add", "-q", "--cid-version", "0", "tree").text.strip() == DIR_V0
    assert dre("cat", f"{DIR_V1}/b.txt").out == b"bravo\n"
    assert dre("cat", f"/ipfs/{DIR_V0}/c.bin").out == random.Random(7).randbytes(300000)


def test_only_hash_stores_nothing(dre: Runner, tmp_path: Path) -> None:
    make_reference_dir(tmp_path)
    assert dre("add", "--only-hash", "-q", "tree").text.strip() == DIR_V1
    assert dre("repo", "stat", "--json").json()["blocks"] == 0
    missing = dre("cat", f"{DIR_V1}/a.txt", check=False)
    assert missing.code != 0 and "not found" in missing.err


def test_get_round_trips_a_tree(dre: Runner, tmp_path: Path) -> None:
    tree = make_reference_dir(tmp_path)
    (tree / "sub" / "empty").mkdir(parents=True)
    (tree / "sub" / "zero").write_bytes(b"")
    (tree / "sub" / "link").symlink_to("../a.txt")
    root = dre("add", "-q", "tree").text.strip()
    dre("get", root, "-o", "out")
    out = tmp_path / "out"
    for rel in ("a.txt", "b.txt", "c.bin", "sub/zero"):
        assert (out / rel).read_bytes() == (tree / rel).read_bytes()
    assert (out / "sub" / "empty").is_dir() and not any((out / "sub" / "empty").iterdir())
    assert (out / "sub" / "link").is_symlink()
    assert (out / "sub" / "link").readlink() == Path("../a.txt")
    dre("get", f"{root}/c.bin", "-o", "single.bin")
    assert (tmp_path / "single.bin").read_bytes() == (tree / "c.bin").read_bytes()


def test_dag_export_import_between_homes(dre: Runner, tmp_path: Path) -> None:
    make_reference_dir(tmp_path)
    root = dre("add", "-q", "tree").text.strip()
    exported = dre("dag", "export", root, "-o", "tree.car", "--json").json()
    # directory + a.txt + b.txt + c.bin (a parent over two 256 KiB-chunk leaves)
    assert exported["blocks"] == 6
    other = tmp_path / "other-home"
    run_dre(other, "init")
    imported = run_dre(other, "dag", "import", str(tmp_path / "tree.car"), "--json").json()
    assert imported["pinned"] == [root]
    assert run_dre(other, "cat", f"{root}/a.txt").out == b"alpha\n"
    assert run_dre(other, "repo", "verify", "--json").json()["ok"] is True


def test_pins_and_gc(dre: Runner, tmp_path: Path) -> None:
    make_reference_dir(tmp_path)
    (tmp_path / "hello.txt").write_bytes(b"hello registry\n")
    tree = dre("add", "-q", "tree").text.strip()
    hello = dre("add", "-q", "--no-pin", "hello.txt").text.strip()
    pins = {p["cid"]: p["type"] for p in dre("pin", "ls", "--json").json()}
    assert pins == {tree: "recursive"}
    gc = dre("repo", "gc", "--json").json()
    assert gc["removed_blocks"] == 1
    assert dre("cat", hello, check=False).code != 0
    assert dre("cat", f"{tree}/a.txt").out == b"alpha\n"
    dre("pin", "rm", tree)
    dre("repo", "gc")
    assert dre("repo", "stat", "--json").json()["blocks"] == 0


def test_dedup_is_reported(dre: Runner, tmp_path: Path) -> None:
    payload = random.Random(1).randbytes(3 * 262144)
    (tmp_path / "one.bin").write_bytes(payload)
    (tmp_path / "two.bin").write_bytes(payload + b"tail")
    dre("add", "one.bin")
    dre("add", "two.bin")
    stats = dre("repo", "stat", "--json").json()
    # The three full chunks are shared: stored once, counted twice.
    assert stats["dedup_saved_bytes"] >= 3 * 262144
    assert stats["logical_bytes"] - stats["physical_bytes"] == stats["dedup_saved_bytes"]
