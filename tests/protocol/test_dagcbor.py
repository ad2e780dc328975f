from __future__ import annotations

import base64
import enum
import json
import math
import struct
from pathlib import Path
from typing import Any

import cbor2
import pytest
from dre.protocol import cid as cid_mod
from dre.protocol import dagcbor
from dre.protocol.cid import CID, DAG_CBOR, DAG_PB, RAW, Block, cid_for
from dre.protocol.errors import IntegrityError, ValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

VECTORS = json.loads(
    (Path(__file__).parents[2] / "specs" / "vectors" / "dag-cbor.json").read_text("utf-8")
)


def from_json(value: Any) -> Any:
    """DAG-JSON-ish vector value -> Python value."""
    if isinstance(value, dict):
        if set(value) == {"/"}:
            inner = value["/"]
            if isinstance(inner, str):
                return CID.decode(inner)
            return base64.b64decode(inner["bytes"] + "=" * (-len(inner["bytes"]) % 4))
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def same(a: Any, b: Any) -> bool:
    """Equality that also tells int from float and True from 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return bool(a == b)


# --- vectors ---------------------------------------------------------------------------------


def test_hello_world() -> None:
    block = dagcbor.encode_block({"hello": "world"})
    assert str(block.cid) == "bafyreidykglsfhoixmivffc5uwhcgshx4j465xwqntbmu43nb2dzqwfvae"
    assert dagcbor.decode_block(block) == {"hello": "world"}


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    value = from_json(vector["value"])
    assert dagcbor.encode(value) == data
    decoded = dagcbor.decode(data)
    assert same(decoded, value) or same(decoded, _canonical_order(value))
    block = Block(CID.decode(vector["cid"]), data)
    assert str(dagcbor.encode_block(value).cid) == vector["cid"]
    assert same(dagcbor.decode_block(block), decoded)


def _canonical_order(value: Any) -> Any:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return {k: _canonical_order(value[k]) for k in keys}
    if isinstance(value, list):
        return [_canonical_order(v) for v in value]
    return value


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector(vector: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError, match=vector["reason"]):
        dagcbor.decode(bytes.fromhex(vector["hex"]))


# --- encoding --------------------------------------------------------------------------------


def test_keys_sorted_length_first() -> None:
    assert list(dagcbor.decode(dagcbor.encode({"bb": 1, "c": 2, "aaa": 3, "a": 4}))) == [
        "a",
        "c",
        "bb",
        "aaa",
    ]


def test_floats_always_64_bit() -> None:
    assert dagcbor.encode(1.5).hex() == "fb3ff8000000000000"
    assert dagcbor.encode(0.0).hex() == "fb0000000000000000"
    assert dagcbor.encode(-0.0).hex() == "fb8000000000000000"
    assert dagcbor.encode(1.0) != dagcbor.encode(1)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_encode_rejects_nan_and_infinity(value: float) -> None:
    with pytest.raises(ValidationError, match=r"at \$\.x\[0\]"):
        dagcbor.encode({"x": [value]})


def test_cid_encoding() -> None:
    cid = cid_for(b"hi", RAW)
    assert dagcbor.encode(cid) == bytes.fromhex("d82a5825") + b"\x00" + bytes(cid)
    v0 = cid_for(b"hi", DAG_PB, 0)
    assert dagcbor.encode(v0) == bytes.fromhex("d82a5823") + b"\x00" + bytes(v0)
    decoded = dagcbor.decode(dagcbor.encode([cid, v0]))
    assert decoded == [cid, v0]
    assert all(isinstance(c, CID) for c in decoded)
    assert str(decoded[0]) == str(cid)  # CIDv1 comes back in base32, CIDv0 in base58btc
    assert str(decoded[1]) == str(v0)


def test_integer_range() -> None:
    assert dagcbor.decode(dagcbor.encode(2**64 - 1)) == 2**64 - 1
    assert dagcbor.decode(dagcbor.encode(-(2**64))) == -(2**64)
    for bad in (2**64, -(2**64) - 1):
        with pytest.raises(ValidationError, match="64 bits"):
            dagcbor.encode([bad])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"deps": [1, 2, {3}]}, r"at \$\.deps\[2\]: unsupported type set"),
        ({1: "x"}, r"at \$: map key 1 is not a string \(int\)"),
        ({"a b": {"c": object()}}, r"at \$\['a b'\]\.c: unsupported type object"),
        (complex(1, 2), r"at \$: unsupported type complex"),
        ({"s": "\ud800"}, r"at \$\.s: text is not valid Unicode"),
        ({"\ud800": 1}, r"map key .* is not valid Unicode"),
        (cbor2.CBORTag(1, 2), "unsupported type CBORTag"),
    ],
)
def test_encode_rejects(value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        dagcbor.encode(value)


def test_encode_depth_limit() -> None:
    value: Any = []
    for _ in range(dagcbor.MAX_DEPTH - 1):
        value = [value]
    assert dagcbor.decode(dagcbor.encode(value)) == value
    with pytest.raises(ValidationError, match="nesting deeper"):
        dagcbor.encode([value])


def test_encode_cycle_is_validation_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValidationError):
        dagcbor.encode(loop)


def test_subclasses_and_tuples() -> None:
    class Colour(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    assert dagcbor.encode((Colour.RED, Name("x"), bytearray(b"y"), {Name("k"): 1})) == (
        dagcbor.encode([1, "x", b"y", {"k": 1}])
    )


# --- decoding --------------------------------------------------------------------------------


def test_decode_size_limit() -> None:
    data = dagcbor.encode(b"x" * 100)
    assert dagcbor.decode(data, max_size=len(data)) == b"x" * 100
    with pytest.raises(IntegrityError, match="exceeds"):
        dagcbor.decode(data, max_size=len(data) - 1)
    big = dagcbor.encode(b"x" * dagcbor.DEFAULT_MAX_SIZE)
    with pytest.raises(IntegrityError, match="exceeds"):
        dagcbor.decode(big)


def test_decode_requires_bytes() -> None:
    with pytest.raises(ValidationError):
        dagcbor.decode("a16568656c6c6f65776f726c64")  # type: ignore[arg-type]
    assert dagcbor.decode(bytearray(b"\x01")) == 1


def test_decode_block_checks_hash_and_codec() -> None:
    block = dagcbor.encode_block({"a": 1})
    with pytest.raises(IntegrityError, match="do not match"):
        dagcbor.decode_block(Block(block.cid, dagcbor.encode({"a": 2})))
    raw_block = Block(cid_for(block.data, RAW), block.data)
    with pytest.raises(IntegrityError, match="not dag-cbor"):
        dagcbor.decode_block(raw_block)


def test_decode_never_uses_cbor2_semantics() -> None:
    # cbor2 would turn these into a bignum / regex / shared reference; we must refuse them.
    for hex_ in ("c249010000000000000000", "d823656162636465", "d81c81d81d00"):
        with pytest.raises(IntegrityError, match="tag"):
            dagcbor.decode(bytes.fromhex(hex_))


def test_read_cid_and_bytes() -> None:
    cid = cid_for(b"x", DAG_CBOR)
    raw = cid_mod.cid_to_bytes(cid)
    assert raw == bytes(cid)
    assert cid_mod.read_cid(raw + b"tail") == (cid, len(raw))
    assert cid_mod.cid_from_bytes(raw) == cid
    v0 = cid_for(b"x", DAG_PB, 0)
    assert cid_mod.cid_to_bytes(v0) == bytes(v0)
    assert cid_mod.cid_from_bytes(bytes(v0)) == v0
    with pytest.raises(IntegrityError, match="trailing"):
        cid_mod.cid_from_bytes(raw + b"\x00")
    with pytest.raises(IntegrityError, match="unknown codec"):
        cid_mod.cid_from_bytes(b"\x01\xff\xff\x03" + raw[2:])
    with pytest.raises(IntegrityError, match="too long for sha2-256"):
        cid_mod.cid_from_bytes(b"\x01\x71\x12\x21" + bytes(33))
    for cut in range(len(raw)):
        with pytest.raises(IntegrityError):
            cid_mod.cid_from_bytes(raw[:cut])


# --- properties ------------------------------------------------------------------------------

_cids = st.builds(
    cid_for, st.binary(max_size=8), st.sampled_from([RAW, DAG_CBOR, DAG_PB]), st.just(1)
) | st.builds(lambda data: cid_for(data, DAG_PB, 0), st.binary(max_size=8))
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary()
    | _cids
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


@given(_values)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_round_trip(value: Any) -> None:
    data = dagcbor.encode(value)
    decoded = dagcbor.decode(data)
    assert same(decoded, _canonical_order(value))
    assert dagcbor.encode(decoded) == data


@given(_values)
def test_agrees_with_cbor2(value: Any) -> None:
    # An independent decoder must see the same data model (CIDs as tag 42).
    data = dagcbor.encode(value)
    loaded = cbor2.loads(data)
    expected = _to_cbor2_view(_canonical_order(value))
    assert loaded == expected


def _to_cbor2_view(value: Any) -> Any:
    if isinstance(value, CID):
        return cbor2.CBORTag(42, b"\x00" + bytes(value))
    if isinstance(value, dict):
        return {k: _to_cbor2_view(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cbor2_view(v) for v in value]
    return value


def _check_decode(data: bytes) -> None:
    """decode() either raises IntegrityError or returns a value that re-encodes to ``data``."""
    try:
        value = dagcbor.decode(data)
    except IntegrityError:
        return
    assert dagcbor.encode(value) == data


@given(st.binary(max_size=64))
def test_decode_random_bytes(data: bytes) -> None:
    _check_decode(data)


@given(_values, st.data())
def test_decode_mutated_bytes(value: Any, draw: st.DataObject) -> None:
    data = bytearray(dagcbor.encode(value))
    for _ in range(draw.draw(st.integers(1, 3))):
        op = draw.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw.draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw.draw(st.integers(0, 7))
        elif op == "insert":
            data.insert(pos, draw.draw(st.integers(0, 255)))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    _check_decode(bytes(data))


@given(st.lists(st.sampled_from([0x80, 0x81, 0x9F, 0xA1, 0xBF, 0x61, 0x41, 0x00, 0xD8, 0x2A])))
def test_decode_structural_bytes(parts: list[int]) -> None:
    _check_decode(bytes(parts))


def test_cid_with_an_optional_hash_function_is_an_integrity_error() -> None:
    # keccak-256 (0x1b) needs pycryptodome in multiformats: its absence must not leak out as an
    # ImportError from a peer's bytes.
    raw = b"\x01\x55\x1b\x20" + bytes(32)
    with pytest.raises(IntegrityError, match="hash function 0x1b"):
        cid_mod.cid_from_bytes(raw)
