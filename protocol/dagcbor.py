"""Strict DAG-CBOR (https://ipld.io/specs/codecs/dag-cbor/spec/).

Every value has exactly one accepted byte form, because a block's CID is the hash of its bytes: if
two encodings of one manifest were both accepted, the same manifest would have two identities.

* :func:`encode` writes the canonical form: shortest integer/length heads, map keys sorted by
  (encoded length, bytes), floats always as 64-bit, CIDs as tag 42 over ``0x00 + cid bytes``.
  It uses cbor2's C encoder for the bulk work after a pass that validates and normalises the value.
* :func:`decode` is a separate strict parser rather than cbor2 + re-encode: cbor2 interprets many
  tags itself (regular expressions, MIME messages, shared references that build cycles) before a
  tag hook could refuse them, and a dedicated parser can say exactly what is wrong and where.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import cbor2
from multiformats import CID

from .cid import DAG_CBOR, Block, cid_for, cid_to_bytes, read_cid, verify_block
from .errors import IntegrityError, ValidationError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "MAX_DEPTH",
    "decode",
    "decode_block",
    "encode",
    "encode_block",
]

#: Deepest nesting of lists/maps accepted by :func:`encode` and :func:`decode`.
MAX_DEPTH = 64
#: Default input limit of :func:`decode`.
DEFAULT_MAX_SIZE = 2 * 1024 * 1024

_UINT_MAX = 2**64 - 1
_NINT_MIN = -(2**64)
_CID_TAG = 42

# --------------------------------------------------------------------------------------------------
# Encoding.


class _PathError(Exception):
    """Internal: an encoding error plus the path to it, built up while unwinding."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str | int] = []


def _format_path(path: list[str | int]) -> str:
    parts = ["$"]
    for step in reversed(path):
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif step.isidentifier():
            parts.append(f".{step}")
        else:
            parts.append(f"[{step!r}]")
    return "".join(parts)


_PASS_THROUGH = frozenset({str, bool, bytes, type(None)})


def _sort_key(key: str) -> tuple[int, str]:
    """Canonical key order: (encoded length, encoded bytes).

    A text string's head grows with its UTF-8 length, and UTF-8 preserves code point order, so
    (UTF-8 length, str) sorts exactly like (encoded length, encoded bytes).
    """
    if key.isascii():
        return len(key), key
    try:
        return len(key.encode()), key
    except UnicodeEncodeError:
        raise _PathError(f"map key {key!r} is not valid Unicode") from None


def _normalise(value: Any, depth: int) -> Any:
    """Validate ``value`` and turn it into something cbor2 encodes byte-for-byte as DAG-CBOR."""
    kind = type(value)
    if kind in _PASS_THROUGH:
        if kind is str and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise _PathError("text is not valid Unicode (lone surrogate)") from None
        return value
    if kind is int:
        if _NINT_MIN <= value <= _UINT_MAX:
            return value
        raise _PathError(f"integer {value} does not fit in 64 bits")
    if kind is dict:
        if depth >= MAX_DEPTH:
            raise _PathError(f"nesting deeper than {MAX_DEPTH}")
        depth += 1
        entries = []
        for raw_key, item in value.items():
            key = raw_key
            if type(key) is not str:
                if not isinstance(key, str):
                    raise _PathError(f"map key {key!r} is not a string ({type(key).__name__})")
                key = str.__str__(key)
            order = (len(key), key) if key.isascii() else _sort_key(key)
            item_kind = type(item)
            if (item_kind is str and item.isascii()) or (
                item_kind in _PASS_THROUGH and item_kind is not str
            ):
                entries.append((order, key, item))
                continue
            try:
                entries.append((order, key, _normalise(item, depth)))
            except _PathError as exc:
                exc.path.append(key)
                raise
        # Keys are unique, so the sort never gets to compare the values.
        entries.sort()
        # cbor2 keeps insertion order when not in canonical mode, which is what we want here.
        return {key: item for _, key, item in entries}
    if kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            raise _PathError(f"nesting deeper than {MAX_DEPTH}")
        depth += 1
        out = []
        for index, item in enumerate(value):
            item_kind = type(item)
            if (item_kind is str and item.isascii()) or (
                item_kind in _PASS_THROUGH and item_kind is not str
            ):
                out.append(item)
                continue
            try:
                out.append(_normalise(item, depth))
            except _PathError as exc:
                exc.path.append(index)
                raise
        return out
    if kind is float:
        # Outside canonical mode cbor2 always writes finite floats as 64-bit doubles (pinned
        # version; the tests check it). Passing `encoders=` would slow every item down 2x.
        if math.isfinite(value):
            return value
        raise _PathError(f"float {value} is not allowed (NaN and infinities have no DAG-CBOR form)")
    if isinstance(value, CID):
        return cbor2.CBORTag(_CID_TAG, b"\x00" + cid_to_bytes(value))
    # Subclasses (IntEnum, StrEnum, bytearray, ...) are encoded as their base kind.
    if isinstance(value, int):
        return _normalise(int(value), depth)
    if isinstance(value, str):
        return _normalise(str.__str__(value), depth)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, float):
        return _normalise(float(value), depth)
    if isinstance(value, dict):
        return _normalise(dict(value), depth)
    if isinstance(value, (list, tuple)):
        return _normalise(list(value), depth)
    raise _PathError(f"unsupported type {kind.__name__}")


def encode(value: Any) -> bytes:
    """Encode ``value`` as canonical DAG-CBOR.

    Supported: ``None``, ``bool``, ``int`` (-2**64 .. 2**64-1), finite ``float`` (written as
    64-bit), ``str``, ``bytes``, ``list``/``tuple``, ``dict`` with ``str`` keys, and ``CID``.
    Raises :class:`ValidationError` naming the offending type and where it is, e.g.
    ``at $.deps[2]: unsupported type set``.
    """
    try:
        normalised = _normalise(value, 0)
    except _PathError as exc:
        raise ValidationError(f"at {_format_path(exc.path)}: {exc.message}") from None
    except RecursionError:
        raise ValidationError("value nests too deeply to encode") from None
    return cbor2.dumps(normalised)


def encode_block(value: Any) -> Block:
    """Encode ``value`` and address it: CIDv1, dag-cbor, sha2-256."""
    data = encode(value)
    return Block(cid_for(data, DAG_CBOR), data)


# --------------------------------------------------------------------------------------------------
# Decoding.

_UNPACK_DOUBLE = struct.Struct(">d").unpack_from
_HEAD_SIZES = {24: 1, 25: 2, 26: 4, 27: 8}
_HEAD_MINIMUM = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}


class _Decoder:
    __slots__ = ("data", "end")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.end = len(data)

    def fail(self, message: str, pos: int) -> IntegrityError:
        return IntegrityError(f"invalid DAG-CBOR at byte {pos}: {message}")

    def head(self, pos: int) -> tuple[int, int, int, int]:
        """Read an item head: (major type, additional info, argument, offset after the head)."""
        if pos >= self.end:
            raise self.fail("unexpected end of data", pos)
        initial = self.data[pos]
        major = initial >> 5
        info = initial & 0x1F
        if info < 24:
            return major, info, info, pos + 1
        size = _HEAD_SIZES.get(info)
        if size is None:
            if info == 31:
                if major == 7:
                    raise self.fail("unexpected break", pos)
                raise self.fail("indefinite-length items are not allowed", pos)
            raise self.fail(f"reserved additional information {info}", pos)
        after = pos + 1 + size
        if after > self.end:
            raise self.fail("unexpected end of data", pos)
        argument = int.from_bytes(self.data[pos + 1 : after], "big")
        if major != 7 and argument < _HEAD_MINIMUM[info]:
            raise self.fail("integer or length not minimally encoded", pos)
        return major, info, argument, after

    def item(self, pos: int, depth: int) -> tuple[Any, int]:
        major, info, arg, after = self.head(pos)
        if major == 0:
            return arg, after
        if major == 1:
            return -1 - arg, after
        if major == 2:
            end = after + arg
            if end > self.end:
                raise self.fail("byte string runs past the end of data", pos)
            return self.data[after:end], end
        if major == 3:
            end = after + arg
            if end > self.end:
                raise self.fail("text string runs past the end of data", pos)
            try:
                return self.data[after:end].decode(), end
            except UnicodeDecodeError:
                raise self.fail("text string is not valid UTF-8", pos) from None
        if major == 4:
            if depth >= MAX_DEPTH:
                raise self.fail(f"nesting deeper than {MAX_DEPTH}", pos)
            # Every item takes at least one byte: refuse impossible counts before allocating.
            if arg > self.end - after:
                raise self.fail("array runs past the end of data", pos)
            out = []
            for _ in range(arg):
                value, after = self.item(after, depth + 1)
                out.append(value)
            return out, after
        if major == 5:
            return self.map(pos, arg, after, depth)
        if major == 6:
            return self.tag(pos, arg, after)
        return self.simple(pos, info, arg, after)

    def map(self, pos: int, count: int, after: int, depth: int) -> tuple[Any, int]:
        if depth >= MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}", pos)
        if count > (self.end - after) // 2:
            raise self.fail("map runs past the end of data", pos)
        data = self.data
        out: dict[str, Any] = {}
        previous = b""
        for index in range(count):
            key_pos = after
            major, _info, length, key_start = self.head(after)
            if major != 3:
                raise self.fail("map key is not a text string", key_pos)
            key_end = key_start + length
            if key_end > self.end:
                raise self.fail("text string runs past the end of data", key_pos)
            raw = data[key_start:key_end]
            # Compare UTF-8 payloads by (length, bytes): equivalent to the encoded-key order.
            if index and (
                len(raw) < len(previous) or (len(raw) == len(previous) and raw <= previous)
            ):
                if raw == previous:
                    raise self.fail(f"duplicate map key {raw.decode(errors='replace')!r}", key_pos)
                raise self.fail(
                    f"map keys not in canonical order ({raw.decode(errors='replace')!r} after "
                    f"{previous.decode(errors='replace')!r})",
                    key_pos,
                )
            try:
                key = raw.decode()
            except UnicodeDecodeError:
                raise self.fail("text string is not valid UTF-8", key_pos) from None
            previous = raw
            out[key], after = self.item(key_end, depth + 1)
        return out, after

    def tag(self, pos: int, number: int, after: int) -> tuple[Any, int]:
        if number != _CID_TAG:
            raise self.fail(f"tag {number} is not allowed (only 42, CID)", pos)
        major, _info, length, start = self.head(after)
        if major != 2:
            raise self.fail("tag 42 does not wrap a byte string", after)
        end = start + length
        if end > self.end:
            raise self.fail("byte string runs past the end of data", after)
        if length == 0 or self.data[start] != 0:
            raise self.fail("tag 42 bytes do not start with the 0x00 multibase prefix", after)
        try:
            cid, cid_end = read_cid(self.data[start + 1 : end])
        except IntegrityError as exc:
            raise self.fail(f"tag 42 does not hold a valid CID: {exc}", after) from None
        if start + 1 + cid_end != end:
            raise self.fail("tag 42 holds trailing bytes after the CID", after)
        return cid, end

    def simple(self, pos: int, info: int, arg: int, after: int) -> tuple[Any, int]:
        if info == 20:
            return False, after
        if info == 21:
            return True, after
        if info == 22:
            return None, after
        if info == 27:
            value: float = _UNPACK_DOUBLE(self.data, pos + 1)[0]
            if not math.isfinite(value):
                raise self.fail("NaN and infinities are not allowed", pos)
            return value, after
        if info in (25, 26):
            raise self.fail("floats must be 64-bit", pos)
        if info == 23:
            raise self.fail("undefined is not allowed", pos)
        raise self.fail(f"simple value {arg} is not allowed", pos)


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Decode one canonical DAG-CBOR value from ``data``.

    Raises :class:`IntegrityError` if ``data`` is anything but the single canonical encoding of a
    value: truncated or trailing bytes, non-minimal heads, indefinite lengths, unsorted or
    duplicate map keys, non-text keys, floats not 64-bit, NaN/infinity, tags other than 42, bad
    CIDs, simple values other than true/false/null, nesting deeper than :data:`MAX_DEPTH`, or more
    than ``max_size`` bytes. CIDs decode to :class:`~multiformats.CID`, byte strings to ``bytes``,
    arrays to ``list``.
    """
    if not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise ValidationError(f"DAG-CBOR input must be bytes, not {type(data).__name__}")
        data = bytes(data)
    if len(data) > max_size:
        raise IntegrityError(
            f"DAG-CBOR input of {len(data)} bytes exceeds the {max_size}-byte limit"
        )
    if not data:
        raise IntegrityError("invalid DAG-CBOR: empty input")
    decoder = _Decoder(data)
    value, end = decoder.item(0, 0)
    if end != len(data):
        raise IntegrityError(f"invalid DAG-CBOR at byte {end}: {len(data) - end} trailing bytes")
    return value


def decode_block(block: Block) -> Any:
    """Check that ``block``'s bytes match its CID, then decode them (see :func:`decode`)."""
    verify_block(block.cid, block.data)
    if block.cid.codec.code != DAG_CBOR:
        raise IntegrityError(f"block {block.cid} is {block.cid.codec.name}, not dag-cbor")
    return decode(block.data)
