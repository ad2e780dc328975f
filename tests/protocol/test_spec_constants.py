"""The constants table of specs/content-addressing.md is what the code uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dre.protocol import car, cid, dagcbor, hamt, importer
from dre.storage import blockstore

SPEC = Path(__file__).resolve().parents[2] / "specs" / "content-addressing.md"

IN_CODE = {
    "chunk_size": importer.ImportProfile().chunk_size,
    "max_links": importer.ImportProfile().max_links,
    "shard_threshold_bytes": importer.ImportProfile().shard_threshold_bytes,
    "hamt_fanout": importer.ImportProfile().hamt_fanout,
    "hamt_hash_code": hamt.HAMT_HASH_CODE,
    "max_cid_text": cid.MAX_CID_TEXT,
    "dagcbor_max_depth": dagcbor.MAX_DEPTH,
    "dagcbor_max_bytes": dagcbor.DEFAULT_MAX_SIZE,
    "car_max_block_bytes": car.DEFAULT_MAX_BLOCK_SIZE,
    "car_max_header_bytes": car.DEFAULT_MAX_HEADER_SIZE,
    "store_max_block_bytes": blockstore.MAX_BLOCK_SIZE,
    "max_name_bytes": importer.MAX_NAME_BYTES,
    "max_path_depth": importer.MAX_PATH_DEPTH,
    "max_symlink_target_bytes": importer.MAX_SYMLINK_TARGET,
}


def spec_constants() -> dict[str, int]:
    text = SPEC.read_text(encoding="utf-8")
    section = text.split("## 8. Constants", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([a-z0-9_]+) \| (0x[0-9a-f]+|\d+) \|", section, flags=re.M)
    return {name: int(value, 0) for name, value in rows}


def test_every_spec_constant_is_checked() -> None:
    assert set(spec_constants()) == set(IN_CODE)


@pytest.mark.parametrize("name", sorted(IN_CODE))
def test_constant_matches_spec(name: str) -> None:
    assert spec_constants()[name] == IN_CODE[name]
