"""Pure protocol code of DRE Registry: CIDs and codecs, UnixFS, CAR, schemas.

No I/O lives here: no files, sockets, trio, libp2p or LMDB. Everything is testable by feeding bytes.
"""

from .cid import CID, DAG_CBOR, DAG_PB, RAW, SHA2_256, Block, cid_for, parse_cid, verify_block
from .errors import (
    AuthorizationError,
    DreError,
    IntegrityError,
    LocalProtocolError,
    NotFoundError,
    ProtocolError,
    RemoteProtocolError,
    ValidationError,
)

__all__ = [
    "CID",
    "DAG_CBOR",
    "DAG_PB",
    "RAW",
    "SHA2_256",
    "AuthorizationError",
    "Block",
    "DreError",
    "IntegrityError",
    "LocalProtocolError",
    "NotFoundError",
    "ProtocolError",
    "RemoteProtocolError",
    "ValidationError",
    "cid_for",
    "parse_cid",
    "verify_block",
]
