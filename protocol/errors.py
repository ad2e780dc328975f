"""The one error tree of DRE Registry.

Every failure a user or a peer can cause is one of these; the CLI prints ``str(error)`` as a single
line and exits non-zero, never a traceback.
"""

from __future__ import annotations


class DreError(Exception):
    """Base of every error this project raises on purpose."""


class ValidationError(DreError):
    """Bad input from a user: a path, an argument, a document, a CID string."""


class IntegrityError(DreError):
    """Data that does not match what it claims to be: a block whose hash differs from its CID,
    a truncated or corrupt CAR, non-canonical DAG-CBOR, a malformed dag-pb node."""


class NotFoundError(DreError):
    """Something that is simply not there: a block, a pin, a path inside a DAG."""


class ProtocolError(DreError):
    """A protocol state machine was driven wrongly."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """A peer did something the protocol does not allow."""


class AuthorizationError(DreError):
    """A signed operation by a key that is not allowed to do it (publish into a scope it does not
    own, take over a name someone else published first, change a scope it is not an owner of)."""
