"""Catalog exchange (/dre/sync/1.0.0): convergence, cost, bad peers, timeouts, vectors, fuzzing.

Two sessions are wired to each other in memory: each one's SendBytes is fed to the other.
Run as a script to regenerate ``specs/vectors/sync.json`` (only when the spec changes).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from dre.protocol import dagcbor, sync, varint
from dre.protocol.cid import Block, cid_for, cid_to_bytes
from dre.protocol.errors import (
    IntegrityError,
    LocalProtocolError,
    RemoteProtocolError,
    ValidationError,
)
from dre.protocol.records import MAX_RECORD_BYTES
from dre.protocol.sync import (
    Abort,
    Done,
    Fp,
    Have,
    Hello,
    Ids,
    NeedData,
    ProtocolFailure,
    Reconcile,
    Records,
    RecordsReceived,
    RecordsWanted,
    SendBytes,
    State,
    SyncSession,
    SyncSummary,
    Want,
    decode_message,
    encode_message,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multiformats import CID

ROOT = Path(__file__).resolve().parents[2]
VECTOR_PATH = ROOT / "specs" / "vectors" / "sync.json"
SPEC_PATH = ROOT / "specs" / "network.md"

_BLOCKS: dict[int, Block] = {}


def record(n: int, pad: int = 0) -> Block:
    """A stand-in record block (sync only cares that it is a dag-cbor block)."""
    if pad:
        return dagcbor.encode_block({"n": n, "pad": b"x" * pad})
    block = _BLOCKS.get(n)
    if block is None:
        block = _BLOCKS[n] = dagcbor.encode_block({"n": n})
    return block


def records(numbers: Iterable[int]) -> dict[CID, Block]:
    return {block.cid: block for block in map(record, numbers)}


def body_of(frame: bytes) -> bytes:
    _, start = varint.decode(frame)
    return frame[start:]


def frames(data: bytes) -> list[bytes]:
    """Split a byte string of whole frames into frames (prefix included)."""
    out = []
    pos = 0
    while pos < len(data):
        length, start = varint.decode(data, pos)
        out.append(data[pos : start + length])
        pos = start + length
    return out


class Side:
    """One end of an in-memory exchange: a session, its store, what happened to it."""

    def __init__(self, session: SyncSession, store: dict[CID, Block]) -> None:
        self.session = session
        self.store = store
        self.received: list[Block] = []
        self.summary: SyncSummary | None = None
        self.failure: ProtocolFailure | None = None
        self.error: Exception | None = None
        self.frames_sent: list[bytes] = []

    @property
    def finished(self) -> bool:
        return self.summary is not None or self.failure is not None or self.error is not None


Rewrite = Callable[[int, str, bytes], bytes]
Answer = Callable[[Side, tuple[CID, ...]], list[Block]]


def exchange(
    a: Iterable[int] | dict[CID, Block],
    b: Iterable[int] | dict[CID, Block],
    *,
    rewrite: Rewrite | None = None,
    answer: Answer | None = None,
    network_b: str = "main",
    max_records: int = sync.MAX_SESSION_RECORDS,
) -> tuple[Side, Side]:
    """Run a whole session between an initiator holding ``a`` and a responder holding ``b``.

    ``rewrite(index, sender_role, frame)`` may replace the index-th frame on the wire.
    """
    store_a = a if isinstance(a, dict) else records(a)
    store_b = b if isinstance(b, dict) else records(b)
    ini = Side(
        SyncSession("initiator", list(store_a), network="main", now=0.0, max_records=max_records),
        dict(store_a),
    )
    res = Side(
        SyncSession(
            "responder", list(store_b), network=network_b, now=0.0, max_records=max_records
        ),
        dict(store_b),
    )
    wire_index = 0
    for _ in range(1_000_000):
        progressed = False
        for side, other in ((ini, res), (res, ini)):
            if side.finished:
                continue
            try:
                event = side.session.next_event()
            except (RemoteProtocolError, IntegrityError) as exc:
                side.error = exc
                progressed = True
                continue
            if isinstance(event, SendBytes):
                data = b""
                for frame in frames(event.data):
                    side.frames_sent.append(frame)
                    wire = (
                        frame if rewrite is None else rewrite(wire_index, side.session.role, frame)
                    )
                    wire_index += 1
                    data += wire
                if not other.finished:
                    other.session.receive_data(data)
                progressed = True
            elif isinstance(event, RecordsWanted):
                blocks = (
                    answer(side, event.cids)
                    if answer
                    else [side.store[c] for c in event.cids if c in side.store]
                )
                side.session.send_records(blocks)
                progressed = True
            elif isinstance(event, RecordsReceived):
                side.received.extend(event.blocks)
                progressed = True
            elif isinstance(event, Done):
                side.summary = event.summary
                progressed = True
            elif isinstance(event, ProtocolFailure):
                side.failure = event
                progressed = True
            else:
                assert isinstance(event, NeedData)
        if ini.finished and res.finished:
            return ini, res
        if not progressed:
            # One side stopped (error); the other waits for bytes that will never come.
            if ini.finished or res.finished:
                return ini, res
            raise AssertionError(f"deadlock: {ini.session.state} / {res.session.state}")
    raise AssertionError("exchange did not end")


def check_converged(ini: Side, res: Side) -> None:
    a, b = set(ini.store), set(res.store)
    assert ini.summary is not None and res.summary is not None, (ini.error, res.error)
    assert set(ini.summary.wanted) == b - a
    assert set(res.summary.wanted) == a - b
    assert {block.cid for block in ini.received} == b - a
    assert {block.cid for block in res.received} == a - b
    assert ini.summary.missing == res.summary.missing == ()
    assert ini.summary.sent == len(a - b) and res.summary.sent == len(b - a)
    for block in ini.received + res.received:
        assert cid_for(block.data, 0x71) == block.cid


# --------------------------------------------------------------------------------------------------
# Convergence and cost.


def test_identical_catalogs_take_one_round_trip() -> None:
    ini, res = exchange(range(500), range(500))
    check_converged(ini, res)
    assert ini.summary is not None and res.summary is not None
    assert ini.summary.identical and res.summary.identical
    assert ini.summary.messages_sent == res.summary.messages_sent == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (range(0, 100), range(100, 200)),  # disjoint
        (range(0, 300), range(150, 450)),  # overlapping
        ((), range(300)),  # initiator empty
        (range(300), ()),  # responder empty
        ((), ()),
        (range(17), range(16)),  # one record apart around the leaf size
        (range(1), range(2)),
        (range(2000), range(1000, 1001)),
    ],
)
def test_catalogs_converge(a: Iterable[int], b: Iterable[int]) -> None:
    check_converged(*exchange(a, b))


def test_many_differences_need_many_messages() -> None:
    # 40 000 differences: Have lists are cut at the digest limit and the fetch runs in batches.
    ini, res = exchange(range(20_000), range(20_000, 40_000))
    assert ini.summary is not None and res.summary is not None
    assert set(ini.summary.wanted) == set(res.store)
    assert set(res.summary.wanted) == set(ini.store)
    # Each side fetches MAX_SESSION_RECORDS now and leaves the rest for the next session.
    for side in (ini, res):
        assert side.summary is not None
        assert len(side.received) == sync.MAX_SESSION_RECORDS
        assert len(side.summary.deferred) == 20_000 - sync.MAX_SESSION_RECORDS
        assert side.summary.messages_received > sync.MAX_SESSION_RECORDS // sync.MAX_WANT


def test_10k_with_50_differences_is_cheap() -> None:
    common = list(range(10_000))
    ini, res = exchange(common + list(range(20_000, 20_025)), common + list(range(30_000, 30_025)))
    check_converged(ini, res)
    assert ini.summary is not None and res.summary is not None
    record_bytes = sum(len(b.data) + 3 for b in ini.received + res.received)
    total = ini.summary.bytes_sent + res.summary.bytes_sent
    whole_catalog = 10_025 * 36  # sending one side's binary CIDs, the naive alternative
    assert total - record_bytes < whole_catalog / 8, total
    # Reconciliation depth: about log16(10k / 16) levels plus the fetch.
    assert ini.summary.messages_sent + res.summary.messages_sent <= 16


# --------------------------------------------------------------------------------------------------
# Fetching.


def test_records_are_verified_and_tampering_is_an_integrity_error() -> None:
    def tamper(index: int, role: str, frame: bytes) -> bytes:
        message = decode_message(body_of(frame))
        if isinstance(message, Records) and message.blocks and role == "responder":
            blocks = list(message.blocks)
            blocks[0] += b"\x00"  # bytes no longer hash to any wanted CID
            return encode_message(Records(tuple(blocks)))
        return frame

    ini, _ = exchange(range(10), range(5, 20), rewrite=tamper)
    assert isinstance(ini.error, IntegrityError)
    assert ini.received == []  # nothing from a message with a bad block is handed up
    with pytest.raises(IntegrityError):
        ini.session.next_event()  # the session stays dead


def test_missing_records_are_reported_not_retried_forever() -> None:
    lost = {record(n).cid for n in range(0, 40, 3)}

    def answer(side: Side, cids: tuple[CID, ...]) -> list[Block]:
        return [side.store[c] for c in cids if c not in lost]  # listed, but gone from the store

    ini, _ = exchange((), range(40), answer=answer)
    assert ini.summary is not None
    assert set(ini.summary.missing) == lost
    assert {b.cid for b in ini.received} == set(records(range(40))) - lost


def test_large_records_are_fetched_over_several_messages() -> None:
    big = {b.cid: b for b in (record(n, pad=200_000) for n in range(12))}
    ini, res = exchange({}, big)
    check_converged(ini, res)
    assert ini.summary is not None
    # 200 KB each, 1 MiB per message: at most five per Records.
    assert ini.summary.messages_received >= 12 // 5 + 2


def test_max_records_defers_the_rest() -> None:
    ini, _ = exchange((), range(30), max_records=7)
    assert ini.summary is not None
    assert len(ini.received) == 7
    assert len(ini.summary.deferred) == 23
    assert set(ini.summary.deferred) | {b.cid for b in ini.received} == set(records(range(30)))


def test_peer_may_only_want_catalog_records() -> None:
    stranger = record(10_000)

    def ask_for_more(index: int, role: str, frame: bytes) -> bytes:
        message = decode_message(body_of(frame))
        if isinstance(message, Want) and message.digests and role == "initiator":
            ours = [message.digests[i : i + 32] for i in range(0, len(message.digests), 32)]
            digests = sorted([*ours, bytes(stranger.cid.digest)[2:]])
            return encode_message(Want(b"".join(digests)))
        return frame

    _, res = exchange((), range(5), rewrite=ask_for_more)
    assert isinstance(res.error, RemoteProtocolError)
    assert "not offered" in str(res.error)


def test_send_records_misuse_is_a_local_error() -> None:
    session = SyncSession("responder", list(records(range(3))), network="main", now=0)
    with pytest.raises(LocalProtocolError):
        session.send_records([])
    stranger = record(99)
    ini = SyncSession("initiator", [], network="main", now=0)
    session.receive_data(_next_send(ini))
    ini.receive_data(_next_send(session))  # Have(root, 3 digests)
    session.receive_data(_next_send(ini))  # empty Reconcile
    ini.receive_data(_next_send(session))  # Want[] (the responder wants nothing)
    session.receive_data(_next_send(ini))  # Want[3]
    event = session.next_event()
    assert isinstance(event, RecordsWanted) and len(event.cids) == 3
    with pytest.raises(LocalProtocolError):
        session.next_event()  # must answer first
    with pytest.raises(LocalProtocolError):
        session.send_records([stranger])
    wrong = Block(event.cids[0], b"not the bytes")
    with pytest.raises(IntegrityError):
        session.send_records([wrong])
    session.send_records([record(0)])  # still usable after the local mistakes
    assert isinstance(session.next_event(), SendBytes)


def _next_send(session: SyncSession) -> bytes:
    event = session.next_event()
    assert isinstance(event, SendBytes), event
    return event.data


# --------------------------------------------------------------------------------------------------
# Bad peers, timeouts, limits.


def _bad_frames() -> dict[str, bytes]:
    body = dagcbor.encode({"type": "want", "digests": b""})
    unsorted = (
        bytes([0xA2])
        + dagcbor.encode("digests")
        + dagcbor.encode(b"")
        + dagcbor.encode("type")
        + dagcbor.encode("want")
    )
    return {
        "garbage": b"\x05\xff\xff\xff\xff\xff",
        "non-minimal varint": b"\x85\x00" + body,
        "oversize": varint.encode(sync.MAX_MESSAGE_BYTES + 1) + b"\x00" * 16,
        "zero length": b"\x00",
        # {"type": "want", "digests": h''} with the keys out of canonical order
        "non-canonical": varint.encode(len(unsorted)) + unsorted,
        "unknown type": _frame({"type": "abxrt", "reason": "x"}),
        "extra field": _frame({"type": "want", "digests": b"", "more": 1}),
        "text for bytes": _frame({"type": "want", "digests": "AAAA"}),
        "hello mid-session": encode_message(Hello(1, "main", 0, bytes(32))),
        "unordered digests": _frame({"type": "want", "digests": bytes([2]) * 32 + bytes(32)}),
        "ragged digests": _frame({"type": "want", "digests": bytes(33)}),
    }


def _frame(value: Any) -> bytes:
    body = dagcbor.encode(value)
    return varint.encode(len(body)) + body


def test_bad_frames_are_what_they_claim() -> None:
    for name, frame in _bad_frames().items():
        if name in (
            "garbage",
            "non-minimal varint",
            "oversize",
            "zero length",
        ):
            continue
        if name == "hello mid-session":
            continue
        with pytest.raises(RemoteProtocolError):
            decode_message(body_of(frame))


def test_malformed_bytes_at_every_stage_are_remote_errors() -> None:
    good_a, good_b = range(0, 60), range(30, 100)
    normal, _ = exchange(good_a, good_b)
    _, normal_res = exchange(good_a, good_b)
    count = len(normal.frames_sent) + len(normal_res.frames_sent)
    assert count >= 8
    for stage in range(count):
        for name, bad in _bad_frames().items():
            if stage == 0 and name == "hello mid-session":
                continue  # a Hello is what a responder expects first

            def rewrite(
                index: int, role: str, frame: bytes, stage: int = stage, bad: bytes = bad
            ) -> bytes:
                return bad if index == stage else frame

            ini, res = exchange(good_a, good_b, rewrite=rewrite)
            errors = [e for e in (ini.error, res.error) if e is not None]
            assert len(errors) == 1, (stage, name, ini.error, res.error, ini.summary, res.summary)
            assert isinstance(errors[0], RemoteProtocolError), (stage, name, errors[0])


def test_end_of_stream_mid_session_is_an_error() -> None:
    session = SyncSession("responder", [], network="main", now=0)
    session.receive_data(encode_message(Hello(1, "main", 3, bytes(32)))[:5])
    assert isinstance(session.next_event(), NeedData)
    session.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed"):
        session.next_event()


def test_receive_buffer_is_capped() -> None:
    session = SyncSession("responder", [], network="main", now=0)
    chunk = b"\x00" * 65536
    for _ in range(sync.MAX_BUFFER_BYTES // len(chunk) + 1):
        session.receive_data(chunk)
    with pytest.raises(RemoteProtocolError):
        session.next_event()


def test_silent_peer_times_out() -> None:
    session = SyncSession("initiator", list(records(range(3))), network="main", now=100.0)
    assert isinstance(session.next_event(), SendBytes)
    assert isinstance(session.next_event(), NeedData)
    session.tick(100.0 + sync.MESSAGE_TIMEOUT - 1)
    assert isinstance(session.next_event(), NeedData)
    session.tick(100.0 + sync.MESSAGE_TIMEOUT)
    event = session.next_event()
    assert isinstance(event, ProtocolFailure) and "silent" in event.reason
    assert session.state is State.FAILED


def test_slow_trickle_does_not_reset_the_deadline() -> None:
    session = SyncSession("responder", [], network="main", now=0.0)
    hello = encode_message(Hello(1, "main", 0, sync.catalog_fingerprint([])))
    for i, byte in enumerate(hello[:-1]):
        session.tick(i * 10.0)
        session.receive_data(bytes([byte]))
        if i * 10.0 >= sync.MESSAGE_TIMEOUT:
            assert isinstance(session.next_event(), ProtocolFailure)
            return
        assert isinstance(session.next_event(), NeedData)
    raise AssertionError("no timeout")


def test_session_deadline_applies_while_the_application_thinks() -> None:
    _, res = _to_records_wanted()
    res.tick(sync.MESSAGE_TIMEOUT * 3)  # waiting for us, not the peer: no message timeout
    assert res.state is State.AWAIT_APP
    res.tick(sync.SESSION_TIMEOUT)
    assert isinstance(res.next_event(), ProtocolFailure)


def _to_records_wanted() -> tuple[SyncSession, SyncSession]:
    ini = SyncSession("initiator", [], network="main", now=0)
    res = SyncSession("responder", list(records(range(3))), network="main", now=0)
    res.receive_data(_next_send(ini))
    ini.receive_data(_next_send(res))
    res.receive_data(_next_send(ini))
    ini.receive_data(_next_send(res))
    res.receive_data(_next_send(ini))
    assert isinstance(res.next_event(), RecordsWanted)
    return ini, res


def test_wrong_network_is_a_polite_abort() -> None:
    ini, res = exchange(range(3), range(3), network_b="test")
    assert ini.failure is not None and res.failure is not None
    assert "network" in ini.failure.reason and ini.failure.reason.startswith("peer aborted")
    assert ini.error is None and res.error is None


def test_bad_local_input_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        SyncSession("initiator", [cid_for(b"x", 0x55)], network="main", now=0)
    with pytest.raises(ValidationError):
        SyncSession("initiator", [], network="Main Net", now=0)
    with pytest.raises(ValidationError):
        SyncSession("client", [], network="main", now=0)  # type: ignore[arg-type]


def test_data_after_done_is_an_error() -> None:
    res = SyncSession("responder", [], network="main", now=0)
    res.receive_data(encode_message(Hello(1, "main", 0, sync.catalog_fingerprint([]))))
    assert isinstance(res.next_event(), SendBytes)
    assert isinstance(res.next_event(), Done)
    res.receive_data(b"\x01")
    with pytest.raises(RemoteProtocolError):
        res.next_event()


# --------------------------------------------------------------------------------------------------
# Property tests.

catalog = st.sets(st.integers(0, 400), max_size=120)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=catalog, b=catalog)
def test_random_catalogs_converge(a: set[int], b: set[int]) -> None:
    check_converged(*exchange(sorted(a), sorted(b)))


def _responder_after_hello(catalog_size: int) -> SyncSession:
    res = SyncSession("responder", list(records(range(200))), network="main", now=0)
    res.receive_data(encode_message(Hello(1, "main", catalog_size, bytes(32))))
    assert isinstance(res.next_event(), SendBytes)
    return res


def _drain(session: SyncSession) -> None:
    for _ in range(100):
        try:
            event = session.next_event()
        except (RemoteProtocolError, IntegrityError):
            return
        if isinstance(event, RecordsWanted):
            session.send_records([])
        elif isinstance(event, NeedData | Done | ProtocolFailure):
            return


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), after_hello=st.booleans())
def test_random_bytes_only_ever_raise_remote_errors(data: bytes, after_hello: bool) -> None:
    session = (
        _responder_after_hello(50)
        if after_hello
        else SyncSession("responder", [], network="main", now=0)
    )
    session.receive_data(data)
    _drain(session)
    session.receive_data(b"")
    _drain(session)


paths = st.lists(st.integers(0, 17), max_size=3).map(bytes)
digests = st.lists(st.binary(min_size=32, max_size=32), max_size=4).map(
    lambda ds: b"".join(sorted(set(ds)))
)
items = st.one_of(
    st.builds(Fp, paths, st.integers(0, 300), st.sampled_from([b"", bytes(16)])),
    st.builds(Ids, paths, digests),
    st.builds(Have, paths, digests.filter(bool)),
)


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(
        st.one_of(
            st.builds(Reconcile, st.lists(items, max_size=6).map(tuple)),
            st.builds(Want, digests),
            st.builds(Records, st.lists(st.binary(max_size=20), max_size=3).map(tuple)),
        ),
        max_size=4,
    ),
    catalog_size=st.integers(0, 300),
)
def test_structured_nonsense_only_ever_raises_remote_errors(
    messages: list[Any], catalog_size: int
) -> None:
    session = _responder_after_hello(catalog_size)
    for message in messages:
        session.receive_data(encode_message(message))
        _drain(session)


# --------------------------------------------------------------------------------------------------
# Spec tables and vectors.


def _spec_section(title: str) -> str:
    text = SPEC_PATH.read_text(encoding="utf-8")
    return text.split(f"### {title}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


IN_CODE = {
    "max_message_bytes": sync.MAX_MESSAGE_BYTES,
    "max_buffer_bytes": sync.MAX_BUFFER_BYTES,
    "max_items_per_message": sync.MAX_ITEMS_PER_MESSAGE,
    "max_digests_per_message": sync.MAX_DIGESTS_PER_MESSAGE,
    "max_want": sync.MAX_WANT,
    "bucket_fanout": sync.BUCKET_FANOUT,
    "leaf_size": sync.LEAF_SIZE,
    "max_depth": sync.MAX_DEPTH,
    "max_catalog": sync.MAX_CATALOG,
    "max_session_records": sync.MAX_SESSION_RECORDS,
    "max_messages": sync.MAX_MESSAGES,
    "max_reason_chars": sync.MAX_REASON_CHARS,
    "fingerprint_bytes": sync.FINGERPRINT_BYTES,
    "max_record_bytes": MAX_RECORD_BYTES,
    "message_timeout_s": int(sync.MESSAGE_TIMEOUT),
    "session_timeout_s": int(sync.SESSION_TIMEOUT),
}


def test_spec_constants_match_the_code() -> None:
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| ([0-9 ]+) \|", _spec_section("Limits"), flags=re.M)
    assert {name: int(value.replace(" ", "")) for name, value in rows} == IN_CODE


def test_spec_transition_table_matches_the_code() -> None:
    rows = re.findall(
        r"^\| `([A-Z_]+)` \| `([a-z_]+)` \| ([`A-Z_, ]+) \|",
        _spec_section("State machine"),
        flags=re.M,
    )
    in_spec = {
        (state, name): frozenset(re.findall(r"`([A-Z_]+)`", targets))
        for state, name, targets in rows
    }
    in_code = {
        (state.name, name): frozenset(s.name for s in targets)
        for (state, name), (_, targets) in sync.TRANSITIONS.items()
    }
    assert in_spec == in_code


def _dag_json(value: Any) -> Any:
    """DAG-JSON's shape for bytes, so the vector file stays readable JSON."""
    if isinstance(value, bytes):
        return {"/": {"bytes": base64.b64encode(value).decode().rstrip("=")}}
    if isinstance(value, list | tuple):
        return [_dag_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _dag_json(v) for k, v in value.items()}
    return value


VECTOR_A = range(0, 40)
VECTOR_B = range(25, 70)


def example_messages() -> dict[str, sync.Message]:
    a = sorted(cid_to_bytes(c) for c in records(range(3)))
    return {
        "hello": Hello(1, "main", 3, sync.catalog_fingerprint(a)),
        "reconcile": Reconcile(
            (
                Fp(b"\x00", 2, sync.catalog_fingerprint(a[:2])[:16]),
                Fp(b"\x01", 0, b""),
                Ids(b"\x0a\x03", b"".join(k[4:] for k in a[:1])),
                Have(b"", b"".join(k[4:] for k in a)),
            )
        ),
        "reconcile_empty": Reconcile(()),
        "want": Want(b"".join(k[4:] for k in a[:2])),
        "records": Records((record(0).data, record(1).data)),
        "abort": Abort("network 'test' is not 'main'"),
    }


def build_vectors() -> dict[str, Any]:
    ini, res = exchange(VECTOR_A, VECTOR_B)
    transcript = []
    # Strict alternation, so the wire order is the interleaving of the two sides' frames by turn;
    # rebuild it from a run that logs the wire.
    log: list[tuple[str, bytes]] = []

    def spy(index: int, role: str, frame: bytes) -> bytes:
        log.append((role, frame))
        return frame

    exchange(VECTOR_A, VECTOR_B, rewrite=spy)
    for role, frame in log:
        transcript.append(
            {
                "from": role,
                "type": decode_message(body_of(frame)).__struct_config__.tag,
                "frame_hex": frame.hex(),
            }
        )
    assert ini.summary is not None and res.summary is not None
    return {
        "protocol": sync.PROTOCOL_ID,
        "note": "Records are the DAG-CBOR blocks {'n': i}; frames are varint(length) + DAG-CBOR.",
        "messages": {
            name: {
                "dag_json": _dag_json(msgspec.to_builtins(message, builtin_types=(bytes,))),
                "frame_hex": encode_message(message).hex(),
            }
            for name, message in example_messages().items()
        },
        "empty_catalog_fingerprint": sync.catalog_fingerprint([]).hex(),
        "exchange": {
            "initiator_records": [str(c) for c in records(VECTOR_A)],
            "responder_records": [str(c) for c in records(VECTOR_B)],
            "initiator_wanted": [str(c) for c in ini.summary.wanted],
            "responder_wanted": [str(c) for c in res.summary.wanted],
            "transcript": transcript,
        },
    }


def test_vectors_are_current() -> None:
    assert json.loads(VECTOR_PATH.read_text(encoding="utf-8")) == build_vectors()


def test_vector_messages_decode_and_encode() -> None:
    vectors = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))
    examples = example_messages()
    for name, entry in vectors["messages"].items():
        frame = bytes.fromhex(entry["frame_hex"])
        assert decode_message(body_of(frame)) == examples[name]
        assert encode_message(examples[name]) == frame


def test_vector_transcript_replays() -> None:
    vectors = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))["exchange"]
    log: list[tuple[str, str]] = []

    def spy(index: int, role: str, frame: bytes) -> bytes:
        log.append((role, frame.hex()))
        return frame

    ini, _ = exchange(VECTOR_A, VECTOR_B, rewrite=spy)
    assert log == [(step["from"], step["frame_hex"]) for step in vectors["transcript"]]
    assert ini.summary is not None
    assert [str(c) for c in ini.summary.wanted] == vectors["initiator_wanted"]


if __name__ == "__main__":
    VECTOR_PATH.write_text(json.dumps(build_vectors(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {VECTOR_PATH}")
