"""Catalog exchange (``/dre/sync/1.0.0``): anti-entropy between two peers, as a sans-IO machine.

Normative spec: ``specs/network.md`` §"Sync". Gossip is lossy, so a node that was offline catches up
by comparing its *catalog* (the set of record envelope CIDs it holds: manifests, scope records,
attestations) with a peer's, then fetching the envelope blocks it lacks.

How it works, in one paragraph: the initiator sends ``Hello`` with the SHA-256 fingerprint of its
whole catalog; equal fingerprints end the session after one round trip. Otherwise both sides walk a
16-ary prefix tree over the CIDs' sha2-256 digests, in alternating ``Reconcile`` messages: a bucket
whose fingerprints differ is split into its 16 children, a small bucket (<= ``LEAF_SIZE``) is sent
as its list of digests, and the other side answers with the digests it has that the list lacks.
Digests are uniformly distributed, so d differences among n records cost about
``d * log16(n / LEAF_SIZE)`` bucket fingerprints instead of n CIDs. Then each side asks for what it
lacks with ``Want`` and receives ``Records``; every block is checked against its CID on arrival.

Like h11, the machine does no I/O and reads no clock: feed it bytes with :meth:`SyncSession.
receive_data`, pull events with :meth:`SyncSession.next_event`, answer ``RecordsWanted`` with
:meth:`SyncSession.send_records`, and pass the time to :meth:`SyncSession.tick`. Every state change
is listed in ``TRANSITIONS``. A peer that breaks the protocol makes ``next_event`` raise
:class:`RemoteProtocolError` (a block whose bytes do not match: :class:`IntegrityError`); either
means "penalize the peer and reset the stream". A silent peer or a polite ``Abort`` ends the session
with a :class:`ProtocolFailure` event instead, because neither is misbehaviour.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec
from multiformats import CID

from . import dagcbor, varint
from .cid import DAG_CBOR, SHA2_256, Block, cid_from_bytes, cid_to_bytes, verify_block
from .errors import (
    DreError,
    IntegrityError,
    LocalProtocolError,
    RemoteProtocolError,
    ValidationError,
)
from .records import MAX_RECORD_BYTES

__all__ = [
    "BUCKET_FANOUT",
    "DIGEST_BYTES",
    "FINGERPRINT_BYTES",
    "LEAF_SIZE",
    "MAX_BUFFER_BYTES",
    "MAX_CATALOG",
    "MAX_DEPTH",
    "MAX_DIGESTS_PER_MESSAGE",
    "MAX_ITEMS_PER_MESSAGE",
    "MAX_MESSAGES",
    "MAX_MESSAGE_BYTES",
    "MAX_REASON_CHARS",
    "MAX_SESSION_RECORDS",
    "MAX_WANT",
    "MESSAGE_TIMEOUT",
    "PROTOCOL_ID",
    "SESSION_TIMEOUT",
    "TRANSITIONS",
    "VERSION",
    "Abort",
    "Done",
    "Event",
    "Fp",
    "Have",
    "Hello",
    "Ids",
    "Item",
    "Message",
    "NeedData",
    "ProtocolFailure",
    "Reconcile",
    "Records",
    "RecordsReceived",
    "RecordsWanted",
    "SendBytes",
    "State",
    "SyncSession",
    "SyncSummary",
    "Want",
    "catalog_fingerprint",
    "decode_message",
    "encode_message",
]

PROTOCOL_ID: Final = "/dre/sync/1.0.0"
VERSION: Final = 1

#: Largest message body (after the varint length prefix).
MAX_MESSAGE_BYTES: Final = 1_048_576
#: Received bytes buffered at most: one peer turn is at most two messages (``Records`` + ``Want``).
MAX_BUFFER_BYTES: Final = 2 * (MAX_MESSAGE_BYTES + 3)
#: Items in one ``Reconcile``.
MAX_ITEMS_PER_MESSAGE: Final = 4096
#: Digests in one ``Reconcile`` (all ``Ids`` and ``Have`` items together): 512 KiB of digests.
MAX_DIGESTS_PER_MESSAGE: Final = 16_384
#: Digests in one ``Want``, and so blocks in one ``Records``.
MAX_WANT: Final = 1024
#: Children of a bucket: one hex digit of the digest per tree level.
BUCKET_FANOUT: Final = 16
#: A bucket with at most this many CIDs is sent as its digest list rather than split.
LEAF_SIZE: Final = 16
#: Deepest bucket path (64 hex digits = the whole 32-byte digest).
MAX_DEPTH: Final = 64
#: Largest catalog a peer may claim, and the largest we accept as input.
MAX_CATALOG: Final = 10_000_000
#: Records one side fetches per session; the rest waits for the next session (``deferred``).
MAX_SESSION_RECORDS: Final = 10_000
#: Messages one side may receive in a session.
MAX_MESSAGES: Final = 4096
MAX_REASON_CHARS: Final = 256
DIGEST_BYTES: Final = 32
FINGERPRINT_BYTES: Final = 16
#: Seconds the peer has to deliver each message we wait for.
MESSAGE_TIMEOUT: Final = 30.0
#: Seconds a whole session may take.
SESSION_TIMEOUT: Final = 600.0

# Every record is a CIDv1 dag-cbor sha2-256 block (specs/records.md §2), so the wire carries only
# the 32-byte digest and this prefix is implied. A record of another shape needs a new version.
_PREFIX: Final = bytes([1, DAG_CBOR, SHA2_256, DIGEST_BYTES])
_CID_BYTES: Final = len(_PREFIX) + DIGEST_BYTES
_NETWORK_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,62}$"

# --------------------------------------------------------------------------------------------------
# Wire messages. Each is a DAG-CBOR map tagged by "type"; reconcile items are compact arrays tagged
# by their first element. Meta limits bound every field before any semantic check runs.

Path = Annotated[bytes, msgspec.Meta(max_length=MAX_DEPTH)]
_NetworkName = Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=_NETWORK_PATTERN)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_CATALOG)]


class Fp(msgspec.Struct, frozen=True, array_like=True, tag="f", forbid_unknown_fields=True):
    """The sender's summary of one bucket: how many CIDs it holds there and their fingerprint."""

    path: Path
    count: Count
    #: First 16 bytes of the bucket's fingerprint; empty exactly when ``count`` is 0.
    fingerprint: Annotated[bytes, msgspec.Meta(max_length=FINGERPRINT_BYTES)]


class Ids(msgspec.Struct, frozen=True, array_like=True, tag="i", forbid_unknown_fields=True):
    """Every digest the sender holds in a bucket (at most ``LEAF_SIZE``), ascending."""

    path: Path
    digests: Annotated[bytes, msgspec.Meta(max_length=LEAF_SIZE * DIGEST_BYTES)]


class Have(msgspec.Struct, frozen=True, array_like=True, tag="h", forbid_unknown_fields=True):
    """Digests in a bucket that the sender has and the receiver lacks, ascending; may be cut up."""

    path: Path
    digests: Annotated[
        bytes, msgspec.Meta(min_length=DIGEST_BYTES, max_length=MAX_DIGESTS_PER_MESSAGE * 32)
    ]


Item = Fp | Ids | Have


class Hello(msgspec.Struct, frozen=True, tag="hello", tag_field="type", forbid_unknown_fields=True):
    """First message of the initiator: the root bucket's summary plus who is asking."""

    version: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    network: _NetworkName
    catalog_size: Count
    #: Full SHA-256 fingerprint of the whole catalog.
    digest: Annotated[bytes, msgspec.Meta(min_length=DIGEST_BYTES, max_length=DIGEST_BYTES)]


class Reconcile(
    msgspec.Struct, frozen=True, tag="reconcile", tag_field="type", forbid_unknown_fields=True
):
    """One turn of reconciliation; empty means "nothing more to say"."""

    items: Annotated[tuple[Item, ...], msgspec.Meta(max_length=MAX_ITEMS_PER_MESSAGE)]


class Want(msgspec.Struct, frozen=True, tag="want", tag_field="type", forbid_unknown_fields=True):
    """Digests of records the sender asks for, ascending; empty means "I want nothing more"."""

    digests: Annotated[bytes, msgspec.Meta(max_length=MAX_WANT * DIGEST_BYTES)]


class Records(
    msgspec.Struct, frozen=True, tag="records", tag_field="type", forbid_unknown_fields=True
):
    """Envelope blocks answering the last ``Want``, in its order; omitted ones are re-asked."""

    blocks: Annotated[
        tuple[Annotated[bytes, msgspec.Meta(max_length=MAX_RECORD_BYTES)], ...],
        msgspec.Meta(max_length=MAX_WANT),
    ]


class Abort(msgspec.Struct, frozen=True, tag="abort", tag_field="type", forbid_unknown_fields=True):
    """A polite end (wrong network or version); not misbehaviour."""

    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)]


Message = Hello | Reconcile | Want | Records | Abort


def encode_message(message: Message) -> bytes:
    """The framed wire form of ``message``: varint(length) + DAG-CBOR map."""
    body = dagcbor.encode(msgspec.to_builtins(message, builtin_types=(bytes,)))
    if len(body) > MAX_MESSAGE_BYTES:  # the senders below pack within the limit; a guard
        raise LocalProtocolError(f"sync message of {len(body)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return varint.encode(len(body)) + body


def _digest_list(data: bytes, what: str) -> list[bytes]:
    if len(data) % DIGEST_BYTES:
        raise RemoteProtocolError(f"{what}: {len(data)} bytes is not a whole number of digests")
    out = [data[i : i + DIGEST_BYTES] for i in range(0, len(data), DIGEST_BYTES)]
    # Strictly ascending: one encoding per set, and duplicates are impossible.
    for a, b in itertools.pairwise(out):
        if a >= b:
            raise RemoteProtocolError(f"{what}: digests are not strictly ascending")
    return out


def _check_path(path: bytes) -> None:
    if any(nibble >= BUCKET_FANOUT for nibble in path):
        raise RemoteProtocolError("bucket path holds a byte that is not a hex digit (0..15)")


def decode_message(body: bytes) -> Message:
    """Parse one message body (without its length prefix); :class:`RemoteProtocolError` if bad."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(f"sync message of {len(body)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        value = dagcbor.decode(body, max_size=MAX_MESSAGE_BYTES)
    except (IntegrityError, ValidationError) as exc:
        raise RemoteProtocolError(f"malformed sync message: {exc}") from None
    try:
        # builtin_types: without it msgspec would accept base64 text where bytes are expected.
        message: Message = msgspec.convert(value, Message, strict=True, builtin_types=(bytes,))
    except msgspec.ValidationError as exc:
        raise RemoteProtocolError(f"invalid sync message: {exc}") from None
    if isinstance(message, Reconcile):
        total = 0
        for item in message.items:
            _check_path(item.path)
            if isinstance(item, Fp):
                if (item.count == 0) != (not item.fingerprint) or (
                    item.fingerprint and len(item.fingerprint) != FINGERPRINT_BYTES
                ):
                    raise RemoteProtocolError(
                        "fingerprint must be empty for an empty bucket and 16 bytes otherwise"
                    )
            else:
                total += len(_digest_list(item.digests, "reconcile item"))
        if total > MAX_DIGESTS_PER_MESSAGE:
            raise RemoteProtocolError(f"reconcile message carries {total} digests")
    elif isinstance(message, Want):
        _digest_list(message.digests, "want")
    return message


def catalog_fingerprint(cids: Iterable[bytes]) -> bytes:
    """SHA-256 over the concatenated binary CIDs, ascending (the caller sorts)."""
    return hashlib.sha256(b"".join(cids)).digest()


# --------------------------------------------------------------------------------------------------
# Events (what next_event returns).


@dataclass(frozen=True, slots=True)
class NeedData:
    """Feed more bytes from the peer (or ``b""`` at end of stream)."""


@dataclass(frozen=True, slots=True)
class SendBytes:
    """Write these bytes to the peer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class RecordsWanted:
    """The peer asks for these records; answer with :meth:`SyncSession.send_records`."""

    cids: tuple[CID, ...]


@dataclass(frozen=True, slots=True)
class RecordsReceived:
    """Envelope blocks whose bytes match their CIDs (signatures not yet checked: open_record)."""

    blocks: tuple[Block, ...]


@dataclass(frozen=True, slots=True)
class SyncSummary:
    """What a finished session did."""

    #: The catalogs were equal (one round trip, nothing else exchanged).
    identical: bool
    #: Every CID the peer has and we lack, ascending by digest.
    wanted: tuple[CID, ...]
    #: Records received and handed up.
    received: int
    #: Wanted records the peer did not deliver (it lacks them now).
    missing: tuple[CID, ...]
    #: Wanted records left for a later session (per-session caps).
    deferred: tuple[CID, ...]
    #: Records we sent to the peer.
    sent: int
    messages_sent: int
    messages_received: int
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True, slots=True)
class Done:
    """The session ended normally; close the stream."""

    summary: SyncSummary


@dataclass(frozen=True, slots=True)
class ProtocolFailure:
    """The session ended without a result, through no provable fault of the peer."""

    reason: str


Event = NeedData | SendBytes | RecordsWanted | RecordsReceived | Done | ProtocolFailure


# --------------------------------------------------------------------------------------------------
# The state machine.


class State(enum.Enum):
    """Where a session is. ``AWAIT_*`` states other than ``AWAIT_APP`` wait for the peer."""

    AWAIT_HELLO = "await-hello"
    AWAIT_FIRST_REPLY = "await-first-reply"
    AWAIT_RECONCILE = "await-reconcile"
    AWAIT_RECONCILE_OR_WANT = "await-reconcile-or-want"
    AWAIT_RECORDS = "await-records"
    AWAIT_WANT = "await-want"
    AWAIT_APP = "await-app"
    DONE = "done"
    FAILED = "failed"
    ERROR = "error"


_S = State
_PEER_STATES: Final = frozenset(
    {
        _S.AWAIT_HELLO,
        _S.AWAIT_FIRST_REPLY,
        _S.AWAIT_RECONCILE,
        _S.AWAIT_RECONCILE_OR_WANT,
        _S.AWAIT_RECORDS,
        _S.AWAIT_WANT,
    }
)

_AFTER_RECONCILE: Final = frozenset(
    {_S.AWAIT_RECONCILE, _S.AWAIT_RECONCILE_OR_WANT, _S.AWAIT_RECORDS, _S.AWAIT_WANT}
)

#: Every transition: (state, input) -> (handler, states the handler may lead to). Inputs are the
#: peer's message types and the application's ``send_records``. Not listed, in every state that
#: waits for the peer: ``abort`` -> FAILED, timeout -> FAILED, end of stream or any other message
#: -> ERROR (raised). specs/network.md has the same table; a test compares them.
TRANSITIONS: Final[dict[tuple[State, str], tuple[str, frozenset[State]]]] = {
    (_S.AWAIT_HELLO, "hello"): (
        "_on_hello",
        frozenset({_S.DONE, _S.FAILED, _S.AWAIT_RECONCILE}),
    ),
    (_S.AWAIT_FIRST_REPLY, "reconcile"): (
        "_on_first_reconcile",
        frozenset({_S.DONE, _S.AWAIT_RECONCILE, _S.AWAIT_RECONCILE_OR_WANT}),
    ),
    (_S.AWAIT_RECONCILE, "reconcile"): (
        "_on_reconcile",
        _AFTER_RECONCILE,
    ),
    (_S.AWAIT_RECONCILE_OR_WANT, "reconcile"): (
        "_on_reconcile",
        _AFTER_RECONCILE,
    ),
    (_S.AWAIT_RECONCILE_OR_WANT, "want"): (
        "_on_want",
        frozenset({_S.AWAIT_APP, _S.AWAIT_RECORDS, _S.DONE}),
    ),
    (_S.AWAIT_RECORDS, "records"): ("_on_records", frozenset({_S.AWAIT_WANT})),
    (_S.AWAIT_WANT, "want"): ("_on_want", frozenset({_S.AWAIT_APP, _S.AWAIT_RECORDS, _S.DONE})),
    (_S.AWAIT_APP, "send_records"): (
        "_on_send_records",
        frozenset({_S.AWAIT_RECORDS, _S.AWAIT_WANT}),
    ),
}

_MESSAGE_NAMES: Final[dict[type, str]] = {
    Hello: "hello",
    Reconcile: "reconcile",
    Want: "want",
    Records: "records",
    Abort: "abort",
}


def _split_path(path: bytes) -> tuple[bytes, bytes | None]:
    """The binary-CID bounds ``[lo, hi)`` of a bucket; ``hi`` is None for the last bucket."""
    value = 0
    for nibble in path:
        value = value * BUCKET_FANOUT + nibble
    size = (len(path) + 1) // 2
    shift = 4 * (len(path) % 2)  # an odd path fills only the high half of its last byte
    lo = _PREFIX + (value << shift).to_bytes(size, "big")
    if value + 1 == BUCKET_FANOUT ** len(path):
        return lo, None
    return lo, _PREFIX + ((value + 1) << shift).to_bytes(size, "big")


def _under(key: bytes, lo: bytes, hi: bytes | None) -> bool:
    return lo <= key and (hi is None or key < hi)


class SyncSession:
    """One catalog exchange with one peer, from one side. See the module docstring."""

    def __init__(
        self,
        role: Literal["initiator", "responder"],
        catalog: Iterable[CID],
        *,
        network: str,
        now: float,
        max_records: int = MAX_SESSION_RECORDS,
        message_timeout: float = MESSAGE_TIMEOUT,
        session_timeout: float = SESSION_TIMEOUT,
    ) -> None:
        """Start a session. ``catalog`` holds the record envelope CIDs we have (any order).

        Raises :class:`ValidationError` for a CID that is not CIDv1 dag-cbor sha2-256 (no record
        has another shape), a bad network name, or a catalog over ``MAX_CATALOG``.
        """
        if role not in ("initiator", "responder"):
            raise ValidationError(f"role must be 'initiator' or 'responder', not {role!r}")
        try:
            msgspec.convert(network, _NetworkName)
        except msgspec.ValidationError:
            raise ValidationError(f"invalid network name {network!r}") from None
        keys = set()
        for cid in catalog:
            key = cid_to_bytes(cid)
            if len(key) != _CID_BYTES or not key.startswith(_PREFIX):
                raise ValidationError(f"{cid} is not a record CID (CIDv1, dag-cbor, sha2-256)")
            keys.add(key)
        if len(keys) > MAX_CATALOG:
            raise ValidationError(f"catalog of {len(keys)} records exceeds {MAX_CATALOG}")
        if not 0 <= max_records <= MAX_SESSION_RECORDS:
            raise ValidationError(f"max_records must be within 0..{MAX_SESSION_RECORDS}")
        self.role = role
        self.network = network
        #: Our catalog: sorted binary CIDs. Sorting binary CIDs sorts digests (common prefix).
        self._cids: list[bytes] = sorted(keys)
        self._max_records = max_records
        self._message_timeout = message_timeout
        self._now = now
        self._session_deadline = now + session_timeout
        self._deadline = now + message_timeout

        self._state = _S.AWAIT_HELLO
        self._events: deque[Event] = deque()
        self._buffer = bytearray()
        self._eof = False
        self._overflow = False
        self._error: DreError | None = None
        self._failure: ProtocolFailure | None = None

        # Reconciliation bookkeeping (paths are bucket paths, one hex digit per byte).
        self._queue: deque[Item] = deque()  # items waiting for room in a message
        self._asked_fp: set[bytes] = set()  # we sent Fp(count > 0): peer may split it / send Ids
        self._answer_kind: dict[bytes, str] = {}  # ...and answered it by "split" or "ids"
        self._seen_fp: set[bytes] = set()  # peer's Fp paths already answered by us
        self._have_ok: set[bytes] = set()  # we sent Ids or Fp(count 0): peer may send Have
        self._want: set[bytes] = set()  # digests the peer has and we lack
        self._identical = False

        # Fetch bookkeeping.
        self._fetch_ready = False
        self._fetch: deque[bytes] = deque()  # digests still to ask for
        self._outstanding: list[bytes] = []  # digests of our last non-empty Want
        self._sent_empty_want = False
        self._missing: list[bytes] = []
        self._deferred: list[bytes] = []
        self._received = 0
        self._requested: list[bytes] = []  # the peer's current Want
        self._served: set[bytes] = set()

        self._messages_sent = 0
        self._messages_received = 0
        self._bytes_sent = 0
        self._bytes_received = 0

        if role == "initiator":
            hello = Hello(VERSION, network, len(self._cids), catalog_fingerprint(self._cids))
            self._send(hello)
            if self._cids:
                # Hello is our Fp for the root bucket (full-length fingerprint).
                self._asked_fp.add(b"")
            else:
                self._have_ok.add(b"")
            self._state = _S.AWAIT_FIRST_REPLY

    # ----------------------------------------------------------------------------------------------
    # Public API.

    @property
    def state(self) -> State:
        """The current state (see ``TRANSITIONS``)."""
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means the peer closed its side of the stream."""
        if self._eof and data:
            raise LocalProtocolError("receive_data() after end of stream")
        if not data:
            self._eof = True
            return
        if len(self._buffer) + len(data) > MAX_BUFFER_BYTES:
            # Drop the bytes (the cap is the point) and fail in next_event, like any bad input.
            self._overflow = True
            self._buffer.clear()
            return
        self._buffer += data

    def tick(self, now: float) -> None:
        """Tell the session the time; a silent peer or an overlong session fails it."""
        self._now = now
        if self._state in (_S.DONE, _S.FAILED, _S.ERROR):
            return
        if now >= self._session_deadline:
            self._fail("session took longer than its deadline", drop_output=True)
        elif self._state in _PEER_STATES and now >= self._deadline:
            self._fail(f"peer silent for {self._message_timeout:g} s", drop_output=True)

    def next_event(self) -> Event:
        """The next thing to do. Raises :class:`RemoteProtocolError` or :class:`IntegrityError`
        if the peer broke the protocol (then reset the stream; the session is dead)."""
        while True:
            if self._error is not None:
                raise self._error
            if self._events:
                return self._events.popleft()
            if self._state is _S.DONE:
                if self._buffer or self._overflow:
                    self._raise(RemoteProtocolError("peer sent data after the end of the session"))
                return Done(self._summary())
            if self._failure is not None:
                return self._failure
            if self._state is _S.AWAIT_APP:
                raise LocalProtocolError("answer RecordsWanted with send_records() first")
            if self._overflow:
                self._raise(RemoteProtocolError(f"peer sent over {MAX_BUFFER_BYTES} bytes ahead"))
            try:
                message = self._read_message()
            except RemoteProtocolError as exc:
                self._raise(exc)
                raise  # unreachable: _raise raised
            if message is None:
                if self._eof:
                    where = self._state.value
                    self._raise(RemoteProtocolError(f"peer closed the stream in {where}"))
                return NeedData()
            self._dispatch(_MESSAGE_NAMES[type(message)], message)

    def send_records(self, blocks: Iterable[Block]) -> None:
        """Answer the last :class:`RecordsWanted`: the envelope blocks we have, any order.

        Blocks we do not have are simply left out. Raises :class:`LocalProtocolError` for a block
        that was not asked for and :class:`IntegrityError` for one whose bytes do not match its CID.
        """
        if self._state is not _S.AWAIT_APP or self._events:
            raise LocalProtocolError("send_records() without a pending RecordsWanted")
        self._dispatch("send_records", tuple(blocks))

    # ----------------------------------------------------------------------------------------------
    # Plumbing.

    def _raise(self, exc: DreError) -> None:
        self._state = _S.ERROR
        self._error = exc
        self._events.clear()
        raise exc

    def _fail(self, reason: str, *, drop_output: bool = False) -> None:
        if drop_output:
            self._events.clear()
        self._state = _S.FAILED
        self._failure = ProtocolFailure(reason)

    def _send(self, message: Message) -> None:
        data = encode_message(message)
        self._messages_sent += 1
        self._bytes_sent += len(data)
        # Consecutive sends (Records + Want) go out as one write.
        last = self._events[-1] if self._events else None
        if isinstance(last, SendBytes):
            self._events.pop()
            data = last.data + data
        self._events.append(SendBytes(data))

    def _read_message(self) -> Message | None:
        try:
            header = varint.try_decode(self._buffer) if self._buffer else None
        except IntegrityError as exc:
            raise RemoteProtocolError(f"bad length prefix: {exc}") from None
        if header is None:
            if len(self._buffer) >= varint.MAX_BYTES:
                raise RemoteProtocolError("bad length prefix")
            return None
        length, start = header
        if not 0 < length <= MAX_MESSAGE_BYTES:
            raise RemoteProtocolError(f"message length {length} outside 1..{MAX_MESSAGE_BYTES}")
        if len(self._buffer) < start + length:
            return None
        body = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        self._messages_received += 1
        self._bytes_received += start + length
        if self._messages_received > MAX_MESSAGES:
            raise RemoteProtocolError(f"more than {MAX_MESSAGES} messages in one session")
        return decode_message(body)

    def _dispatch(self, name: str, payload: object) -> None:
        """Run the table entry for (state, input); anything not in the table is an error."""
        if name == "abort" and self._state in _PEER_STATES:
            assert isinstance(payload, Abort)
            self._fail(f"peer aborted: {payload.reason}")
            return
        entry = TRANSITIONS.get((self._state, name))
        if entry is None:
            self._raise(RemoteProtocolError(f"unexpected {name} in state {self._state.value}"))
            return
        handler, allowed = entry
        try:
            new_state: State = getattr(self, handler)(payload)
        except (RemoteProtocolError, IntegrityError) as exc:
            if name == "send_records":
                raise  # the application's mistake; the session stays as it was
            self._raise(exc)
            return
        except ValueError as exc:  # a wire value our checks missed: still the peer's fault
            self._raise(RemoteProtocolError(f"invalid {name}: {exc}"))
            return
        assert new_state in allowed, (self._state, name, new_state)
        self._state = new_state
        self._deadline = self._now + self._message_timeout

    # ----------------------------------------------------------------------------------------------
    # Catalog queries.

    def _bucket(self, path: bytes) -> tuple[int, int]:
        lo, hi = _split_path(path)
        start = bisect_left(self._cids, lo)
        end = len(self._cids) if hi is None else bisect_left(self._cids, hi)
        return start, end

    def _has(self, digest: bytes) -> bool:
        key = _PREFIX + digest
        i = bisect_left(self._cids, key)
        return i < len(self._cids) and self._cids[i] == key

    def _digests(self, start: int, end: int) -> bytes:
        return b"".join(key[len(_PREFIX) :] for key in self._cids[start:end])

    def _summary_item(self, path: bytes) -> Fp:
        start, end = self._bucket(path)
        fingerprint = catalog_fingerprint(self._cids[start:end])[:FINGERPRINT_BYTES]
        return Fp(path, end - start, fingerprint if end > start else b"")

    # ----------------------------------------------------------------------------------------------
    # Reconciliation.

    def _answer_summary(self, path: bytes, count: int, fingerprint: bytes, full: bool) -> None:
        """Answer the peer's summary of bucket ``path`` (its Fp, or the Hello for the root)."""
        start, end = self._bucket(path)
        mine = end - start
        if count == mine:
            ours = catalog_fingerprint(self._cids[start:end])
            if mine == 0 or (ours if full else ours[:FINGERPRINT_BYTES]) == fingerprint:
                return  # equal buckets: silence is the answer
        if count == 0:
            self._queue.append(Have(path, self._digests(start, end)))  # it lacks all of ours
        elif mine <= LEAF_SIZE or len(path) == MAX_DEPTH:
            self._queue.append(Ids(path, self._digests(start, end)))
            self._have_ok.add(path)
        else:
            for nibble in range(BUCKET_FANOUT):
                child = self._summary_item(path + bytes([nibble]))
                self._queue.append(child)
                if child.count:
                    self._asked_fp.add(child.path)
                else:
                    self._have_ok.add(child.path)

    def _take(self, path: bytes, digests: list[bytes]) -> None:
        """Remember digests the peer has under ``path`` and we lack."""
        lo, hi = _split_path(path)
        for digest in digests:
            if not _under(_PREFIX + digest, lo, hi):
                raise RemoteProtocolError("digest outside the bucket it was sent for")
            if digest in self._want or self._has(digest):
                raise RemoteProtocolError("peer says we lack a record we have or already know of")
            self._want.add(digest)

    def _on_item(self, item: Item) -> None:
        path = item.path
        if isinstance(item, Fp):
            # The peer splits a bucket we summarised; each child is answered once.
            parent = path[:-1]
            if (
                path == b""
                or parent not in self._asked_fp
                or path in self._seen_fp
                or self._answer_kind.setdefault(parent, "split") != "split"
            ):
                raise RemoteProtocolError("bucket summary nobody asked for")
            self._seen_fp.add(path)
            self._answer_summary(path, item.count, item.fingerprint, full=False)
        elif isinstance(item, Ids):
            if path not in self._asked_fp or path in self._answer_kind:
                raise RemoteProtocolError("digest list nobody asked for")
            self._answer_kind[path] = "ids"
            theirs = _digest_list(item.digests, "ids")
            start, end = self._bucket(path)
            mine = [key[len(_PREFIX) :] for key in self._cids[start:end]]
            theirs_set = set(theirs)
            mine_set = set(mine)
            self._take(path, [d for d in theirs if d not in mine_set])
            lacking = b"".join(d for d in mine if d not in theirs_set)
            if lacking:
                self._queue.append(Have(path, lacking))
        else:
            if path not in self._have_ok:
                raise RemoteProtocolError("have list nobody asked for")
            self._take(path, _digest_list(item.digests, "have"))

    def _next_reconcile(self) -> Reconcile:
        """Pack queued items into one message within the item and digest limits."""
        items: list[Item] = []
        room = MAX_DIGESTS_PER_MESSAGE
        while self._queue and len(items) < MAX_ITEMS_PER_MESSAGE:
            item = self._queue[0]
            if isinstance(item, Fp):
                items.append(self._queue.popleft())
                continue
            count = len(item.digests) // DIGEST_BYTES
            if count <= room:
                items.append(self._queue.popleft())
                room -= count
            elif isinstance(item, Have) and room:
                # A Have list may be cut anywhere; the rest goes in the next message.
                cut = room * DIGEST_BYTES
                items.append(Have(item.path, item.digests[:cut]))
                self._queue[0] = Have(item.path, item.digests[cut:])
                room = 0
            else:
                break
        return Reconcile(tuple(items))

    def _on_hello(self, hello: Hello) -> State:
        if hello.version != VERSION or hello.network != self.network:
            reason = (
                f"version {hello.version} is not {VERSION}"
                if hello.version != VERSION
                else f"network {hello.network!r} is not {self.network!r}"
            )
            self._send(Abort(reason))
            self._fail(reason)
            return _S.FAILED
        self._answer_summary(b"", hello.catalog_size, hello.digest, full=True)
        reply = self._next_reconcile()
        self._send(reply)
        if not reply.items:
            self._identical = True
            return _S.DONE
        return _S.AWAIT_RECONCILE

    def _on_first_reconcile(self, message: Reconcile) -> State:
        if not message.items:
            self._identical = True
            return _S.DONE
        return self._on_reconcile(message)

    def _on_reconcile(self, message: Reconcile) -> State:
        if not message.items and not self._queue:
            # The peer had nothing left to say and neither do we: every bucket is settled.
            return self._start_fetch()
        for item in message.items:
            self._on_item(item)
        reply = self._next_reconcile()
        self._send(reply)
        return _S.AWAIT_RECONCILE if reply.items else _S.AWAIT_RECONCILE_OR_WANT

    # ----------------------------------------------------------------------------------------------
    # Fetching.

    def _prepare_fetch(self) -> None:
        if not self._fetch_ready:
            self._fetch_ready = True
            wanted = sorted(self._want)
            self._fetch = deque(wanted[: self._max_records])
            self._deferred = wanted[self._max_records :]

    def _start_fetch(self) -> State:
        self._prepare_fetch()
        return self._send_want()

    def _send_want(self) -> State:
        # Leave room under both sides' message limit for the end of the session.
        if max(self._messages_sent, self._messages_received) >= MAX_MESSAGES - 8 and self._fetch:
            self._deferred.extend(self._fetch)
            self._fetch.clear()
        batch = [self._fetch.popleft() for _ in range(min(MAX_WANT, len(self._fetch)))]
        self._send(Want(b"".join(batch)))
        self._outstanding = batch
        self._sent_empty_want = not batch
        return _S.AWAIT_RECORDS if batch else _S.AWAIT_WANT

    def _on_want(self, want: Want) -> State:
        self._prepare_fetch()  # the peer may be the one that ended reconciliation
        digests = _digest_list(want.digests, "want")
        if not digests:
            if self._sent_empty_want:
                return _S.DONE  # both sides want nothing more
            state = self._send_want()
            return _S.DONE if state is _S.AWAIT_WANT else state
        for digest in digests:
            # Only catalog records are served: a Want must not become a way to read other blocks.
            if not self._has(digest) or digest in self._served:
                raise RemoteProtocolError("peer wants a record not offered or already sent")
        self._requested = digests
        self._events.append(RecordsWanted(tuple(cid_from_bytes(_PREFIX + d) for d in digests)))
        return _S.AWAIT_APP

    def _on_send_records(self, blocks: tuple[Block, ...]) -> State:
        position = {digest: i for i, digest in enumerate(self._requested)}
        chosen: dict[int, bytes] = {}
        for block in blocks:
            key = cid_to_bytes(block.cid)
            i = position.get(key[len(_PREFIX) :]) if key.startswith(_PREFIX) else None
            if i is None:
                raise LocalProtocolError(f"block {block.cid} was not asked for")
            verify_block(block.cid, block.data)
            if len(block.data) > MAX_RECORD_BYTES:
                raise LocalProtocolError(f"block {block.cid} is larger than any record")
            chosen[i] = bytes(block.data)
        # In Want order, as many as fit; the peer asks again for the rest.
        out: list[bytes] = []
        size = 16  # map, "type", "records", "blocks" and the list head
        for i in sorted(chosen):
            data = chosen[i]
            if size + len(data) + 5 > MAX_MESSAGE_BYTES:
                break
            size += len(data) + 5
            out.append(data)
            self._served.add(self._requested[i])
        self._requested = []
        self._send(Records(tuple(out)))
        return self._send_want()

    def _on_records(self, records: Records) -> State:
        position = {digest: i for i, digest in enumerate(self._outstanding)}
        got: list[Block] = []
        last = -1
        for data in records.blocks:
            digest = hashlib.sha256(data).digest()
            i = position.get(digest)
            if i is None:
                raise IntegrityError("peer sent a record block whose bytes match no wanted CID")
            if i <= last:
                raise RemoteProtocolError("records out of Want order or repeated")
            last = i
            got.append(Block(cid_from_bytes(_PREFIX + digest), data))
        if got:
            # Skipped before the last delivered block: the peer lacks them. After it: they did not
            # fit in the message, so ask again (in order, ahead of the rest).
            delivered = {cid_to_bytes(block.cid)[len(_PREFIX) :] for block in got}
            self._missing.extend(d for d in self._outstanding[:last] if d not in delivered)
            self._fetch.extendleft(reversed(self._outstanding[last + 1 :]))
            self._received += len(got)
            self._events.append(RecordsReceived(tuple(got)))
        else:
            self._missing.extend(self._outstanding)
        self._outstanding = []
        return _S.AWAIT_WANT

    def _summary(self) -> SyncSummary:
        def cids(digests: Iterable[bytes]) -> tuple[CID, ...]:
            return tuple(cid_from_bytes(_PREFIX + d) for d in digests)

        return SyncSummary(
            identical=self._identical,
            wanted=cids(sorted(self._want)),
            received=self._received,
            missing=cids(self._missing),
            deferred=cids(self._deferred),
            sent=len(self._served),
            messages_sent=self._messages_sent,
            messages_received=self._messages_received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
        )
