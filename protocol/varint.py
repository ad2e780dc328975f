"""Unsigned LEB128 varints as used by multiformats and CAR section prefixes.

Only the minimal encoding of a value is accepted, and values are limited to 9 bytes (< 2**63), as
the multiformats unsigned-varint spec requires: one byte sequence per number keeps lengths and CIDs
canonical, and the bound keeps a hostile peer from making us read an endless prefix.
"""

from __future__ import annotations

from .errors import IntegrityError, ValidationError

__all__ = ["MAX_BYTES", "MAX_VALUE", "decode", "encode", "encoded_length", "try_decode"]

#: The longest varint accepted.
MAX_BYTES = 9
#: The largest value a varint may carry (9 bytes x 7 bits).
MAX_VALUE = 2**63 - 1

# Single-byte varints are by far the most common (CID versions, codecs, hash lengths).
_SMALL = [bytes([i]) for i in range(0x80)]


def encode(value: int) -> bytes:
    """The minimal varint encoding of ``value`` (0 <= value < 2**63)."""
    if value < 0x80 and value >= 0:
        return _SMALL[value]
    if not 0 <= value <= MAX_VALUE:
        raise ValidationError(f"varint value out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encoded_length(value: int) -> int:
    """How many bytes :func:`encode` produces for ``value``."""
    if not 0 <= value <= MAX_VALUE:
        raise ValidationError(f"varint value out of range: {value}")
    return max(1, (value.bit_length() + 6) // 7)


def try_decode(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Decode the varint at ``data[offset:]`` as ``(value, offset_after)``.

    Returns ``None`` if the bytes available end inside a varint that could still be valid (so a
    streaming caller can wait for more), and raises :class:`IntegrityError` for an encoding that
    can never become valid: too long or not minimal.
    """
    value = 0
    shift = 0
    end = len(data)
    pos = offset
    while True:
        if pos >= end:
            return None
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and pos - offset > 1:
                raise IntegrityError(f"non-minimal varint at byte {offset}")
            return value, pos
        shift += 7
        if pos - offset >= MAX_BYTES:
            raise IntegrityError(f"varint longer than {MAX_BYTES} bytes at byte {offset}")


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Like :func:`try_decode`, but a varint cut short by the end of ``data`` is an error too."""
    result = try_decode(data, offset)
    if result is None:
        raise IntegrityError(f"truncated varint at byte {offset}")
    return result
