from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dre.protocol import car, dagcbor, varint
from dre.protocol.cid import CID, DAG_PB, RAW, Block, cid_for
from dre.protocol.errors import IntegrityError, LocalProtocolError
from hypothesis import given, settings
from hypothesis import strategies as st

VECTORS = json.loads((Path(__file__).parents[2] / "specs" / "vectors" / "car.json").read_text())
BASIC = bytes.fromhex(VECTORS["valid"][0]["hex"])


def small_car() -> tuple[bytes, list[Block]]:
    blocks = [
        Block(cid_for(b"aaaa", RAW), b"aaaa"),
        dagcbor.encode_block({"link": cid_for(b"aaaa", RAW), "n": 1}),
        Block(cid_for(b"pb", DAG_PB, 0), b"pb"),
    ]
    return b"".join(car.write_car([blocks[1].cid], blocks)), blocks


def events(decoder: car.CarDecoder, chunks: list[bytes]) -> list[Any]:
    """Feed ``chunks`` then EOF, draining events in between; returns all non-NeedData events."""
    out: list[Any] = []
    for chunk in [*chunks, b""]:
        decoder.receive_data(chunk)
        while True:
            event = decoder.next_event()
            if isinstance(event, car.NeedData):
                break
            out.append(event)
            if isinstance(event, car.EndOfCar):
                return out
    return out


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    header, blocks = car.read_car(data)
    assert header.version == 1
    assert [str(r) for r in header.roots] == vector["roots"]
    assert [{"cid": str(b.cid), "size": len(b.data)} for b in blocks] == vector["blocks"]
    # Re-encoding gives the same bytes, CIDv0 sections included.
    assert b"".join(car.write_car(header.roots, blocks)) == data


def test_basic_fixture_content() -> None:
    header, blocks = car.read_car(BASIC)
    assert any(b.cid.version == 0 for b in blocks)
    assert [b.data for b in blocks[:3]] == [b"aaaa", b"bbbb", b"cccc"]
    assert dagcbor.decode(blocks[-1].data) == {"link": None, "name": "limbo"}
    assert header.roots == (blocks[-2].cid, blocks[-1].cid)


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector(vector: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError, match=vector["reason"]):
        car.read_car(bytes.fromhex(vector["hex"]))


def test_round_trip() -> None:
    data, blocks = small_car()
    header, decoded = car.read_car(data)
    assert header == car.CarHeader(1, (blocks[1].cid,))
    assert decoded == blocks


def test_empty_roots_and_no_blocks() -> None:
    data = car.encode_header([])
    assert car.read_car(data) == (car.CarHeader(1, ()), [])


def test_event_sequence_and_end_repeats() -> None:
    data, blocks = small_car()
    decoder = car.CarDecoder()
    assert decoder.next_event() is car.NEED_DATA
    got = events(decoder, [data])
    assert isinstance(got[0], car.CarHeader)
    assert got[1:-1] == blocks
    assert got[-1] is car.END_OF_CAR
    assert decoder.next_event() is car.END_OF_CAR
    assert decoder.offset == len(data)
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(b"x")


def section_boundaries(data: bytes) -> set[int]:
    """Offsets at which a section (or the header) ends."""
    ends = set()
    pos = 0
    while pos < len(data):
        length, body = varint.decode(data, pos)
        pos = body + length
        ends.add(pos)
    return ends


def test_truncation_at_every_offset() -> None:
    data, _ = small_car()
    boundaries = section_boundaries(data)
    for cut in range(len(data)):
        decoder = car.CarDecoder()
        if cut in boundaries:
            # CARv1 has no length or count: a cut between sections is a valid, shorter CAR.
            # It is still never *silently* short: the events say exactly what arrived.
            got = events(decoder, [data[:cut]])
            assert b"".join(car.write_car(got[0].roots, got[1:-1])) == data[:cut]
            continue
        with pytest.raises(IntegrityError, match=f"CAR truncated at byte {cut}$"):
            events(decoder, [data[:cut]])


def test_truncation_of_basic_fixture() -> None:
    boundaries = section_boundaries(BASIC)
    for cut in range(len(BASIC)):
        if cut not in boundaries:
            with pytest.raises(IntegrityError, match=f"CAR truncated at byte {cut}$"):
                car.read_car(BASIC[:cut])


def test_corrupt_block_detected() -> None:
    data, blocks = small_car()
    for block in blocks:
        start = data.index(block.data, data.index(bytes(block.cid)))
        for pos in range(start, start + len(block.data)):
            corrupted = bytearray(data)
            corrupted[pos] ^= 0x01
            with pytest.raises(IntegrityError, match="does not match its CID"):
                car.read_car(bytes(corrupted))


def test_corrupt_block_passes_without_verify() -> None:
    data, blocks = small_car()
    corrupted = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(IntegrityError, match="does not match its CID"):
        car.read_car(corrupted)
    _, decoded = car.read_car(corrupted, verify=False)
    assert decoded[-1].data != blocks[-1].data


def test_limits() -> None:
    big = Block(cid_for(b"x" * 1000, RAW), b"x" * 1000)
    data = b"".join(car.write_car([], [big]))
    assert car.read_car(data, max_block_size=1000)[1] == [big]
    with pytest.raises(IntegrityError, match="exceeds"):
        car.read_car(data, max_block_size=999)
    with pytest.raises(IntegrityError, match=r"header of .* exceeds"):
        car.read_car(data, max_header_size=5)


def test_oversized_section_rejected_before_buffering() -> None:
    decoder = car.CarDecoder(max_block_size=1024)
    decoder.receive_data(car.encode_header([]) + varint.encode(10**9))
    assert isinstance(decoder.next_event(), car.CarHeader)
    with pytest.raises(IntegrityError, match="exceeds"):
        decoder.next_event()
    with pytest.raises(IntegrityError):  # the decoder stays failed
        decoder.next_event()


def test_buffer_is_bounded() -> None:
    decoder = car.CarDecoder(max_block_size=1024, max_header_size=1024)
    with pytest.raises(LocalProtocolError, match="buffer"):
        decoder.receive_data(b"\x00" * (3 * 1024 * 1024))


def test_byte_offsets_in_errors() -> None:
    data, _ = small_car()
    header_len = len(car.encode_header([dagcbor.encode_block({}).cid]))
    bad = data[:header_len] + b"\x80\x00"
    with pytest.raises(IntegrityError, match=f"at byte {header_len}$"):
        car.read_car(bad)


def test_encode_header_rejects_non_cids() -> None:
    with pytest.raises(Exception, match="not a CID"):
        car.encode_header(["bafy"])  # type: ignore[list-item]


def test_carv1_header_bytes() -> None:
    root = CID.decode("bafyreidykglsfhoixmivffc5uwhcgshx4j465xwqntbmu43nb2dzqwfvae")
    header = car.encode_header([root])
    body = dagcbor.encode({"roots": [root], "version": 1})
    assert header == bytes([len(body)]) + body
    assert body.startswith(bytes.fromhex("a265726f6f747381d82a5825"))


@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_only_integrity_errors(data: bytes, verify: bool) -> None:
    decoder = car.CarDecoder(verify=verify, max_block_size=4096, max_header_size=4096)
    try:
        got = events(decoder, [data])
    except IntegrityError:
        return
    assert isinstance(got[0], car.CarHeader)
    assert got[-1] is car.END_OF_CAR


@given(st.binary(max_size=30), st.integers(0, 400))
def test_arbitrary_bytes_after_valid_prefix(tail: bytes, cut: int) -> None:
    data = BASIC[:cut] + tail
    try:
        header, blocks = car.read_car(data)
    except IntegrityError:
        return
    assert b"".join(car.write_car(header.roots, blocks)) == data


@given(
    st.lists(st.binary(max_size=40), max_size=6),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
@settings(max_examples=50)
def test_chunking_does_not_matter(payloads: list[bytes], sizes: list[int]) -> None:
    blocks = [Block(cid_for(p, RAW), p) for p in payloads]
    data = b"".join(car.write_car([b.cid for b in blocks[:1]], blocks))
    whole = events(car.CarDecoder(), [data])
    chunks: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        chunks.append(data[pos : pos + size])
        pos += size
        i += 1
    assert events(car.CarDecoder(), chunks) == whole
    assert events(car.CarDecoder(), [bytes([b]) for b in data]) == whole


@given(st.integers(0, 2000))
def test_truncated_mid_stream_never_short(cut: int) -> None:
    # A cut anywhere but a section boundary is an error; at a boundary it is a shorter valid CAR.
    cut = min(cut, len(BASIC))
    try:
        header, blocks = car.read_car(BASIC[:cut])
    except IntegrityError as exc:
        assert "truncated" in str(exc)
        return
    assert b"".join(car.write_car(header.roots, blocks)) == BASIC[:cut]
