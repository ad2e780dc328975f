"""Signed records: vectors, round trips, tampering, limits.

Run as a script to regenerate ``specs/vectors/records.json`` (only when the spec changes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from dre.protocol import dagcbor
from dre.protocol.cid import DAG_CBOR, DAG_PB, RAW, Block, cid_for
from dre.protocol.errors import IntegrityError, ValidationError
from dre.protocol.keys import PublisherKey
from dre.protocol.records import (
    ATTESTATION,
    MANIFEST,
    MAX_DEPENDENCIES,
    MAX_KEYWORDS,
    MAX_OWNERS,
    SCOPE,
    Attestation,
    Manifest,
    ScopeRecord,
    open_record,
    record_from_dict,
    record_to_dict,
    sign_record,
    signing_message,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

VECTOR_PATH = Path(__file__).parents[2] / "specs" / "vectors" / "records.json"

KEY = PublisherKey.from_seed(bytes(range(32)))
OTHER = PublisherKey.from_seed(bytes(range(1, 33)))
PACKAGE = cid_for(b"package", DAG_PB)
DOC = cid_for(b"doc", RAW)
PREVIOUS = cid_for(b"previous", DAG_CBOR)


def manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "@acme/hello",
        "version": "1.2.0",
        "description": "Says hello.",
        "license": "Apache-2.0",
        "keywords": ["greeting", "example"],
        "category": "tools",
        "dependencies": {"left-pad": "^1.3.0", "@acme/util": "~2.0.1"},
        "package": PACKAGE,
        "doc": DOC,
        "generator": "dre-generator/1",
        "publisher": KEY.peer_id,
        "previous": PREVIOUS,
        "time": 1_700_000_000,
        "reproducible": True,
    }
    fields.update(changes)
    return Manifest(**fields)


def scope(**changes: Any) -> ScopeRecord:
    fields: dict[str, Any] = {
        "scope": "@acme",
        "owners": [KEY.peer_id, OTHER.peer_id],
        "version": 3,
        "expires": None,
    }
    fields.update(changes)
    return ScopeRecord(**fields)


def attestation(**changes: Any) -> Attestation:
    fields: dict[str, Any] = {
        "manifest": PREVIOUS,
        "reproduced": True,
        "regenerated": PACKAGE,
        "attester": KEY.peer_id,
        "time": 1_700_000_100,
    }
    fields.update(changes)
    return Attestation(**fields)


def build_vectors() -> dict[str, Any]:
    """The content of specs/vectors/records.json, computed by the code under test."""
    records = []
    for kind, record in [(MANIFEST, manifest()), (SCOPE, scope()), (ATTESTATION, attestation())]:
        block = sign_record(kind, record, KEY)
        payload = record_to_dict(record)
        records.append(
            {
                "type": kind,
                "payload_dag_json": json.loads(msgspec.json.encode(_dag_json(payload))),
                "payload_hex": dagcbor.encode(payload).hex(),
                "signing_message_hex": signing_message(kind, payload).hex(),
                "envelope_hex": block.data.hex(),
                "cid": str(block.cid),
            }
        )
    return {
        "key": {
            "seed": KEY.seed.hex(),
            "public_key": KEY.public_key.hex(),
            "peer_id": KEY.peer_id,
        },
        "records": records,
    }


def _dag_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _dag_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dag_json(v) for v in value]
    if value is not None and not isinstance(value, (str, int, bool)):
        return {"/": str(value)}  # a CID, as DAG-JSON writes links
    return value


VECTORS = json.loads(VECTOR_PATH.read_text("utf-8")) if VECTOR_PATH.exists() else {}
KINDS = {MANIFEST: manifest, SCOPE: scope, ATTESTATION: attestation}


def test_vectors_match_code() -> None:
    assert build_vectors() == VECTORS


@pytest.mark.parametrize("index", range(3))
def test_vector_envelopes_open(index: int) -> None:
    vector = VECTORS["records"][index]
    data = bytes.fromhex(vector["envelope_hex"])
    block = Block(cid_for(data, DAG_CBOR), data)
    assert str(block.cid) == vector["cid"]
    kind, record, signer = open_record(block)
    assert kind == vector["type"]
    assert record == KINDS[kind]()
    assert signer == VECTORS["key"]["peer_id"]
    envelope = dagcbor.decode(data)
    assert envelope["payload"] == dagcbor.decode(bytes.fromhex(vector["payload_hex"]))


@pytest.mark.parametrize("kind", [MANIFEST, SCOPE, ATTESTATION])
def test_round_trip(kind: str) -> None:
    record = KINDS[kind]()
    block = sign_record(kind, record, KEY)
    opened = open_record(block)
    assert opened == (kind, record, KEY.peer_id)
    assert record_from_dict(kind, record_to_dict(record)) == record
    # Deterministic: Ed25519 signatures are deterministic, so the CID is a function of the record.
    assert sign_record(kind, record, KEY) == block


def test_first_version_and_unscoped() -> None:
    record = manifest(name="plain", previous=None, dependencies={}, keywords=[], description="")
    assert open_record(sign_record(MANIFEST, record, KEY)).record == record


def test_scope_signed_by_any_key() -> None:
    # Whether OTHER may write this scope is policy; the envelope only proves who signed it.
    assert open_record(sign_record(SCOPE, scope(), OTHER)).signer == OTHER.peer_id


@pytest.mark.parametrize("kind", [MANIFEST, SCOPE, ATTESTATION])
def test_every_byte_tampered(kind: str) -> None:
    block = sign_record(kind, KINDS[kind](), KEY)
    for i in range(len(block.data)):
        data = bytearray(block.data)
        data[i] ^= 0x01
        with pytest.raises(IntegrityError):  # same CID: the hash check catches it
            open_record(Block(block.cid, bytes(data)))
        with pytest.raises(IntegrityError):  # re-addressed: decoding or the signature does
            open_record(Block(cid_for(bytes(data), DAG_CBOR), bytes(data)))


def _reseal(envelope: dict[str, Any]) -> Block:
    return dagcbor.encode_block(envelope)


def _envelope(kind: str = MANIFEST, key: PublisherKey = KEY) -> dict[str, Any]:
    envelope = dagcbor.decode(sign_record(kind, KINDS[kind](), key).data)
    assert isinstance(envelope, dict)
    return envelope


def test_wrong_signer_field() -> None:
    envelope = _envelope()
    envelope["signer"] = OTHER.peer_id
    with pytest.raises(IntegrityError, match="manifest signature does not verify"):
        open_record(_reseal(envelope))


def test_signed_by_someone_else_than_publisher() -> None:
    # OTHER signs a manifest naming KEY as publisher: the signature is valid, the claim is not.
    payload = record_to_dict(manifest())
    envelope = {
        "type": MANIFEST,
        "payload": payload,
        "signer": OTHER.peer_id,
        "signature": OTHER.sign(signing_message(MANIFEST, payload)),
    }
    with pytest.raises(IntegrityError, match="not its publisher"):
        open_record(_reseal(envelope))


def test_sign_refuses_other_publisher() -> None:
    with pytest.raises(ValidationError, match="not the signing key"):
        sign_record(MANIFEST, manifest(), OTHER)
    with pytest.raises(ValidationError, match="not the signing key"):
        sign_record(ATTESTATION, attestation(), OTHER)


def test_type_swap_breaks_signature() -> None:
    # Domain separation: the same payload under another type does not verify.
    envelope = _envelope(SCOPE)
    envelope["type"] = MANIFEST
    with pytest.raises(IntegrityError):
        open_record(_reseal(envelope))


@pytest.mark.parametrize("kind", ["dre/manifest/2", "dre/other/1", "", 1, None])
def test_unknown_type(kind: object) -> None:
    envelope = _envelope()
    envelope["type"] = kind
    with pytest.raises(IntegrityError, match="unknown record type"):
        open_record(_reseal(envelope))
    with pytest.raises(ValidationError, match="unknown record type"):
        sign_record(kind, manifest(), KEY)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"signer": "nope"},
        {"signer": 5},
        {"signature": b"\x00" * 63},
        {"signature": "sig"},
        {"payload": []},
    ],
)
def test_bad_envelope_fields(change: dict[str, Any]) -> None:
    envelope = _envelope()
    envelope.update(change)
    with pytest.raises(IntegrityError):
        open_record(_reseal(envelope))


def test_missing_envelope_field_and_non_map() -> None:
    envelope = _envelope()
    del envelope["signature"]
    with pytest.raises(IntegrityError, match="not an envelope"):
        open_record(_reseal(envelope))
    with pytest.raises(IntegrityError, match="not an envelope"):
        open_record(dagcbor.encode_block([1, 2]))


def test_signed_but_malformed_payload() -> None:
    # A real key signs a payload that breaks the schema: still IntegrityError on open.
    payload = record_to_dict(manifest())
    payload["time"] = -1
    envelope = {
        "type": MANIFEST,
        "payload": payload,
        "signer": KEY.peer_id,
        "signature": KEY.sign(signing_message(MANIFEST, payload)),
    }
    with pytest.raises(IntegrityError, match=r"invalid manifest.*time"):
        open_record(_reseal(envelope))


def test_wrong_codec_block() -> None:
    data = sign_record(MANIFEST, manifest(), KEY).data
    with pytest.raises(IntegrityError):
        open_record(Block(cid_for(data, RAW), data))


def test_oversized_block() -> None:
    data = dagcbor.encode({"x": b"\x00" * 300_000})
    with pytest.raises(IntegrityError, match="exceeds"):
        open_record(Block(cid_for(data, DAG_CBOR), data))


LONG = "a" * 10_000


@pytest.mark.parametrize(
    ("factory", "kind", "change", "field"),
    [
        (manifest, MANIFEST, {"name": "a" * 215}, "name"),
        (manifest, MANIFEST, {"name": "Bad Name"}, "name"),
        (manifest, MANIFEST, {"version": LONG}, "version"),
        (manifest, MANIFEST, {"description": LONG}, "description"),
        (manifest, MANIFEST, {"license": LONG}, "license"),
        (manifest, MANIFEST, {"keywords": ["k"] * (MAX_KEYWORDS + 1)}, "keywords"),
        (manifest, MANIFEST, {"keywords": [LONG]}, "keywords"),
        (manifest, MANIFEST, {"category": LONG}, "category"),
        (
            manifest,
            MANIFEST,
            {"dependencies": {f"p{i}": "1" for i in range(MAX_DEPENDENCIES + 1)}},
            "dependencies",
        ),
        (manifest, MANIFEST, {"dependencies": {"x": LONG}}, "dependencies"),
        (manifest, MANIFEST, {"generator": LONG}, "generator"),
        (manifest, MANIFEST, {"time": -1}, "time"),
        (manifest, MANIFEST, {"time": 2**53}, "time"),
        (manifest, MANIFEST, {"reproducible": 1}, "reproducible"),
        (manifest, MANIFEST, {"previous": PACKAGE}, "previous"),
        (manifest, MANIFEST, {"package": PREVIOUS}, "package"),
        (scope, SCOPE, {"scope": "acme"}, "scope"),
        (scope, SCOPE, {"scope": "@" + "a" * 64}, "scope"),
        (scope, SCOPE, {"owners": []}, "owners"),
        (scope, SCOPE, {"owners": [KEY.peer_id] * 2}, "owners"),
        (
            scope,
            SCOPE,
            {"owners": [PublisherKey.generate().peer_id for _ in range(MAX_OWNERS + 1)]},
            "owners",
        ),
        (scope, SCOPE, {"owners": ["12D3KooW" + "1" * 44]}, "owners"),
        (scope, SCOPE, {"version": 0}, "version"),
        (attestation, ATTESTATION, {"attester": "me"}, "attester"),
        (attestation, ATTESTATION, {"regenerated": PREVIOUS}, "regenerated"),
    ],
)
def test_limits_are_validation_errors(
    factory: Any, kind: str, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError, match=field):
        # Python construction may or may not run the checks (post-init does, Meta does not);
        # sign_record must refuse either way.
        sign_record(kind, factory(**change), KEY)


def test_largest_valid_manifest_fits() -> None:
    # Limits count characters: a manifest at every limit in 4-byte UTF-8 must still be signable.
    wide = "\U0001f600"
    record = manifest(
        name="a" * 214,
        version=wide * 128,
        description=wide * 512,
        license=wide * 256,
        keywords=[wide * 49 + str(i % 10) for i in range(MAX_KEYWORDS)],
        category=wide * 64,
        dependencies={"p" * 210 + f"{i:04d}": wide * 256 for i in range(MAX_DEPENDENCIES)},
        generator=wide * 64,
    )
    assert open_record(sign_record(MANIFEST, record, KEY)).record == record


def test_record_from_dict_strict() -> None:
    good = record_to_dict(manifest())
    with pytest.raises(ValidationError, match="unknown field"):
        record_from_dict(MANIFEST, {**good, "extra": 1})
    missing = dict(good)
    del missing["previous"]
    with pytest.raises(ValidationError, match="previous"):
        record_from_dict(MANIFEST, missing)
    with pytest.raises(ValidationError, match="package"):
        record_from_dict(MANIFEST, {**good, "package": str(PACKAGE)})
    with pytest.raises(ValidationError, match="a ScopeRecord"):
        sign_record(SCOPE, manifest(), KEY)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_only_integrity_error(data: bytes) -> None:
    for block in (Block(cid_for(data, DAG_CBOR), data), Block(PREVIOUS, data)):
        with pytest.raises(IntegrityError):
            open_record(block)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_mutation_of_valid_envelope(data: st.DataObject) -> None:
    original = sign_record(MANIFEST, manifest(), KEY).data
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    raw = bytes(mutated[:cut]) + data.draw(st.binary(max_size=8))
    block = Block(cid_for(raw, DAG_CBOR), raw)
    if raw == original:
        assert open_record(block).record == manifest()
    else:
        with pytest.raises(IntegrityError):
            open_record(block)


if __name__ == "__main__":
    VECTOR_PATH.write_text(json.dumps(build_vectors(), indent=2) + "\n", "utf-8")
    print(f"wrote {VECTOR_PATH}")
