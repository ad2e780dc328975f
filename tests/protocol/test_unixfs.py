"""UnixFS Data message: exact bytes Kubo/Helia write, strict decoding, property tests."""

from __future__ import annotations

import pytest
from dre.protocol.errors import IntegrityError, ValidationError
from dre.protocol.unixfs import DataType, UnixFSData, UnixTime, decode, encode
from hypothesis import given, settings
from hypothesis import strategies as st

KNOWN = [
    # directory: what every importer writes (and the empty directory QmUNLL… wraps)
    (UnixFSData(DataType.DIRECTORY), "0801"),
    # empty file (QmbFMke…): no Data field, filesize 0
    (UnixFSData(DataType.FILE, filesize=0), "08021800"),
    # a v0 leaf with inline data
    (UnixFSData(DataType.FILE, data=b"hi", filesize=2), "0802120268691802"),
    # a parent: filesize then one unpacked blocksizes key per child
    (
        UnixFSData(DataType.FILE, filesize=262145, blocksizes=(262144, 1)),
        "0802188180102080801020" + "01",
    ),
    # HAMT shard
    (
        UnixFSData(DataType.HAMT_SHARD, data=b"\x80\x01", hash_type=0x22, fanout=256),
        "080512028001" + "2822" + "308002",
    ),
    (UnixFSData(DataType.SYMLINK, data=b"foo"), "08041203666f6f"),
    (
        UnixFSData(DataType.FILE, mode=0o644, mtime=UnixTime(-1, 5)),
        "0802" + "38a403" + "421008ffffffffffffffffff01" + "1505000000",
    ),
]


@pytest.mark.parametrize(("msg", "hex_bytes"), KNOWN)
def test_known_encodings(msg: UnixFSData, hex_bytes: str) -> None:
    assert encode(msg).hex() == hex_bytes
    assert decode(bytes.fromhex(hex_bytes)) == msg


def test_zero_nanoseconds_are_dropped_on_encode() -> None:
    assert decode(encode(UnixFSData(DataType.FILE, mtime=UnixTime(7, 0)))).mtime == UnixTime(7)


INVALID = {
    "empty (no Type)": "",
    "no Type": "1800",
    "unknown Type": "0806",
    "Type twice": "08020802",
    "out of order": "18000802",
    "packed blocksizes": "0802220201" + "01",
    "blocksizes then filesize": "080220011801",
    "unknown field": "08024800",
    "field 0": "08020000",
    "Type wrong wire type": "0a00",
    "filesize wrong wire type": "08021a00",
    "data past end": "0802120501",
    "non-minimal varint": "08821800",
    "mode too large": "08023880808080" + "10",
    "mtime without seconds": "08024200",
    "mtime zero nanos": "0802420708011500000000",
    "mtime nanos too big": "08024207080115" + "00ca9a3b",
    "mtime truncated nanos": "080242050801150000",
    "mtime unknown field": "0802420408011800",
    "truncated": "08",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_decode_rejects(name: str) -> None:
    with pytest.raises(IntegrityError):
        decode(bytes.fromhex(INVALID[name]))


def test_encode_rejects_out_of_range() -> None:
    for msg in (
        UnixFSData(DataType.FILE, filesize=-1),
        UnixFSData(DataType.FILE, blocksizes=(2**64,)),
        UnixFSData(DataType.FILE, mode=2**32),
        UnixFSData(DataType.FILE, mtime=UnixTime(2**63)),
        UnixFSData(DataType.FILE, mtime=UnixTime(0, 10**9)),
    ):
        with pytest.raises(ValidationError):
            encode(msg)


_u64 = st.integers(0, 2**64 - 1)
_messages = st.builds(
    UnixFSData,
    st.sampled_from(list(DataType)),
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), _u64),
    st.lists(_u64, max_size=5).map(tuple),
    st.one_of(st.none(), _u64),
    st.one_of(st.none(), _u64),
    st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    st.one_of(
        st.none(),
        st.builds(
            UnixTime,
            st.integers(-(2**63), 2**63 - 1),
            st.one_of(st.none(), st.integers(1, 999_999_999)),
        ),
    ),
)


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_round_trip(msg: UnixFSData) -> None:
    raw = encode(msg)
    assert decode(raw) == msg
    assert encode(decode(raw)) == raw


def _only_integrity(raw: bytes) -> None:
    try:
        msg = decode(raw)
    except IntegrityError:
        return
    assert encode(msg) == raw  # one byte form per message


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_only_raises_integrity_error(raw: bytes) -> None:
    _only_integrity(raw)


@settings(max_examples=500, deadline=None)
@given(_messages, st.data())
def test_mutations_only_raise_integrity_error(msg: UnixFSData, data: st.DataObject) -> None:
    raw = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw)))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip" and pos < len(raw):
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif op == "delete" and pos < len(raw):
            del raw[pos]
    _only_integrity(bytes(raw))
