"""Strict dag-pb codec (https://ipld.io/specs/codecs/dag-pb/spec/).

dag-pb is a tiny protobuf schema, hand-written here because the spec fixes one canonical byte form
that general protobuf libraries do not guarantee::

    message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }

Canonical form (what :func:`encode` writes and what Kubo, Helia and go-codec-dagpb write):
``Links`` (field 2) come *before* ``Data`` (field 1); inside a link the order is Hash, Name, Tsize;
links are sorted by the bytes of their names (stable, so equal names keep their order).

:func:`decode` is strict: anything that is not exactly that form (unknown fields, wrong wire types,
fields out of order or repeated, non-minimal varints, lengths past the end, invalid CIDs, invalid
UTF-8 names) raises :class:`~dre.protocol.errors.IntegrityError`. Unsorted links are accepted on
decode, as the spec asks, because old go-ipfs wrote some.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from .cid import CID, cid_from_bytes
from .errors import IntegrityError, ValidationError

__all__ = [
    "MAX_BLOCK_SIZE",
    "PBLink",
    "PBNode",
    "decode",
    "decode_cid",
    "decode_varint",
    "encode",
    "encode_varint",
    "varint_size",
]

#: The largest block we decode. Bitswap peers refuse blocks over 2 MiB (4 MiB messages); a dag-pb
#: node written by any importer we care about is far below this.
MAX_BLOCK_SIZE = 4 * 1024 * 1024

_U64_LIMIT = 1 << 64

# Field keys (field number << 3 | wire type) of the canonical form.
_KEY_NODE_DATA = 0x0A  # PBNode.Data, field 1, length-delimited
_KEY_NODE_LINK = 0x12  # PBNode.Links, field 2, length-delimited
_KEY_LINK_HASH = 0x0A  # PBLink.Hash, field 1, length-delimited
_KEY_LINK_NAME = 0x12  # PBLink.Name, field 2, length-delimited
_KEY_LINK_TSIZE = 0x18  # PBLink.Tsize, field 3, varint

# Precomputed one-byte varints: most lengths and sizes in small nodes hit this table.
_SMALL_VARINTS = [bytes([i]) for i in range(0x80)]


class PBLink(msgspec.Struct, frozen=True):
    """A link of a dag-pb node: target CID, optional name, optional cumulative size (Tsize)."""

    hash: CID
    name: str | None = None
    tsize: int | None = None


class PBNode(msgspec.Struct, frozen=True):
    """A dag-pb node: its links (in encoded order) and its optional opaque data."""

    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


# --------------------------------------------------------------------------------------------
# varints


def varint_size(value: int) -> int:
    """The number of bytes of the protobuf varint encoding of ``value`` (0 ≤ value < 2**64)."""
    return max(1, (value.bit_length() + 6) // 7)


def encode_varint(value: int) -> bytes:
    """Encode an unsigned integer as a minimal protobuf varint."""
    if value < 0x80:
        if value < 0:
            raise ValidationError(f"varint cannot encode negative value {value}")
        return _SMALL_VARINTS[value]
    if value >= _U64_LIMIT:
        raise ValidationError(f"varint value {value} does not fit in 64 bits")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    """Decode a minimal unsigned 64-bit varint at ``buf[pos:end]``; returns (value, new pos).

    Rejects truncated, overlong (> 64 bits) and non-minimal encodings (a trailing 0x00 group),
    because two encodings of one value would give one node two CIDs.
    """
    if pos >= end:
        raise IntegrityError(f"truncated varint in {what}")
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    pos += 1
    while True:
        if pos >= end:
            raise IntegrityError(f"truncated varint in {what}")
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:
            raise IntegrityError(f"varint in {what} overflows 64 bits")
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0:
                raise IntegrityError(f"non-minimal varint in {what}")
            return value, pos
        shift += 7
        if shift > 63:
            raise IntegrityError(f"varint in {what} overflows 64 bits")


# --------------------------------------------------------------------------------------------
# CIDs inside links


def decode_cid(raw: bytes) -> CID:
    """Parse the binary form of a CID strictly (CIDv0 = bare sha2-256 multihash, or CIDv1).

    CIDv1 comes back with base32 as its string base, so ``str()`` gives the canonical ``bafy…``
    form. Raises :class:`IntegrityError`.
    """
    try:
        return cid_from_bytes(bytes(raw))
    except IntegrityError as exc:
        raise IntegrityError(f"invalid CID in link: {exc}") from None


# --------------------------------------------------------------------------------------------
# encode


def _name_key(link: PBLink) -> bytes:
    return b"" if link.name is None else link.name.encode("utf-8")


def _encode_link(link: PBLink) -> bytes:
    if not isinstance(link.hash, CID):
        raise ValidationError(f"link hash must be a CID, not {type(link.hash).__name__}")
    cid_bytes = bytes(link.hash)
    parts = [b"\x0a", encode_varint(len(cid_bytes)), cid_bytes]
    if link.name is not None:
        try:
            name = link.name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"link name {link.name!r} is not valid Unicode") from None
        parts += [b"\x12", encode_varint(len(name)), name]
    if link.tsize is not None:
        if not 0 <= link.tsize < _U64_LIMIT:
            raise ValidationError(f"link Tsize {link.tsize} out of range")
        parts += [b"\x18", encode_varint(link.tsize)]
    return b"".join(parts)


def encode_links(links: Sequence[PBLink]) -> list[bytes]:
    """The encoded ``Links`` entries (with their field key and length) of a node, sorted."""
    ordered = sorted(links, key=_name_key) if len(links) > 1 else links
    out: list[bytes] = []
    for link in ordered:
        body = _encode_link(link)
        out += [b"\x12", encode_varint(len(body)), body]
    return out


def encode(node: PBNode) -> bytes:
    """Encode ``node`` in canonical dag-pb form (links sorted by name bytes, then Data)."""
    parts = encode_links(node.links)
    if node.data is not None:
        parts += [b"\x0a", encode_varint(len(node.data)), node.data]
    return b"".join(parts)


# --------------------------------------------------------------------------------------------
# decode


def _decode_link(buf: memoryview, pos: int, end: int) -> PBLink:
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    last_field = 0
    while pos < end:
        key, pos = decode_varint(buf, pos, end, "link field key")
        field, wire = key >> 3, key & 7
        if field <= last_field:
            raise IntegrityError(f"dag-pb link field {field} out of order or repeated")
        last_field = field
        if key == _KEY_LINK_HASH:
            length, pos = decode_varint(buf, pos, end, "link Hash length")
            if length > end - pos:
                raise IntegrityError("dag-pb link Hash runs past the end of the link")
            cid = decode_cid(bytes(buf[pos : pos + length]))
            pos += length
        elif key == _KEY_LINK_NAME:
            length, pos = decode_varint(buf, pos, end, "link Name length")
            if length > end - pos:
                raise IntegrityError("dag-pb link Name runs past the end of the link")
            try:
                name = str(buf[pos : pos + length], "utf-8")
            except UnicodeDecodeError:
                raise IntegrityError("dag-pb link Name is not valid UTF-8") from None
            pos += length
        elif key == _KEY_LINK_TSIZE:
            tsize, pos = decode_varint(buf, pos, end, "link Tsize")
        elif field in (1, 2, 3):
            raise IntegrityError(f"dag-pb link field {field} has wrong wire type {wire}")
        else:
            raise IntegrityError(f"unknown dag-pb link field {field} (wire type {wire})")
    if cid is None:
        raise IntegrityError("dag-pb link without Hash")
    return PBLink(cid, name, tsize)


def decode(data: bytes | bytearray | memoryview) -> PBNode:
    """Decode a dag-pb block strictly; raises :class:`IntegrityError` on any deviation."""
    buf = memoryview(data)
    if buf.ndim != 1 or buf.itemsize != 1:
        buf = buf.cast("B")
    end = len(buf)
    if end > MAX_BLOCK_SIZE:
        raise IntegrityError(f"dag-pb block of {end} bytes exceeds {MAX_BLOCK_SIZE}")
    pos = 0
    links: list[PBLink] = []
    node_data: bytes | None = None
    while pos < end:
        if node_data is not None:
            raise IntegrityError("dag-pb field after Data (Data must be last and appear once)")
        key, pos = decode_varint(buf, pos, end, "node field key")
        if key == _KEY_NODE_LINK:
            length, pos = decode_varint(buf, pos, end, "link length")
            if length > end - pos:
                raise IntegrityError("dag-pb link runs past the end of the block")
            links.append(_decode_link(buf, pos, pos + length))
            pos += length
        elif key == _KEY_NODE_DATA:
            length, pos = decode_varint(buf, pos, end, "Data length")
            if length > end - pos:
                raise IntegrityError("dag-pb Data runs past the end of the block")
            node_data = bytes(buf[pos : pos + length])
            pos += length
        else:
            field, wire = key >> 3, key & 7
            if field in (1, 2):
                raise IntegrityError(f"dag-pb node field {field} has wrong wire type {wire}")
            raise IntegrityError(f"unknown dag-pb node field {field} (wire type {wire})")
    return PBNode(tuple(links), node_data)
