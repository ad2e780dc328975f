"""`dre key gen|list|export|import` end to end, through the real `dre` executable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from dre.protocol.keys import public_key_from_peer_id

from .conftest import DRE, Result, Runner, run_dre, run_on_terminal

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture
def key(dre: Runner) -> Runner:
    """`dre key ...` in the test's node home."""
    def runner(*args: str, check: bool = True, input: bytes | None = None) -> Result:
        return dre("key", *args, check=check, input=input)

    return runner


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.code != 0, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("dre: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_help_lists_commands(tmp_path: Path) -> None:
    text = run_dre(tmp_path / "unused", "key", "--help").text
    for command in ("gen", "list", "export", "import"):
        assert command in text


def test_gen_list_export_json(key: Runner, home: Path) -> None:
    gen = key("gen", "alice", "--json").json()
    assert gen["name"] == "alice" and gen["peer_id"].startswith("12D3KooW")
    assert set(gen) == {"name", "peer_id", "created"}
    public_key_from_peer_id(gen["peer_id"])  # a valid Ed25519 peer ID
    plain = key("gen", "bob")
    assert plain.text.strip().startswith("12D3KooW") and plain.err == ""
    listed = key("list", "--json").json()
    assert [k["name"] for k in listed] == ["alice", "bob"]
    assert listed[0]["peer_id"] == gen["peer_id"]
    assert listed[1]["peer_id"] == plain.text.strip()
    lines = key("list").text.splitlines()
    assert lines[0].split() == ["alice", gen["peer_id"]]
    assert key("export", "alice").text.strip() == gen["peer_id"]
    assert key("export", "alice", "--json").json() == {"name": "alice",
                                                       "peer_id": gen["peer_id"]}
    if os.name == "posix":
        assert mode(home / "keys") == 0o700
        assert mode(home / "keys" / "alice.key") == 0o600


def test_list_empty(key: Runner) -> None:
    assert key("list", "--json").json() == []
    assert key("list").text == ""


def test_export_private_import_round_trip(key: Runner, tmp_path: Path) -> None:
    peer_id = key("gen", "mine", "--json").json()["peer_id"]
    exported = key("export", "mine", "--private", "-o", "mine.key", "--json").json()
    assert exported == {"name": "mine", "peer_id": peer_id, "path": "mine.key"}
    out = tmp_path / "mine.key"
    if os.name == "posix":
        assert mode(out) == 0o600
    other = tmp_path / "other-home"
    run_dre(other, "init")
    imported = run_dre(other, "key", "import", "copy", str(out), "--json").json()
    assert imported["name"] == "copy" and imported["peer_id"] == peer_id
    assert run_dre(other, "key", "export", "copy").text.strip() == peer_id
    # A pipe is not a terminal: the key file may go to stdout, and back in through stdin.
    piped = key("export", "mine", "--private")
    assert piped.out == out.read_bytes()
    third = tmp_path / "third-home"
    run_dre(third, "init")
    assert run_dre(third, "key", "import", "k", "-", input=piped.out).text.strip() == peer_id


def test_export_private_refuses_existing_output(key: Runner, tmp_path: Path) -> None:
    key("gen", "k")
    (tmp_path / "taken").write_bytes(b"precious")
    assert_one_line_error(key("export", "k", "--private", "-o", "taken", check=False),
                          "already exists")
    assert (tmp_path / "taken").read_bytes() == b"precious"
    assert_one_line_error(key("export", "k", "--private", "-o", "no/such/dir/k.key",
                              check=False), "not a directory")


def test_export_private_refuses_a_terminal(key: Runner, home: Path, tmp_path: Path) -> None:
    key("gen", "k")
    code, _, screen, err = run_on_terminal([DRE, "key", "export", "k", "--private"], home,
                                           cwd=tmp_path, stdout_on_terminal=True)
    assert code != 0
    assert "refusing to print a private key to a terminal" in err
    assert b"seed" not in screen


def test_errors_are_one_line(key: Runner, tmp_path: Path) -> None:
    key("gen", "dup")
    assert_one_line_error(key("gen", "dup", check=False), "key 'dup' already exists")
    assert_one_line_error(key("gen", "Bad/Name", check=False), "invalid key name")
    assert_one_line_error(key("gen", "--", "-x", check=False), "invalid key name")
    assert_one_line_error(key("export", "nope", check=False), "no key named 'nope'")
    (tmp_path / "junk.key").write_bytes(b"not a key")
    assert_one_line_error(key("import", "j", "junk.key", check=False),
                          "junk.key: not a DRE key file")
    assert_one_line_error(key("import", "j", "missing.key", check=False), "missing.key")
    assert_one_line_error(key("export", "dup", "-o", "x", check=False), "--private")
    assert_one_line_error(key("export", "dup", "--private", "--json", check=False), "-o FILE")
    assert [k["name"] for k in key("list", "--json").json()] == ["dup"]


@posix_only
def test_loose_permissions_refused(key: Runner, home: Path) -> None:
    key("gen", "k")
    path = home / "keys" / "k.key"
    path.chmod(0o644)
    for args in (("export", "k"), ("list",), ("export", "k", "--private", "-o", "out.key")):
        assert_one_line_error(key(*args, check=False), "chmod 600", str(path))
    path.chmod(0o600)
    assert key("export", "k").text.startswith("12D3KooW")


def test_commands_need_an_initialized_home(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    for args in (("key", "list"), ("key", "gen", "k"), ("key", "export", "k")):
        result = run_dre(absent, *args, check=False)
        assert_one_line_error(result, "no DRE home at", "dre init")
    assert not absent.exists()
