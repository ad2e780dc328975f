"""Bad input: one readable error line, a non-zero exit, and the store exactly as it was."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from dre.protocol.car import encode_block, encode_header
from dre.protocol.cid import DAG_CBOR, RAW, cid_for
from dre.storage.repo import Repo

from .conftest import DRE, Result, Runner, run_dre


def snapshot(home: Path) -> tuple[object, ...]:
    with Repo.open(home) as repo:
        return (
            sorted(repo.store.iter_multihashes()),
            repo.store.stats(),
            sorted((bytes(cid), kind) for cid, kind in repo.store.pins()),
        )


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.code != 0, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("dre: error: "), lines[0]
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def populated(dre: Runner, home: Path, tmp_path: Path) -> Path:
    """A home with something in it, so 'unchanged' means something."""
    (tmp_path / "seed.bin").write_bytes(random.Random(5).randbytes(600000))
    dre("add", "seed.bin")
    return home


def test_missing_path(dre: Runner, populated: Path) -> None:
    before = snapshot(populated)
    assert_one_line_error(dre("add", "no/such/file", check=False), "no such file")
    assert snapshot(populated) == before


def test_unreadable_path(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret_dir = tmp_path / "tree"
    secret_dir.mkdir()
    (secret_dir / "ok.txt").write_bytes(b"fine\n")
    secret = secret_dir / "secret.txt"
    secret.write_bytes(b"no peeking\n")
    secret.chmod(0o000)
    env = {**os.environ, "DRE_HOME": str(home)}
    # root reads everything; as root, drop the capabilities that bypass file permissions.
    prefix = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
              if os.geteuid() == 0 else [])
    for target in (secret, secret_dir):
        proc = subprocess.run([*prefix, DRE, "add", str(target)], capture_output=True, env=env,
                              timeout=60, check=False)
        result = Result(proc.returncode, proc.stdout, proc.stderr.decode())
        assert_one_line_error(result, "permission denied", "secret.txt")
    assert not home.exists()  # refused before anything was created


def test_unsupported_file_type(dre: Runner, populated: Path, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "pipe")
    before = snapshot(populated)
    assert_one_line_error(dre("add", "d", check=False), "not a regular file")
    assert snapshot(populated) == before


TRUNCATED_CID = "bafkreifecoayx32gyqjxzuhzhy7duxyhnsjsanle4mpa7whwna4fjpsxl"


@pytest.mark.parametrize("bad", ["notacid", "bafy", "Qm123", "z" * 300, TRUNCATED_CID])
def test_invalid_cid(dre: Runner, populated: Path, bad: str) -> None:
    commands = (("cat", bad), ("get", bad, "-o", "x"), ("pin", "add", bad),
                ("dag", "export", bad, "-o", "x.car"))
    for args in commands:
        assert_one_line_error(dre(*args, check=False), "invalid CID")


def test_unknown_cid_is_not_found(dre: Runner, populated: Path) -> None:
    unknown = str(cid_for(b"never added", RAW))
    assert_one_line_error(dre("cat", unknown, check=False), "not found")
    assert_one_line_error(dre("dag", "export", unknown, "-o", "x.car", check=False), "not found")


def test_uninitialized_home(tmp_path: Path) -> None:
    result = run_dre(tmp_path / "nowhere", "repo", "stat", check=False)
    assert_one_line_error(result, "dre init")


def _export(dre: Runner, tmp_path: Path) -> tuple[str, bytes]:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "big.bin").write_bytes(random.Random(9).randbytes(700000))
    (tmp_path / "t" / "small.txt").write_bytes(b"small\n")
    root = dre("add", "-q", "t").text.strip()
    dre("dag", "export", root, "-o", "t.car")
    return root, (tmp_path / "t.car").read_bytes()


def _fresh_home_with(tmp_path: Path) -> Path:
    home = tmp_path / "importer-home"
    run_dre(home, "init")
    (tmp_path / "seed2.txt").write_bytes(b"seed two\n")
    run_dre(home, "add", str(tmp_path / "seed2.txt"))
    return home


def _import(home: Path, car: Path) -> Result:
    return run_dre(home, "dag", "import", str(car), check=False)


def test_truncated_car(dre: Runner, tmp_path: Path) -> None:
    _, car = _export(dre, tmp_path)
    home = _fresh_home_with(tmp_path)
    before = snapshot(home)
    rng = random.Random(3)
    cuts = sorted({1, 5, 20, 60, len(car) - 1, *(rng.randrange(1, len(car)) for _ in range(6))})
    for cut in cuts:
        bad = tmp_path / f"cut{cut}.car"
        bad.write_bytes(car[:cut])
        assert_one_line_error(_import(home, bad))
    assert snapshot(home) == before


def test_corrupt_car_block(dre: Runner, tmp_path: Path) -> None:
    _, car = _export(dre, tmp_path)
    home = _fresh_home_with(tmp_path)
    before = snapshot(home)
    corrupt = bytearray(car)
    corrupt[len(car) // 2] ^= 0xFF  # inside the big file's leaf bytes
    (tmp_path / "corrupt.car").write_bytes(bytes(corrupt))
    assert_one_line_error(_import(home, tmp_path / "corrupt.car"), "do not match")
    assert snapshot(home) == before


def test_block_with_wrong_bytes_for_its_cid(tmp_path: Path) -> None:
    home = _fresh_home_with(tmp_path)
    before = snapshot(home)
    honest = cid_for(b"the real bytes", RAW)
    car = encode_header([honest]) + encode_block(honest, b"the fake bytes")
    (tmp_path / "lie.car").write_bytes(car)
    assert_one_line_error(_import(home, tmp_path / "lie.car"), str(honest))
    assert snapshot(home) == before


def test_non_canonical_dag_cbor(tmp_path: Path) -> None:
    home = _fresh_home_with(tmp_path)
    before = snapshot(home)
    unsorted_map = bytes.fromhex("a2" "6162" "01" "6161" "02")  # {"b": 1, "a": 2}: out of order
    cid = cid_for(unsorted_map, DAG_CBOR)  # the hash is right; the encoding is not DAG-CBOR
    (tmp_path / "cbor.car").write_bytes(encode_header([cid]) + encode_block(cid, unsorted_map))
    assert_one_line_error(_import(home, tmp_path / "cbor.car"), str(cid))
    assert snapshot(home) == before


def test_not_a_car(tmp_path: Path) -> None:
    home = _fresh_home_with(tmp_path)
    before = snapshot(home)
    (tmp_path / "text.car").write_bytes(b"this is not a CAR file at all\n")
    assert_one_line_error(_import(home, tmp_path / "text.car"))
    assert_one_line_error(_import(home, tmp_path / "missing.car"), "no such file")
    assert_one_line_error(_import(home, tmp_path), "directory")
    assert snapshot(home) == before


def test_cat_of_a_directory(dre: Runner, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x")
    root = dre("add", "-q", "d").text.strip()
    assert_one_line_error(dre("cat", root, check=False), "directory")
    assert_one_line_error(dre("cat", f"{root}/nope", check=False), "nope")
