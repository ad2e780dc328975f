"""dag-pb codec: canonical encoding, strict decoding, spec fixtures, property tests."""

from __future__ import annotations

import hashlib

import pytest
from dre.protocol.cid import CID, DAG_PB, RAW, cid_for
from dre.protocol.dagpb import (
    PBLink,
    PBNode,
    decode,
    decode_cid,
    decode_varint,
    encode,
    encode_varint,
    varint_size,
)
from dre.protocol.errors import IntegrityError, ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

# ipld/codec-fixtures dag-pb fixtures, as quoted by the UnixFS spec (bytes and CIDv1).
SPEC_FIXTURES = [
    ("", "bafybeihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    (
        "12240a2212207521fe19c374a97759226dc5c0c8e674e73950e81b211f7dd3b6b30883a08a51",
        "bafybeihyivpglm6o6wrafbe36fp5l67abmewk7i2eob5wacdbhz7as5obe",
    ),
    (
        "12340a2212208ab7a6c5e74737878ac73863cb76739d15d4666de44e5756bf55a2f9e9ab5f43"
        "1209736f6d65206c696e6b1880c2d72f12370a2212208ab7a6c5e74737878ac73863cb76739d"
        "15d4666de44e5756bf55a2f9e9ab5f44120f736f6d65206f74686572206c696e6b18080a0973"
        "6f6d652064617461",
        "bafybeibh647pmxyksmdm24uad6b5f7tx4dhvilzbg2fiqgzll4yek7g7y4",
    ),
    ("0a050001020304", "bafybeibazl2z4vqp2tmwcfag6wirmtpnomxknqcgrauj7m2yisrz3qjbom"),
    ("0a00", "bafybeiaqfni3s5s2k2r6rgpxz4hohdsskh44ka5tk6ztbjerqpvxwfkwaq"),
    ("120b0a09015500050001020304", "bafybeia53f5n75ituvc3yupuf7tdnxf6fqetrmo2alc6g6iljkmk7ys5mm"),
    (
        "12160a090155000500010203041209736f6d65206e616d65",
        "bafybeifq4hcxma3kjljrpxtunnljtc6tvbkgsy3vldyfpfbx2lij76niyu",
    ),
    (
        "120d0a090155000500010203041200",
        "bafybeie7fstnkm4yshfwnmpp7d3mlh4f4okmk7a54d6c3ffr755q7qzk44",
    ),
    (
        "12140a0901550005000102030418ffffffffffffff0f",
        "bafybeiezymjvhwfuharanxmzxwuomzjjuzqjewjolr4phaiyp6l7qfwo64",
    ),
    (
        "120d0a090155000500010203041800",
        "bafybeichjs5otecmbvwh5azdr4jc45mp2qcofh2fr54wjdxhz4znahod2i",
    ),
]


def _cid(seed: int, codec: int = RAW, version: int = 1) -> CID:
    return cid_for(seed.to_bytes(8, "big"), codec, version)


@pytest.mark.parametrize(("hex_bytes", "cid"), SPEC_FIXTURES)
def test_spec_fixtures_round_trip(hex_bytes: str, cid: str) -> None:
    raw = bytes.fromhex(hex_bytes)
    assert str(cid_for(raw, DAG_PB)) == cid
    node = decode(raw)
    assert encode(node) == raw


def test_fixture_contents() -> None:
    node = decode(bytes.fromhex(SPEC_FIXTURES[2][0]))
    assert node.data == b"some data"
    assert [link.name for link in node.links] == ["some link", "some other link"]
    assert [link.tsize for link in node.links] == [100000000, 8]
    assert decode(b"") == PBNode((), None)
    assert decode(b"\x0a\x00") == PBNode((), b"")
    empty_name = decode(bytes.fromhex("120d0a090155000500010203041200"))
    assert empty_name.links[0].name == "" and empty_name.links[0].tsize is None
    assert decode(bytes.fromhex("120b0a09015500050001020304")).links[0].name is None


def test_encode_canonical_order() -> None:
    a, b = _cid(1), _cid(2, DAG_PB, 0)
    node = PBNode((PBLink(b, "b", 5), PBLink(a, "a", 7)), b"\x08\x01")
    raw = encode(node)
    # Links first (sorted by name), then Data; inside a link Hash, Name, Tsize.
    first = bytes([0x0A, 36]) + bytes(a) + b"\x12\x01a\x18\x07"
    assert raw.startswith(b"\x12" + bytes([len(first)]) + first)
    assert raw.endswith(b"\x0a\x02\x08\x01")
    decoded = decode(raw)
    assert [link.name for link in decoded.links] == ["a", "b"]
    assert decoded.links[1].hash == b and str(decoded.links[1].hash).startswith("Qm")
    assert str(decoded.links[0].hash).startswith("bafk")  # base32, not multiformats' base58


def test_sort_is_by_utf8_bytes_and_stable() -> None:
    c1, c2, c3 = _cid(1), _cid(2), _cid(3)
    node = PBNode((PBLink(c1, "é"), PBLink(c2, "z"), PBLink(c3, "z"), PBLink(c1, None)))
    names = [(link.name, link.hash) for link in decode(encode(node)).links]
    assert names == [(None, c1), ("z", c2), ("z", c3), ("é", c1)]


def test_encode_rejects_bad_values() -> None:
    with pytest.raises(ValidationError):
        encode(PBNode((PBLink(_cid(1), "x", -1),)))
    with pytest.raises(ValidationError):
        encode(PBNode((PBLink(_cid(1), "x", 1 << 64),)))
    with pytest.raises(ValidationError):
        encode(PBNode((PBLink(b"not a cid", "x"),)))  # type: ignore[arg-type]


def test_varints() -> None:
    for value in (0, 1, 127, 128, 300, 2**32, 2**63, 2**64 - 1):
        raw = encode_varint(value)
        assert len(raw) == varint_size(value)
        assert decode_varint(raw, 0, len(raw), "t") == (value, len(raw))
    with pytest.raises(ValidationError):
        encode_varint(2**64)
    for bad in (
        b"\x80\x00",
        b"\xff\x80\x00",
        b"\x80",
        b"\xff" * 10 + b"\x01",
        b"\xff" * 9 + b"\x02",
    ):
        with pytest.raises(IntegrityError):
            decode_varint(bad, 0, len(bad), "t")


INVALID = {
    "data before links": "0a0001" + "120b0a09015500050001020304",
    "duplicate data": "0a00" + "0a00",
    "unknown node field": "1a00",
    "node field 0": "0200",
    "links wrong wire type": "1000",
    "data wrong wire type": "0800",
    "data past end": "0a05000102",
    "link past end": "12ff01",
    "trailing garbage byte": "0a0000",
    "non-minimal length varint": "0a8000",
    "non-minimal key varint": "8a0000",
    "link without hash": "12031200" + "00",
    "empty link": "1200",
    "link name before hash": "120d1200" + "0a09015500050001020304",
    "link tsize before name": "12100a090155000500010203041800" + "1200",
    "duplicate link hash": "12160a09015500050001020304" + "0a09015500050001020304",
    "unknown link field": "120d0a09015500050001020304" + "2000",
    "tsize wrong wire type": "120d0a09015500050001020304" + "1a00",
    "hash wrong wire type": "12020800",
    "invalid cid version": "120b0a09025500050001020304",
    "cid digest length mismatch": "120b0a09015500060001020304",
    "cid unknown codec": "120c0a0a01ff7f00050001020304",
    "cid empty": "12020a00",
    "cidv0 truncated": "12050a0312200a",
    "name invalid utf8": "120f0a090155000500010203041202c328",
    "tsize overflow": "12180a090155000500010203041" + "8ffffffffffffffffff02",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_decode_rejects(name: str) -> None:
    raw = bytes.fromhex(INVALID[name])
    with pytest.raises(IntegrityError):
        decode(raw)


def test_decode_cid_forms() -> None:
    v0 = cid_for(b"x", DAG_PB, 0)
    v1 = cid_for(b"x", DAG_PB, 1)
    assert decode_cid(bytes(v0)) == v0 and decode_cid(bytes(v0)).version == 0
    assert str(decode_cid(bytes(v1))) == str(v1)
    with pytest.raises(IntegrityError):
        decode_cid(b"\x12\x20" + b"\x00" * 31)


# -------------------------------------------------------------------------------------------
# property tests

_cids = st.builds(
    lambda data, kind: cid_for(data, *kind),
    st.binary(max_size=8),
    st.sampled_from([(RAW, 1), (DAG_PB, 1), (DAG_PB, 0)]),
)
_links = st.builds(
    PBLink,
    _cids,
    st.one_of(st.none(), st.text(max_size=12)),
    st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
_nodes = st.builds(
    lambda links, data: PBNode(
        tuple(sorted(links, key=lambda lk: (lk.name or "").encode("utf-8", "surrogatepass"))),
        data,
    ),
    st.lists(_links, max_size=6),
    st.one_of(st.none(), st.binary(max_size=64)),
)


def _encodable(node: PBNode) -> bool:
    try:
        encode(node)
    except ValidationError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(_nodes)
def test_round_trip(node: PBNode) -> None:
    if not _encodable(node):  # names with lone surrogates cannot be UTF-8
        return
    raw = encode(node)
    assert decode(raw) == node
    assert encode(decode(raw)) == raw


def _decode_only_integrity(raw: bytes) -> None:
    try:
        node = decode(raw)
    except IntegrityError:
        return
    # Whatever decodes must re-encode to the same bytes when its links are sorted: there is one
    # byte form per node (unsorted links are the one tolerated deviation).
    names = [(link.name or "").encode() for link in node.links]
    if names == sorted(names):
        assert encode(node) == raw


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_only_raises_integrity_error(raw: bytes) -> None:
    _decode_only_integrity(raw)


@settings(max_examples=500, deadline=None)
@given(_nodes, st.data())
def test_mutations_only_raise_integrity_error(node: PBNode, data: st.DataObject) -> None:
    if not _encodable(node):
        return
    raw = bytearray(encode(node))
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif op == "delete" and raw:
            del raw[pos]
        elif op == "truncate":
            del raw[pos:]
    _decode_only_integrity(bytes(raw))


def test_hash_helper_sanity() -> None:
    # The CIDs in the fixtures are sha2-256 of the exact bytes.
    raw = bytes.fromhex(SPEC_FIXTURES[3][0])
    assert bytes(cid_for(raw, DAG_PB))[4:] == hashlib.sha256(raw).digest()
