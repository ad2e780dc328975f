"""The UnixFS v1 ``Data`` message (the payload of a dag-pb node's Data field).

Schema (proto2, https://specs.ipfs.tech/unixfs/)::

    message Data {
      enum DataType { Raw = 0; Directory = 1; File = 2; Metadata = 3; Symlink = 4; HAMTShard = 5; }
      required DataType Type = 1;
      optional bytes Data = 2;
      optional uint64 filesize = 3;
      repeated uint64 blocksizes = 4;      // NOT packed: one 0x20 key per entry (Kubo and Helia)
      optional uint64 hashType = 5;
      optional uint64 fanout = 6;
      optional uint32 mode = 7;
      optional UnixTime mtime = 8;
    }
    message UnixTime { required int64 Seconds = 1; optional fixed32 FractionalNanoseconds = 2; }

:func:`encode` writes fields in field-number order, exactly as go-unixfs (gogo-protobuf) and
Helia (protons) do. :func:`decode` is strict in the same way as :mod:`dre.protocol.dagpb`:
fields must be in increasing order (``blocksizes`` may repeat), each with its exact wire type,
minimal varints, no unknown fields, ``Type`` present and known. Packed ``blocksizes`` are
rejected: no importer we interoperate with writes them, and accepting two encodings of one value
would let one file have two CIDs.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec

from .dagpb import decode_varint, encode_varint
from .errors import IntegrityError, ValidationError

__all__ = ["DataType", "UnixFSData", "UnixTime", "decode", "encode"]

_U64_LIMIT = 1 << 64
_U32_LIMIT = 1 << 32
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


class DataType(IntEnum):
    """UnixFS node types."""

    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


class UnixTime(msgspec.Struct, frozen=True):
    """Modification time: seconds since the epoch (may be negative) and optional nanoseconds."""

    seconds: int
    nanos: int | None = None


class UnixFSData(msgspec.Struct, frozen=True):
    """A decoded UnixFS ``Data`` message. ``None`` means the optional field is absent."""

    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: UnixTime | None = None


def _u64(value: int, what: str) -> bytes:
    if not 0 <= value < _U64_LIMIT:
        raise ValidationError(f"UnixFS {what} {value} out of range")
    return encode_varint(value)


def encode(msg: UnixFSData) -> bytes:
    """Encode a UnixFS ``Data`` message in the byte form Kubo and Helia produce."""
    parts = [b"\x08", _u64(int(msg.type), "Type")]
    if msg.data is not None:
        parts += [b"\x12", encode_varint(len(msg.data)), msg.data]
    if msg.filesize is not None:
        parts += [b"\x18", _u64(msg.filesize, "filesize")]
    for size in msg.blocksizes:
        parts += [b"\x20", _u64(size, "blocksize")]
    if msg.hash_type is not None:
        parts += [b"\x28", _u64(msg.hash_type, "hashType")]
    if msg.fanout is not None:
        parts += [b"\x30", _u64(msg.fanout, "fanout")]
    if msg.mode is not None:
        if not 0 <= msg.mode < _U32_LIMIT:
            raise ValidationError(f"UnixFS mode {msg.mode} out of range")
        parts += [b"\x38", encode_varint(msg.mode)]
    if msg.mtime is not None:
        sub = _encode_mtime(msg.mtime)
        parts += [b"\x42", encode_varint(len(sub)), sub]
    return b"".join(parts)


def _encode_mtime(mtime: UnixTime) -> bytes:
    if not _I64_MIN <= mtime.seconds <= _I64_MAX:
        raise ValidationError(f"UnixFS mtime seconds {mtime.seconds} out of range")
    parts = [b"\x08", encode_varint(mtime.seconds & (_U64_LIMIT - 1))]
    # The spec forbids a zero fraction on the wire: "unset" is how zero is written.
    if mtime.nanos:
        if not 1 <= mtime.nanos <= 999_999_999:
            raise ValidationError(f"UnixFS mtime nanoseconds {mtime.nanos} out of range")
        parts += [b"\x15", mtime.nanos.to_bytes(4, "little")]
    return b"".join(parts)


def _decode_mtime(buf: memoryview, pos: int, end: int) -> UnixTime:
    seconds: int | None = None
    nanos: int | None = None
    last = 0
    while pos < end:
        key, pos = decode_varint(buf, pos, end, "UnixTime field key")
        field, wire = key >> 3, key & 7
        if field <= last:
            raise IntegrityError(f"UnixTime field {field} out of order or repeated")
        last = field
        if key == 0x08:
            raw, pos = decode_varint(buf, pos, end, "UnixTime Seconds")
            seconds = raw - _U64_LIMIT if raw > _I64_MAX else raw
        elif key == 0x15:
            if end - pos < 4:
                raise IntegrityError("truncated UnixTime FractionalNanoseconds")
            nanos = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
            if not 1 <= nanos <= 999_999_999:
                raise IntegrityError(f"UnixTime FractionalNanoseconds {nanos} out of range")
        elif field in (1, 2):
            raise IntegrityError(f"UnixTime field {field} has wrong wire type {wire}")
        else:
            raise IntegrityError(f"unknown UnixTime field {field}")
    if seconds is None:
        raise IntegrityError("UnixTime without Seconds")
    return UnixTime(seconds, nanos)


def decode(data: bytes | bytearray | memoryview) -> UnixFSData:
    """Decode a UnixFS ``Data`` message strictly; raises :class:`IntegrityError`."""
    buf = memoryview(data)
    if buf.ndim != 1 or buf.itemsize != 1:
        buf = buf.cast("B")
    end = len(buf)
    pos = 0
    last = 0
    type_: DataType | None = None
    payload: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = []
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: UnixTime | None = None
    while pos < end:
        key, pos = decode_varint(buf, pos, end, "UnixFS field key")
        field, wire = key >> 3, key & 7
        # blocksizes (4) is the one repeated field: it may follow itself, nothing else may.
        if field < last or (field == last and field != 4):
            raise IntegrityError(f"UnixFS field {field} out of order or repeated")
        last = field
        if key == 0x08:
            raw, pos = decode_varint(buf, pos, end, "UnixFS Type")
            try:
                type_ = DataType(raw)
            except ValueError:
                raise IntegrityError(f"unknown UnixFS Type {raw}") from None
        elif key == 0x12:
            length, pos = decode_varint(buf, pos, end, "UnixFS Data length")
            if length > end - pos:
                raise IntegrityError("UnixFS Data runs past the end of the message")
            payload = bytes(buf[pos : pos + length])
            pos += length
        elif key == 0x18:
            filesize, pos = decode_varint(buf, pos, end, "UnixFS filesize")
        elif key == 0x20:
            size, pos = decode_varint(buf, pos, end, "UnixFS blocksize")
            blocksizes.append(size)
        elif key == 0x28:
            hash_type, pos = decode_varint(buf, pos, end, "UnixFS hashType")
        elif key == 0x30:
            fanout, pos = decode_varint(buf, pos, end, "UnixFS fanout")
        elif key == 0x38:
            mode, pos = decode_varint(buf, pos, end, "UnixFS mode")
            if mode >= _U32_LIMIT:
                raise IntegrityError(f"UnixFS mode {mode} does not fit in 32 bits")
        elif key == 0x42:
            length, pos = decode_varint(buf, pos, end, "UnixFS mtime length")
            if length > end - pos:
                raise IntegrityError("UnixFS mtime runs past the end of the message")
            mtime = _decode_mtime(buf, pos, pos + length)
            pos += length
        elif key == 0x22:
            raise IntegrityError("packed UnixFS blocksizes are not accepted (not canonical)")
        elif 1 <= field <= 8:
            raise IntegrityError(f"UnixFS field {field} has wrong wire type {wire}")
        else:
            raise IntegrityError(f"unknown UnixFS field {field} (wire type {wire})")
    if type_ is None:
        raise IntegrityError("UnixFS Data without Type")
    return UnixFSData(type_, payload, filesize, tuple(blocksizes), hash_type, fanout, mode, mtime)
