from __future__ import annotations

import pytest
from dre.protocol import varint
from dre.protocol.errors import IntegrityError, ValidationError
from hypothesis import given
from hypothesis import strategies as st

KNOWN = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (255, "ff01"),
    (300, "ac02"),
    (16384, "808001"),
    (2**63 - 1, "ffffffffffffffff7f"),
]


@pytest.mark.parametrize(("value", "hex_"), KNOWN)
def test_known_encodings(value: int, hex_: str) -> None:
    assert varint.encode(value).hex() == hex_
    assert varint.decode(bytes.fromhex(hex_)) == (value, len(hex_) // 2)
    assert varint.encoded_length(value) == len(hex_) // 2


@given(st.integers(0, varint.MAX_VALUE), st.binary(max_size=4))
def test_round_trip(value: int, tail: bytes) -> None:
    data = varint.encode(value)
    assert varint.decode(data + tail) == (value, len(data))
    assert varint.encoded_length(value) == len(data)
    # Every strict prefix is "need more", never a wrong value.
    for cut in range(len(data)):
        assert varint.try_decode(data[:cut]) is None


def test_offset() -> None:
    assert varint.decode(b"\xff\xac\x02\x00", 1) == (300, 3)


@pytest.mark.parametrize("value", [-1, 2**63, 2**64])
def test_encode_out_of_range(value: int) -> None:
    with pytest.raises(ValidationError):
        varint.encode(value)


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        ("8000", "non-minimal"),
        ("ff00", "non-minimal"),
        ("808000", "non-minimal"),
        ("ffffffffffffffff80", "longer than 9"),
        ("ffffffffffffffffff01", "longer than 9"),
    ],
)
def test_invalid(hex_: str, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        varint.try_decode(bytes.fromhex(hex_))


@pytest.mark.parametrize("hex_", ["", "80", "ffff"])
def test_truncated(hex_: str) -> None:
    assert varint.try_decode(bytes.fromhex(hex_)) is None
    with pytest.raises(IntegrityError, match="truncated"):
        varint.decode(bytes.fromhex(hex_))


@given(st.binary(max_size=12))
def test_arbitrary_bytes(data: bytes) -> None:
    try:
        result = varint.try_decode(data)
    except IntegrityError:
        return
    if result is not None:
        value, end = result
        assert varint.encode(value) == data[:end]
