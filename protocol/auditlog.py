"""Entries of a node's append-only, hash-linked audit log (publishes, scope changes).

Each entry is a DAG-CBOR block that names the signed record it logs and links to the entry
before it, so the log is a hash chain: rewriting any past entry changes every CID after it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from . import dagcbor
from .cid import CID, DAG_CBOR, Block
from .errors import IntegrityError

__all__ = ["LogEntry", "decode_entry", "encode_entry"]

LogKind = Literal["publish", "scope"]


class LogEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One audit log entry."""

    seq: Annotated[int, msgspec.Meta(ge=0)]
    kind: LogKind
    #: What the entry is about: ``name@version`` for a publish, the scope for a scope change.
    subject: Annotated[str, msgspec.Meta(max_length=512)]
    #: The signed record (manifest or scope record envelope) this entry logs.
    record: CID
    signer: Annotated[str, msgspec.Meta(max_length=128)]
    #: Free-form one-line summary, e.g. "grant 12D3KooW…".
    action: Annotated[str, msgspec.Meta(max_length=512)]
    time: Annotated[int, msgspec.Meta(ge=0)]
    previous: CID | None


def encode_entry(entry: LogEntry) -> Block:
    """The DAG-CBOR block of ``entry``."""
    return dagcbor.encode_block({f: getattr(entry, f) for f in entry.__struct_fields__})


def decode_entry(block: Block) -> LogEntry:
    """Verify and decode a log entry block; IntegrityError if it is not one."""
    if block.cid.codec.code != DAG_CBOR:
        raise IntegrityError(f"log entry {block.cid} is not DAG-CBOR")
    value = dagcbor.decode_block(block)
    try:
        return msgspec.convert(value, LogEntry, dec_hook=_keep_cids)
    except msgspec.ValidationError as exc:
        raise IntegrityError(f"log entry {block.cid}: {exc}") from None


def _keep_cids(kind: type, value: object) -> object:
    if kind is CID and isinstance(value, CID):
        return value
    raise NotImplementedError
