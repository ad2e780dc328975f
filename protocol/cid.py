"""CIDs, multicodecs and block verification (a thin, strict layer over ``multiformats``)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

from multiformats import CID, multibase, multicodec, multihash

from . import varint
from .errors import IntegrityError, ValidationError

__all__ = [
    "CID",
    "DAG_CBOR",
    "DAG_PB",
    "RAW",
    "SHA2_256",
    "Block",
    "cid_for",
    "cid_from_bytes",
    "cid_text",
    "cid_to_bytes",
    "multihash_of",
    "parse_cid",
    "read_cid",
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


def sha256_multihash(data: bytes | bytearray | memoryview) -> bytes:
    """The sha2-256 multihash (``0x12 0x20 <digest>``) of ``data``."""
    return _SHA2_256_PREFIX + hashlib.sha256(data).digest()


def cid_for(data: bytes, codec: int, version: int = 1) -> CID:
    """The CID of ``data`` under ``codec`` (sha2-256). CIDv0 is only defined for dag-pb."""
    if version == 0:
        if codec != DAG_PB:
            raise ValidationError("CIDv0 can only address dag-pb blocks")
        return _new_cid(CID, _BASE58BTC, 0, _DAG_PB_CODEC, _SHA2_256_HASH, sha256_multihash(data))
    return _new_cid(CID, _BASE32, 1, _codec(codec), _SHA2_256_HASH, sha256_multihash(data))


def multihash_of(cid: CID) -> bytes:
    """The raw multihash bytes of ``cid`` (the block store's key)."""
    return bytes(cid.digest)


def parse_cid(text: str) -> CID:
    """Parse a CID string; raises :class:`ValidationError` with a readable message if invalid.

    CIDv1 comes back in base32 whatever base it was typed in, so every CID has one printed form.
    Only sha2-256 CIDs are accepted.
    """
    if not isinstance(text, str) or not text or len(text) > MAX_CID_TEXT:
        raise ValidationError(f"invalid CID {text[:80]!r}: empty or too long")
    fast = _parse_canonical_v1(text)
    if fast is not None:
        return fast
    try:
        cid = CID.decode(text)
    except Exception as exc:  # multiformats raises several unrelated exception types
        raise ValidationError(f"invalid CID {text!r}: {exc}") from None
    if cid.version == 1 and cid.base.name != "base32":
        cid = cid.set(base="base32")  # one printed form per CID, whatever base the user typed
    if cid.hashfun.code != SHA2_256:
        raise ValidationError(f"unsupported hash function {cid.hashfun.name} in CID {text!r}")
    return cid


def cid_text(cid: CID) -> str:
    """``str(cid)``, several times faster: base32 (``b…``) for CIDv1, base58btc for CIDv0.

    A CIDv1 held in another base (only ``CID.decode`` makes those) is printed in that base,
    exactly as ``str`` prints it.
    """
    if cid.version == 0:
        return _base58btc(cid.digest)
    if cid.base is not _BASE32:
        return str(cid)
    return "b" + base64.b32encode(cid_to_bytes(cid)).decode("ascii").lower().rstrip("=")


# --------------------------------------------------------------------------------------------------
# CID text, fast.
#
# multiformats decodes and prints CIDs through generic multibase tables, ~100 us to 1 ms each; a
# gateway or API request prints and parses its CIDs several times. CIDv1 in lowercase base32 —
# every CID we mint and the only form parse_cid returns — is done with the standard library.
# Anything that is not exactly that form takes multiformats' path, so behaviour and error
# messages for other input are unchanged.

_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _base58btc(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(_BASE58_ALPHABET[digit])
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + "".join(reversed(digits))


def _parse_canonical_v1(text: str) -> CID | None:
    """The CID ``text`` is if it is a canonical base32 sha2-256 CIDv1, else None."""
    if len(text) < 2 or text[0] != "b" or not text.isascii():
        return None
    body = text[1:].upper()
    try:
        cid = cid_from_bytes(base64.b32decode(body + "=" * (-len(body) % 8)))
    except (binascii.Error, IntegrityError, ValueError):
        return None  # the slow path says what is wrong with it
    # Printing it back must give the very same text: that rules out uppercase, padding,
    # non-minimal varints and stray bits, which multiformats handles its own way.
    if cid.version != 1 or multihash_of(cid)[:2] != _SHA2_256_PREFIX or cid_text(cid) != text:
        return None
    return cid


def verify_block(cid: CID, data: bytes) -> None:
    """Raise :class:`IntegrityError` unless ``data`` hashes to the multihash in ``cid``."""
    digest = multihash_of(cid)
    if digest[:2] != _SHA2_256_PREFIX:
        raise IntegrityError(f"block {cid}: unsupported multihash")
    if hashlib.sha256(data).digest() != digest[2:]:
        raise IntegrityError(f"block {cid}: bytes do not match the CID's hash")


# --------------------------------------------------------------------------------------------------
# Binary CIDs.
#
# multiformats' public constructors cost 150 us per CID (runtime type validation); a manifest or a
# CAR full of links would spend most of its time there. We parse the binary form ourselves and
# build the (interned) instance through the same private constructor CID.decode uses, caching the
# codec / hash-function table lookups.

_BASE32 = multibase.get("base32")
_BASE58BTC = multibase.get("base58btc")
_DAG_PB_CODEC = multicodec.get(code=0x70)
_SHA2_256_HASH = multihash.get(code=0x12)
_codecs: dict[int, Any] = {}
_hashes: dict[int, Any] = {0x12: _SHA2_256_HASH}
_new_cid: Callable[..., CID] = CID._new_instance
# Binary CID -> CID. Building a CID still costs ~5 us even on the private path, and the same
# links recur constantly (a package's dependencies, a CAR's roots). CIDs are immutable: sharing is
# safe.
_CID_CACHE_SIZE = 16384
_cid_cache: dict[bytes, CID] = {}


def read_cid(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[CID, int]:
    """Parse a binary CID that starts at ``data[offset]``; return it and the offset after it.

    CIDv0 is a bare 34-byte sha2-256 multihash (``0x12 0x20 ...``); CIDv1 is
    ``varint(1) varint(codec) varint(hash code) varint(digest length) digest``.
    Raises :class:`IntegrityError` if the bytes are not a complete, supported CID.
    """
    if data[offset : offset + 2] == b"\x12\x20":
        end = offset + 34
        if end > len(data):
            raise IntegrityError(f"truncated CIDv0 at byte {offset}")
        raw = bytes(data[offset:end])
        cid = _cid_cache.get(raw)
        if cid is None:
            cid = _new_cid(CID, _BASE58BTC, 0, _DAG_PB_CODEC, _SHA2_256_HASH, raw)
            _remember(raw, cid)
        return cid, end
    version, pos = varint.decode(data, offset)
    if version != 1:
        raise IntegrityError(f"unsupported CID version {version} at byte {offset}")
    code, pos = varint.decode(data, pos)
    mh_start = pos
    hash_code, pos = varint.decode(data, pos)
    length, pos = varint.decode(data, pos)
    end = pos + length
    if end > len(data):
        raise IntegrityError(f"truncated CID digest at byte {offset}")
    raw = bytes(data[offset:end])
    cid = _cid_cache.get(raw)
    if cid is not None:
        return cid, end
    codec = _codecs.get(code)
    if codec is None:
        try:
            codec = multicodec.get(code=code)
        except Exception:  # multiformats raises its own KeyError subclasses
            raise IntegrityError(f"CID at byte {offset}: unknown codec 0x{code:x}") from None
        _codecs[code] = codec
    hashfun = _hashes.get(hash_code)
    if hashfun is None:
        try:
            hashfun = multihash.get(code=hash_code)
            # Looked up here because multiformats loads a hash function's implementation on
            # first use and raises ImportError for optional ones (keccak without pycryptodome).
            hashfun.max_digest_size  # noqa: B018
        except Exception:
            raise IntegrityError(
                f"CID at byte {offset}: unknown or unsupported hash function 0x{hash_code:x}"
            ) from None
        _hashes[hash_code] = hashfun
    if hashfun.max_digest_size is not None and length > hashfun.max_digest_size:
        raise IntegrityError(
            f"CID at byte {offset}: {length}-byte digest is too long for {hashfun.name}"
        )
    cid = _new_cid(CID, _BASE32, 1, codec, hashfun, bytes(data[mh_start:end]))
    _remember(raw, cid)
    return cid, end


def _remember(raw: bytes, cid: CID) -> None:
    if len(_cid_cache) >= _CID_CACHE_SIZE:
        _cid_cache.clear()
    _cid_cache[raw] = cid


def cid_to_bytes(cid: CID) -> bytes:
    """The binary form of ``cid`` (what ``bytes(cid)`` gives, ten times faster)."""
    if cid.version == 0:
        return cid.digest
    return b"\x01" + varint.encode(cid.codec.code) + cid.digest


def cid_from_bytes(data: bytes) -> CID:
    """Parse ``data`` as exactly one binary CID (no trailing bytes)."""
    cid, end = read_cid(data, 0)
    if end != len(data):
        raise IntegrityError(f"{len(data) - end} trailing bytes after CID")
    return cid


def _codec(code: int) -> Any:
    codec = _codecs.get(code)
    if codec is None:
        codec = _codecs[code] = multicodec.get(code=code)
    return codec
