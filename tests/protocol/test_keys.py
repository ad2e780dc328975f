from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from dre.protocol.errors import ValidationError
from dre.protocol.keys import (
    PEER_ID_LENGTH,
    PublisherKey,
    peer_id_from_public_key,
    public_key_from_peer_id,
    verify_signature,
)
from hypothesis import given
from hypothesis import strategies as st

VECTORS = json.loads(
    (Path(__file__).parents[2] / "specs" / "vectors" / "records.json").read_text("utf-8")
)

# libp2p peer-ids spec, "Test vectors": the Ed25519 private key protobuf
# 080112407e0830…fce27e holds seed || public key; the public key protobuf is 08011220 || pub.
LIBP2P_SEED = bytes.fromhex("7e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d")
LIBP2P_PUBLIC_PROTOBUF = bytes.fromhex(
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
# The peer ID of that key as rust-libp2p prints it (cross-checked by other implementations).
LIBP2P_PEER_ID = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"


def test_libp2p_spec_vector() -> None:
    key = PublisherKey.from_seed(LIBP2P_SEED)
    assert key.public_key == LIBP2P_PUBLIC_PROTOBUF[4:]
    assert key.peer_id == LIBP2P_PEER_ID
    assert public_key_from_peer_id(LIBP2P_PEER_ID) == key.public_key


def test_records_vector_key() -> None:
    key = PublisherKey.from_seed(bytes.fromhex(VECTORS["key"]["seed"]))
    assert key.public_key.hex() == VECTORS["key"]["public_key"]
    assert key.peer_id == VECTORS["key"]["peer_id"]


def test_seed_round_trip_and_generate() -> None:
    key = PublisherKey.generate()
    again = PublisherKey.from_seed(key.seed)
    assert again.public_key == key.public_key
    assert key.peer_id.startswith("12D3KooW")
    assert len(key.peer_id) == PEER_ID_LENGTH
    assert key.seed.hex() not in repr(key)


def test_sign_and_verify() -> None:
    key = PublisherKey.from_seed(bytes(range(32)))
    signature = key.sign(b"hello")
    assert verify_signature(key.public_key, b"hello", signature)
    assert not verify_signature(key.public_key, b"hellO", signature)
    assert not verify_signature(key.public_key, b"hello", signature[:-1])
    assert not verify_signature(bytes(32), b"hello", signature)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "x" * 32])
def test_bad_seed(seed: object) -> None:
    with pytest.raises(ValidationError):
        PublisherKey.from_seed(seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("public_key", [b"", bytes(31), bytes(33)])
def test_bad_public_key(public_key: bytes) -> None:
    with pytest.raises(ValidationError):
        peer_id_from_public_key(public_key)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12D3KooW",
        LIBP2P_PEER_ID[:-1],
        LIBP2P_PEER_ID + "a",
        LIBP2P_PEER_ID[:-1] + "0",  # '0' is not in the base58 alphabet
        LIBP2P_PEER_ID[:-1] + "l",  # nor 'l'
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # an RSA-style sha2-256 peer ID
        "1" * PEER_ID_LENGTH,
        "z" * PEER_ID_LENGTH,
    ],
)
def test_bad_peer_id(text: str) -> None:
    with pytest.raises(ValidationError):
        public_key_from_peer_id(text)


def test_peer_id_not_a_string() -> None:
    with pytest.raises(ValidationError):
        public_key_from_peer_id(b"12D3KooW")  # type: ignore[arg-type]


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_round_trip(public_key: bytes) -> None:
    text = peer_id_from_public_key(public_key)
    assert len(text) == PEER_ID_LENGTH
    assert text.startswith("12D3KooW")
    assert public_key_from_peer_id(text) == public_key


@given(st.text(max_size=80))
def test_random_peer_id_text_only_validation_error(text: str) -> None:
    # Anything else (a ValueError from the base58 decoder, say) would fail the test.
    with contextlib.suppress(ValidationError):
        public_key_from_peer_id(text)
