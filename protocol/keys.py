"""Ed25519 publisher keys and their libp2p peer IDs (``12D3KooW…``).

A publisher is named by the libp2p peer ID of its Ed25519 public key, so the key of a node's
libp2p identity can publish and the same string identifies it on the wire and in a manifest
(https://github.com/libp2p/specs/blob/master/peer-ids/peer-ids.md):

    peer ID = base58btc( identity-multihash( protobuf PublicKey{Type=Ed25519(1), Data=pub32} ) )
            = base58btc( 00 24 | 08 01 12 20 | pub32 )

The protobuf is 36 bytes (<= 42), so libp2p uses the identity multihash and the public key can
be recovered from the peer ID itself: a signed record needs nothing but its signer field to
verify. Only Ed25519 and only the legacy base58btc text form are accepted (no RSA/secp256k1, no
CIDv1 ``libp2p-key`` form): one printed form per key, as with CIDs.

Pure code: no files. Storing seeds (files 0600) is the keystore's job.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.signing
from multiformats import multibase

from .errors import ValidationError

__all__ = [
    "PEER_ID_LENGTH",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "PublisherKey",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
    "verify_signature",
]

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
#: Length of an Ed25519 peer ID in base58btc (38 bytes -> always 52 characters, "12D3KooW…").
PEER_ID_LENGTH = 52

# protobuf PublicKey: field 1 varint (0x08) = 1 (Ed25519), field 2 bytes (0x12) of length 32.
_PROTOBUF_PREFIX = bytes([0x08, 0x01, 0x12, PUBLIC_KEY_SIZE])
# identity multihash: code 0x00, digest length 36 (the protobuf above).
_MULTIHASH_PREFIX = bytes([0x00, len(_PROTOBUF_PREFIX) + PUBLIC_KEY_SIZE]) + _PROTOBUF_PREFIX
_BASE58BTC = multibase.get("base58btc")


class PublisherKey:
    """An Ed25519 signing key (a thin wrapper over :class:`nacl.signing.SigningKey`).

    The 32-byte seed is the whole secret; :attr:`seed` is what a keystore writes to disk.
    """

    __slots__ = ("_signing",)

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing = signing_key

    @classmethod
    def generate(cls) -> PublisherKey:
        """A fresh random key (libsodium's CSPRNG)."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> PublisherKey:
        """The key whose 32-byte seed is ``seed``; raises :class:`ValidationError` otherwise."""
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise ValidationError(f"an Ed25519 seed must be exactly {SEED_SIZE} bytes")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed."""
        return bytes(self._signing)

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return bytes(self._signing.verify_key)

    @property
    def peer_id(self) -> str:
        """The libp2p peer ID of :attr:`public_key`."""
        return peer_id_from_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``message``."""
        return bytes(self._signing.sign(message).signature)

    def __repr__(self) -> str:
        # Never show the seed: reprs end up in logs and tracebacks.
        return f"PublisherKey({self.peer_id})"


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer ID (``12D3KooW…``) of a 32-byte Ed25519 public key."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
        raise ValidationError(f"an Ed25519 public key must be exactly {PUBLIC_KEY_SIZE} bytes")
    return _BASE58BTC.raw_encoder(_MULTIHASH_PREFIX + public_key)


def public_key_from_peer_id(text: str) -> bytes:
    """The Ed25519 public key inside a peer ID; :class:`ValidationError` if it is not one.

    Strict: exactly the 52-character base58btc form of an identity multihash of an Ed25519
    protobuf public key, in its one canonical encoding (checked by re-encoding).
    """
    if not isinstance(text, str):
        raise ValidationError(f"a peer ID must be a string, not {type(text).__name__}")
    if len(text) != PEER_ID_LENGTH:
        raise ValidationError(f"invalid peer ID {text[:80]!r}: not an Ed25519 peer ID (12D3KooW…)")
    try:
        raw = bytes(_BASE58BTC.raw_decoder(text))
    except Exception:  # multiformats raises several exception types for bad alphabets
        raise ValidationError(f"invalid peer ID {text!r}: not base58btc") from None
    if len(raw) != len(_MULTIHASH_PREFIX) + PUBLIC_KEY_SIZE or not raw.startswith(
        _MULTIHASH_PREFIX
    ):
        raise ValidationError(f"invalid peer ID {text!r}: not an Ed25519 identity multihash")
    public_key = raw[len(_MULTIHASH_PREFIX) :]
    if peer_id_from_public_key(public_key) != text:
        # base58 itself is canonical for a fixed length, but be sure: one key, one string.
        raise ValidationError(f"invalid peer ID {text!r}: not in canonical form")
    return public_key


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    Returns a bool rather than raising so callers choose the error (and its message) to raise.
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True
