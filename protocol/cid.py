"""CIDs, multicodecs and block verification (a thin, strict layer over ``multiformats``)."""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from multiformats import CID, multihash

from .errors import IntegrityError, ValidationError

__all__ = [
    "CID",
    "DAG_CBOR",
    "DAG_PB",
    "RAW",
    "SHA2_256",
    "Block",
    "cid_for",
    "multihash_of",
    "parse_cid",
    "sha256_multihash",
    "verify_block",
]

RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71
SHA2_256 = 0x12
_SHA2_256_PREFIX = bytes([SHA2_256, 32])

#: The longest CID string we accept from a user or a peer (a sha2-512 CIDv1 in base32 is ~120).
MAX_CID_TEXT = 256


class Block(NamedTuple):
    """A block: its CID and the exact bytes whose hash the CID carries."""

    cid: CID
    data: bytes


def sha256_multihash(data: bytes) -> bytes:
    """The sha2-256 multihash (``0x12 0x20 <digest>``) of ``data``."""
    return _SHA2_256_PREFIX + hashlib.sha256(data).digest()


def cid_for(data: bytes, codec: int, version: int = 1) -> CID:
    """The CID of ``data`` under ``codec`` (sha2-256). CIDv0 is only defined for dag-pb."""
    if version == 0:
        if codec != DAG_PB:
            raise ValidationError("CIDv0 can only address dag-pb blocks")
        return CID("base58btc", 0, "dag-pb", sha256_multihash(data))
    return CID("base32", 1, codec, sha256_multihash(data))


def multihash_of(cid: CID) -> bytes:
    """The raw multihash bytes of ``cid`` (the block store's key)."""
    return bytes(cid.digest)


def parse_cid(text: str) -> CID:
    """Parse a CID string; raises :class:`ValidationError` with a readable message if invalid."""
    if not isinstance(text, str) or not text or len(text) > MAX_CID_TEXT:
        raise ValidationError(f"invalid CID {text[:80]!r}: empty or too long")
    try:
        cid = CID.decode(text)
    except Exception as exc:  # multiformats raises several unrelated exception types
        raise ValidationError(f"invalid CID {text!r}: {exc}") from None
    if cid.hashfun.code != SHA2_256:
        raise ValidationError(f"unsupported hash function {cid.hashfun.name} in CID {text!r}")
    return cid


def verify_block(cid: CID, data: bytes) -> None:
    """Raise :class:`IntegrityError` unless ``data`` hashes to the multihash in ``cid``."""
    digest = multihash_of(cid)
    if digest[:2] != _SHA2_256_PREFIX:
        raise IntegrityError(f"block {cid}: unsupported multihash")
    if hashlib.sha256(data).digest() != digest[2:]:
        raise IntegrityError(f"block {cid}: bytes do not match the CID's hash")
