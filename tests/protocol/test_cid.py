"""CID text: :func:`cid_text` prints exactly what ``str`` prints, and :func:`parse_cid`'s
standard-library fast path agrees with multiformats' decoder on every input."""

from __future__ import annotations

import base64

import pytest
from dre.protocol import cid as cid_module
from dre.protocol.cid import (
    CID,
    DAG_CBOR,
    DAG_PB,
    MAX_CID_TEXT,
    RAW,
    cid_for,
    cid_from_bytes,
    cid_text,
    parse_cid,
)
from dre.protocol.errors import ValidationError
from hypothesis import given
from hypothesis import strategies as st
from multiformats import multihash

#: Codecs a CID may name (the block store is codec-agnostic): UnixFS, dag-cbor, json, libp2p-key.
CODECS = [RAW, DAG_PB, DAG_CBOR, 0x0200, 0x72]
#: sha2-256 (what we accept), then hashes parse_cid refuses but cid_text must still print.
HASHES = ["sha2-256", "sha2-512", "sha3-256", "blake2b-256", "identity"]


def slow_parse(text: str) -> CID:
    """parse_cid with the fast path switched off: multiformats' decoder alone."""
    fast = cid_module._parse_canonical_v1
    cid_module._parse_canonical_v1 = lambda _text: None  # type: ignore[assignment]
    try:
        return parse_cid(text)
    finally:
        cid_module._parse_canonical_v1 = fast


@st.composite
def cids(draw: st.DrawFn) -> CID:
    data = draw(st.binary(max_size=64))
    version = draw(st.sampled_from([0, 1]))
    if version == 0:
        return cid_for(data, DAG_PB, 0)
    hash_name = draw(st.sampled_from(HASHES))
    digest = multihash.get(hash_name).digest(data)
    cid = CID("base32", 1, draw(st.sampled_from(CODECS)), digest)
    # A CIDv1 decoded from another base keeps it; str prints it there, and so must cid_text.
    return cid.set(base=draw(st.sampled_from(["base32", "base32", "base58btc", "base36"])))


@given(cids())
def test_cid_text_is_str(cid: CID) -> None:
    assert cid_text(cid) == str(cid)


@given(cids())
def test_parse_cid_of_cid_text_is_the_cid_normalized(cid: CID) -> None:
    text = cid_text(cid)
    if cid.hashfun.code != 0x12:
        with pytest.raises(ValidationError, match="unsupported hash function"):
            parse_cid(text)
        return
    parsed = parse_cid(text)
    assert parsed == (cid.set(base="base32") if cid.version == 1 else cid)
    assert cid_text(parsed) == str(parsed) == str(slow_parse(text))
    assert parsed == slow_parse(text)


def _variants(cid: CID) -> list[str]:
    """Texts of one CID in forms other than the canonical one, and near misses."""
    canonical = cid_text(cid.set(base="base32") if cid.version == 1 else cid)
    padded = "b" + base64.b32encode(bytes(cid)).decode().lower()
    return [canonical, canonical.upper(), "B" + canonical[1:].upper(), padded,
            canonical + "a", canonical[:-1], canonical[:-1] + "7", canonical + "=",
            "b" + canonical[1:].replace("a", "A", 1), " " + canonical, canonical + "\n"]


_base32_text = st.text("abcdefghijklmnopqrstuvwxyz234567=ABCXYZ", max_size=80).map(
    lambda s: "b" + s)
_texts = st.one_of(
    st.text(max_size=80),
    _base32_text,
    st.binary(min_size=1, max_size=60).map(
        lambda b: "b" + base64.b32encode(b).decode().lower().rstrip("=")),
    cids().flatmap(lambda c: st.sampled_from(_variants(c))),
    st.text(min_size=MAX_CID_TEXT - 2, max_size=MAX_CID_TEXT + 2),
)


@given(_texts)
def test_fast_path_agrees_with_the_slow_path(text: str) -> None:
    try:
        expected = slow_parse(text)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as got:
            parse_cid(text)
        assert str(got.value) == str(exc)
        return
    got_cid = parse_cid(text)
    assert got_cid == expected and str(got_cid) == str(expected)


def test_known_cids() -> None:
    v0 = "QmaxtiD78ZJ6ZcoweeNCf6zDR1FD262n5DxtNiCUA42a2C"
    v1 = "bafkreifecoayx32gyqjxzuhzhy7duxyhnsjsanle4mpa7whwna4fjpsxlm"
    assert cid_text(parse_cid(v0)) == v0 and parse_cid(v0).version == 0
    assert cid_text(parse_cid(v1)) == v1 and parse_cid(v1) == cid_from_bytes(bytes(CID.decode(v1)))
    # Another base for the same CIDv1 comes back in base32.
    assert cid_text(parse_cid(CID.decode(v1).set(base="base58btc").encode())) == v1
    assert cid_text(parse_cid(v1.upper())) == v1  # "B": base32upper, a base of its own
    # The identity probe the gateway spec uses: valid text, a hash we do not accept.
    with pytest.raises(ValidationError, match="unsupported hash function identity"):
        parse_cid("bafkqaaa")
    for bad, why in (("", "empty or too long"), ("b" * (MAX_CID_TEXT + 1), "empty or too long"),
                     ("bafy!", "invalid CID"), (v1[:-1] + "7", "invalid CID")):
        with pytest.raises(ValidationError, match=why):
            parse_cid(bad)
