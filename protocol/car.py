"""CARv1 archives (https://ipld.io/specs/transport/car/carv1/), sans-IO.

A CAR is ``varint(len) header`` followed by sections ``varint(len) cid-bytes block-bytes``; the
header is DAG-CBOR ``{"roots": [CID, ...], "version": 1}``.

:class:`CarDecoder` is fed bytes with :meth:`~CarDecoder.receive_data` and yields events from
:meth:`~CarDecoder.next_event`, so the same code serves files, sockets and tests. A CAR comes from
peers we do not trust: every length is checked against a limit before anything is buffered, and
every failure is an :class:`IntegrityError` that names the byte offset.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Final, NamedTuple, TypeAlias

from . import dagcbor, varint
from .cid import CID, Block, cid_to_bytes, read_cid, verify_block
from .errors import IntegrityError, LocalProtocolError, ValidationError

__all__ = [
    "DEFAULT_MAX_BLOCK_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "END_OF_CAR",
    "NEED_DATA",
    "CarDecoder",
    "CarEvent",
    "CarHeader",
    "EndOfCar",
    "NeedData",
    "encode_block",
    "encode_header",
    "read_car",
    "write_car",
]

DEFAULT_MAX_BLOCK_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_HEADER_SIZE = 1024 * 1024

# A section also holds its CID; CIDs with digests longer than this are not something we accept.
_MAX_CID_SIZE = 128
# How much the caller may feed beyond one incomplete section before draining events.
_FEED_SLACK = 1024 * 1024


class CarHeader(NamedTuple):
    """The CAR header: format version (always 1) and the root CIDs, in order."""

    version: int
    roots: tuple[CID, ...]


class NeedData:
    """Event: the decoder needs more bytes (or ``b""`` for end of input) before it can go on."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


class EndOfCar:
    """Event: the input ended cleanly after the last section. Repeats if asked again."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_CAR"


#: The only :class:`NeedData` instance; compare with ``is`` or ``isinstance``.
NEED_DATA: Final = NeedData()
#: The only :class:`EndOfCar` instance.
END_OF_CAR: Final = EndOfCar()

CarEvent: TypeAlias = CarHeader | Block | NeedData | EndOfCar


def encode_header(roots: Sequence[CID]) -> bytes:
    """The length-prefixed CARv1 header naming ``roots``."""
    for root in roots:
        if not isinstance(root, CID):
            raise ValidationError(f"CAR root {root!r} is not a CID")
    body = dagcbor.encode({"roots": list(roots), "version": 1})
    return varint.encode(len(body)) + body


def encode_block(cid: CID, data: bytes) -> bytes:
    """One length-prefixed CAR section: ``varint(len) cid-bytes data``."""
    raw_cid = cid_to_bytes(cid)
    return varint.encode(len(raw_cid) + len(data)) + raw_cid + data


def write_car(roots: Sequence[CID], blocks: Iterable[Block]) -> Iterator[bytes]:
    """Yield a CARv1 stream piece by piece: the header, then one chunk per block."""
    yield encode_header(roots)
    for cid, data in blocks:
        yield encode_block(cid, data)


class CarDecoder:
    """Incremental CARv1 reader.

    Feed bytes with :meth:`receive_data` (``b""`` marks the end of input), then call
    :meth:`next_event` until it returns :data:`NEED_DATA`; the first event is a :class:`CarHeader`,
    then one :class:`~dre.protocol.cid.Block` per section, then :data:`END_OF_CAR`.

    With ``verify=True`` (default) every block is hashed and checked against its CID. At most one
    section plus what the caller feeds is buffered; feeding more than 1 MiB beyond an incomplete
    section without draining events is a :class:`LocalProtocolError`.
    """

    def __init__(
        self,
        *,
        verify: bool = True,
        max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    ) -> None:
        self.verify = verify
        self.max_block_size = max_block_size
        self.max_header_size = max_header_size
        self._buffer = bytearray()
        self._offset = 0  # absolute offset in the stream of self._buffer[0]
        # Consumed bytes at the front of the buffer. Dropped once per receive_data(), not per
        # section: deleting from a bytearray's front moves everything after it.
        self._pos = 0
        self._eof = False
        self._header: CarHeader | None = None
        self._done = False
        self._error: IntegrityError | None = None
        self._max_buffer = max(max_block_size + _MAX_CID_SIZE, max_header_size) + _FEED_SLACK

    @property
    def header(self) -> CarHeader | None:
        """The header once it has been decoded, else ``None``."""
        return self._header

    @property
    def offset(self) -> int:
        """Stream offset of the first byte not yet consumed."""
        return self._offset + self._pos

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the stream; ``b""`` means the stream has ended."""
        if self._eof:
            raise LocalProtocolError("CAR data received after end of input")
        if not data:
            self._eof = True
            return
        if len(self._buffer) - self._pos + len(data) > self._max_buffer:
            raise LocalProtocolError(
                f"CAR decoder buffer would exceed {self._max_buffer} bytes: "
                "drain next_event() before feeding more"
            )
        if self._pos:
            del self._buffer[: self._pos]
            self._offset += self._pos
            self._pos = 0
        self._buffer += data

    def next_event(self) -> CarEvent:
        """The next event, or :data:`NEED_DATA`. Raises :class:`IntegrityError` on bad input."""
        if self._error is not None:
            raise IntegrityError(str(self._error))
        if self._done:
            return END_OF_CAR
        try:
            return self._next()
        except IntegrityError as exc:
            self._error = exc
            raise

    def _fail(self, message: str, at: int) -> IntegrityError:
        return IntegrityError(f"{message} at byte {at}")

    def _next(self) -> CarEvent:
        buffer = self._buffer
        pos = self._pos
        start = self._offset + pos
        available = len(buffer) - pos
        try:
            prefix = varint.try_decode(buffer, pos)
        except IntegrityError:
            raise self._fail("bad section length varint", start) from None
        if prefix is None:
            if not self._eof:
                return NEED_DATA
            if not available and self._header is not None:
                self._done = True
                return END_OF_CAR
            raise self._fail("CAR truncated", start + available)
        length, body = prefix
        in_header = self._header is None
        limit = self.max_header_size if in_header else self.max_block_size + _MAX_CID_SIZE
        if length > limit:
            what = "header" if in_header else "section"
            raise self._fail(f"CAR {what} of {length} bytes exceeds the {limit}-byte limit", start)
        if length == 0:
            raise self._fail("empty CAR section", start)
        end = body + length
        if len(buffer) < end:
            if self._eof:
                raise self._fail("CAR truncated", start + available)
            return NEED_DATA
        self._pos = end
        if in_header:
            header = self._parse_header(bytes(buffer[body:end]), start)
            self._header = header
            return header
        return self._parse_block(buffer, body, end, self._offset + body)

    def _parse_header(self, section: bytes, start: int) -> CarHeader:
        try:
            value = dagcbor.decode(section, max_size=self.max_header_size)
        except IntegrityError as exc:
            raise self._fail(f"CAR header is not valid DAG-CBOR ({exc})", start) from None
        if not isinstance(value, dict):
            raise self._fail("CAR header is not a map", start)
        version = value.get("version")
        if version == 2 and type(version) is int:
            # CARv2 starts with the pragma varint(10) {"version": 2}, which lands us here.
            raise self._fail(
                "CARv2 is not supported, convert it to CARv1 first (e.g. `car convert`)", start
            )
        if version != 1 or type(version) is not int:
            raise self._fail(f"unsupported CAR version {version!r}", start)
        roots = value.get("roots")
        if not isinstance(roots, list) or not all(isinstance(root, CID) for root in roots):
            raise self._fail("CAR header roots are not a list of CIDs", start)
        if set(value) != {"roots", "version"}:
            extra = sorted(set(value) - {"roots", "version"})
            raise self._fail(f"CAR header has unexpected fields {extra}", start)
        return CarHeader(1, tuple(roots))

    def _parse_block(self, buffer: bytearray, body: int, end: int, at: int) -> Block:
        try:
            cid, cid_end = read_cid(buffer, body)
        except IntegrityError as exc:
            raise self._fail(f"bad CID in CAR section ({exc})", at) from None
        if cid_end > end:
            raise self._fail("bad CID in CAR section (longer than the section)", at)
        if end - cid_end > self.max_block_size:
            raise self._fail(
                f"CAR block of {end - cid_end} bytes exceeds the {self.max_block_size}-byte "
                "limit", at
            )
        # One copy out of the receive buffer (a slice of a bytearray would be a second).
        with memoryview(buffer) as view:
            data = bytes(view[cid_end:end])
        if self.verify:
            try:
                verify_block(cid, data)
            except IntegrityError as exc:
                raise self._fail(f"CAR block does not match its CID ({exc})", at) from None
        return Block(cid, data)


def read_car(
    data: bytes,
    *,
    verify: bool = True,
    max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> tuple[CarHeader, list[Block]]:
    """Decode a whole CARv1 held in memory into its header and blocks (in stream order)."""
    decoder = CarDecoder(
        verify=verify, max_block_size=max_block_size, max_header_size=max_header_size
    )
    header: CarHeader | None = None
    blocks: list[Block] = []
    view = memoryview(data)
    chunk = 256 * 1024
    position = 0
    while True:
        event = decoder.next_event()
        if isinstance(event, NeedData):
            piece = bytes(view[position : position + chunk])
            position += len(piece)
            decoder.receive_data(piece)
        elif isinstance(event, CarHeader):
            header = event
        elif isinstance(event, Block):
            blocks.append(event)
        else:
            break
    if header is None:  # pragma: no cover - END_OF_CAR only ever follows a header
        raise IntegrityError("CAR has no header")
    return header, blocks
