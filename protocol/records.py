"""Signed records: manifests, scope records and attestations (normative spec: specs/records.md).

Every record is a frozen msgspec Struct. On the wire it is a DAG-CBOR map whose keys are exactly
the Struct's field names (listed in ``specs/records.md``), wrapped in a signed envelope block:

    {"type": "dre/manifest/1", "payload": {...}, "signer": "12D3KooW…", "signature": <64 bytes>}

The envelope block's CID is the identity of what it records (a manifest's CID *is* the version).
The signature is Ed25519 over a domain-separated message, so a signature made for one record type
(or for anything else the key signs, such as libp2p handshakes) never verifies as another:

    b"dre-record-v1\\x00" + type (UTF-8) + b"\\x00" + dagcbor.encode(payload)

Two error kinds, by who is at fault: building or signing a bad record is the caller's bad input
(:class:`ValidationError`); anything wrong with a block we are handed -- bad hash, non-canonical
bytes, unknown type, bad signature, a payload outside the limits -- is :class:`IntegrityError`.

Pure code: no clock (times are passed in), no files, no network.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, NamedTuple

import msgspec
from multiformats import CID

from . import dagcbor
from .cid import DAG_CBOR, DAG_PB, RAW, Block
from .errors import IntegrityError, ValidationError
from .keys import (
    PEER_ID_LENGTH,
    SIGNATURE_SIZE,
    PublisherKey,
    public_key_from_peer_id,
    verify_signature,
)

__all__ = [
    "ATTESTATION",
    "KINDS",
    "MANIFEST",
    "MAX_RECORD_BYTES",
    "SCOPE",
    "SIGNING_DOMAIN",
    "Attestation",
    "Manifest",
    "OpenedRecord",
    "Record",
    "ScopeRecord",
    "open_record",
    "record_from_dict",
    "record_to_dict",
    "sign_record",
    "signing_message",
]

MANIFEST: Final = "dre/manifest/1"
SCOPE: Final = "dre/scope/1"
ATTESTATION: Final = "dre/attestation/1"
#: Prefix of every signed message; the version number changes if the message layout ever does.
SIGNING_DOMAIN: Final = b"dre-record-v1\x00"
#: Largest envelope block accepted. The largest manifest the limits below allow is 257 383 bytes
#: (every free-text character 4 bytes of UTF-8; ~98 KB in ASCII), so any valid record fits.
MAX_RECORD_BYTES: Final = 262_144

# Limits. Where a field comes from a package document, the limit is the document format's (see
# protocol/docformat.py), so anything the generator accepts can be recorded.
MAX_NAME_CHARS: Final = 214
MAX_VERSION_CHARS: Final = 128
MAX_DESCRIPTION_CHARS: Final = 512
MAX_LICENSE_CHARS: Final = 256
MAX_KEYWORDS: Final = 20
MAX_KEYWORD_CHARS: Final = 50
MAX_CATEGORY_CHARS: Final = 64
MAX_DEPENDENCIES: Final = 200
MAX_RANGE_CHARS: Final = 256
MAX_GENERATOR_CHARS: Final = 64
MAX_SCOPE_CHARS: Final = 64
MAX_OWNERS: Final = 64
#: Times are unix seconds; 2**53-1 keeps them exact in JSON and JavaScript.
MAX_TIME: Final = 2**53 - 1
MAX_SCOPE_VERSION: Final = 2**53 - 1

# Same name grammar as the document format: lowercase segments, optional "@scope/".
_SEGMENT = r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?"
_NAME_PATTERN = rf"^(?:@{_SEGMENT}/)?{_SEGMENT}$"
_SCOPE_PATTERN = rf"^@{_SEGMENT}$"

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS, pattern=_NAME_PATTERN)]
PeerId = Annotated[str, msgspec.Meta(min_length=PEER_ID_LENGTH, max_length=PEER_ID_LENGTH)]
Time = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME)]


def _check_peer_id(field: str, value: str) -> None:
    try:
        public_key_from_peer_id(value)
    except ValidationError as exc:
        raise ValidationError(f"{field}: {exc}") from None


def _check_cid(field: str, cid: CID, codecs: tuple[int, ...]) -> None:
    if cid.version != 1 or cid.codec.code not in codecs:
        names = " or ".join(f"0x{c:x}" for c in codecs)
        raise ValidationError(f"{field}: expected a CIDv1 with codec {names}, got {cid}")


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One version of a package: what it is, where its bytes are, who published it, when."""

    name: Name
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_VERSION_CHARS)]
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION_CHARS)]
    license: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LICENSE_CHARS)]
    keywords: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEYWORD_CHARS)]],
        msgspec.Meta(max_length=MAX_KEYWORDS),
    ]
    category: Annotated[str, msgspec.Meta(max_length=MAX_CATEGORY_CHARS)]
    dependencies: Annotated[
        dict[Name, Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_RANGE_CHARS)]],
        msgspec.Meta(max_length=MAX_DEPENDENCIES),
    ]
    #: Root of the generated UnixFS tree (dag-pb, or raw for a single small file).
    package: CID
    #: The source document (UnixFS).
    doc: CID
    generator: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_GENERATOR_CHARS)]
    publisher: PeerId
    #: The previous version's manifest envelope (dag-cbor); None for the first version.
    previous: CID | None
    time: Time
    #: False when published with --allow-divergent: the package is not what the doc generates.
    reproducible: bool

    def _check(self) -> None:
        _check_peer_id("publisher", self.publisher)
        _check_cid("package", self.package, (DAG_PB, RAW))
        _check_cid("doc", self.doc, (DAG_PB, RAW))
        if self.previous is not None:
            _check_cid("previous", self.previous, (DAG_CBOR,))


class ScopeRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who may publish under ``@scope``. A higher ``version`` replaces a lower one, never back.

    Whether the signer was allowed to write this version (an owner of the version it replaces)
    is the scope policy's decision, not this module's: here the signature is only checked.
    """

    scope: Annotated[
        str, msgspec.Meta(min_length=2, max_length=MAX_SCOPE_CHARS, pattern=_SCOPE_PATTERN)
    ]
    owners: Annotated[list[PeerId], msgspec.Meta(min_length=1, max_length=MAX_OWNERS)]
    version: Annotated[int, msgspec.Meta(ge=1, le=MAX_SCOPE_VERSION)]
    expires: Time | None

    def _check(self) -> None:
        for i, owner in enumerate(self.owners):
            _check_peer_id(f"owners[{i}]", owner)
        if len(set(self.owners)) != len(self.owners):
            # Duplicates would give one owner set two encodings (two CIDs).
            raise ValidationError("owners: duplicate peer ID")


class Attestation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An attester's claim: regenerating ``manifest``'s doc gave ``regenerated``."""

    manifest: CID
    reproduced: bool
    regenerated: CID
    attester: PeerId
    time: Time

    def _check(self) -> None:
        _check_cid("manifest", self.manifest, (DAG_CBOR,))
        _check_cid("regenerated", self.regenerated, (DAG_PB, RAW))
        _check_peer_id("attester", self.attester)


Record = Manifest | ScopeRecord | Attestation

_TYPES: Final[dict[str, type[Manifest] | type[ScopeRecord] | type[Attestation]]] = {
    MANIFEST: Manifest,
    SCOPE: ScopeRecord,
    ATTESTATION: Attestation,
}
KINDS: Final = tuple(_TYPES)
# The payload field the signer must equal, where the record names its own author.
_SIGNER_FIELD: Final = {MANIFEST: "publisher", ATTESTATION: "attester"}
_LABEL: Final = {MANIFEST: "manifest", SCOPE: "scope record", ATTESTATION: "attestation"}
_ENVELOPE_KEYS: Final = frozenset({"type", "payload", "signer", "signature"})


class OpenedRecord(NamedTuple):
    """A verified record: its type, the record, and the peer ID that signed it."""

    kind: str
    record: Record
    signer: str


def record_to_dict(record: Record) -> dict[str, Any]:
    """The DAG-CBOR-able map of ``record``: every field, keyed by its field name."""
    return {field: _copy(getattr(record, field)) for field in record.__struct_fields__}


def _copy(value: Any) -> Any:
    # Lists and dicts are copied so callers cannot mutate a frozen record through the map.
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def record_from_dict(kind: str, value: Any) -> Record:
    """Validate a plain map as a record of ``kind``; :class:`ValidationError` says what is wrong.

    Strict: every field is required, unknown fields are refused, no type coercion (``1`` is not
    ``true``), and every limit in ``specs/records.md`` applies.
    """
    record_type = _TYPES.get(kind)
    if record_type is None:
        raise ValidationError(f"unknown record type {kind!r}")
    try:
        record = msgspec.convert(value, record_type, strict=True)
        # Checks msgspec cannot express (peer ID contents, CID codecs). Not __post_init__: a
        # record built in Python should not raise until it is signed or read.
        record._check()
    except (msgspec.ValidationError, ValidationError) as exc:
        raise ValidationError(f"invalid {_LABEL[kind]}: {exc}") from None
    return record


def signing_message(kind: str, payload: dict[str, Any]) -> bytes:
    """The exact bytes an envelope's signature covers."""
    return SIGNING_DOMAIN + kind.encode("utf-8") + b"\x00" + dagcbor.encode(payload)


def sign_record(kind: str, record: Record, key: PublisherKey) -> Block:
    """Sign ``record`` with ``key``; the envelope block (its CID is the record's identity).

    Raises :class:`ValidationError` if the record is not of ``kind``, breaks a limit (Structs
    built in Python skip msgspec's constraints, so the record is re-validated here), or names
    another key as its publisher/attester.
    """
    record_type = _TYPES.get(kind)
    if record_type is None:
        raise ValidationError(f"unknown record type {kind!r}")
    if not isinstance(record, record_type):
        raise ValidationError(f"a {kind} record must be a {record_type.__name__}")
    payload = record_to_dict(record_from_dict(kind, record_to_dict(record)))
    signer = key.peer_id
    field = _SIGNER_FIELD.get(kind)
    if field is not None and payload[field] != signer:
        raise ValidationError(
            f"{_LABEL[kind]} {field} {payload[field]} is not the signing key {signer}"
        )
    envelope = {
        "type": kind,
        "payload": payload,
        "signer": signer,
        "signature": key.sign(signing_message(kind, payload)),
    }
    block = dagcbor.encode_block(envelope)
    if len(block.data) > MAX_RECORD_BYTES:  # unreachable within the limits; kept as a guard
        raise ValidationError(f"signed record of {len(block.data)} bytes is too large")
    return block


def open_record(block: Block) -> OpenedRecord:
    """Verify an envelope block completely and return what it records.

    Checks, in order: size, the CID's hash and codec, strict DAG-CBOR, the envelope's shape, the
    type, the signer's peer ID, the signature, the payload's schema and limits, and that the
    signer is the record's publisher/attester. Every failure is :class:`IntegrityError`.
    """
    if len(block.data) > MAX_RECORD_BYTES:
        raise IntegrityError(
            f"record block {block.cid} of {len(block.data)} bytes exceeds {MAX_RECORD_BYTES}"
        )
    # Strict decoding means the payload has exactly one encoding, so re-encoding it below for
    # the signature check gives the received bytes, not merely an equivalent value.
    envelope = dagcbor.decode_block(block)
    if not isinstance(envelope, dict) or set(envelope) != _ENVELOPE_KEYS:
        raise IntegrityError(
            f"record block {block.cid} is not an envelope (type, payload, signer, signature)"
        )
    kind = envelope["type"]
    if not isinstance(kind, str) or kind not in _TYPES:
        raise IntegrityError(f"record block {block.cid}: unknown record type {str(kind)[:80]!r}")
    label = _LABEL[kind]
    payload, signer, signature = envelope["payload"], envelope["signer"], envelope["signature"]
    if not isinstance(signer, str):
        raise IntegrityError(f"{label} {block.cid}: signer is not a peer ID")
    try:
        public_key = public_key_from_peer_id(signer)
    except ValidationError as exc:
        raise IntegrityError(f"{label} {block.cid}: bad signer: {exc}") from None
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise IntegrityError(f"{label} {block.cid}: signature is not {SIGNATURE_SIZE} bytes")
    if not isinstance(payload, dict):
        raise IntegrityError(f"{label} {block.cid}: payload is not a map")
    if not verify_signature(public_key, signing_message(kind, payload), signature):
        raise IntegrityError(f"{label} signature does not verify ({block.cid}, signer {signer})")
    try:
        record = record_from_dict(kind, payload)
    except ValidationError as exc:
        # Signed by a real key but malformed: still bad data from whoever sent it.
        raise IntegrityError(f"{block.cid}: {exc}") from None
    field = _SIGNER_FIELD.get(kind)
    if field is not None and getattr(record, field) != signer:
        raise IntegrityError(
            f"{label} {block.cid} is signed by {signer}, not its {field} {getattr(record, field)}"
        )
    return OpenedRecord(kind, record, signer)
