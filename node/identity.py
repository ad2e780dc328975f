"""The node's identity: the Ed25519 key named ``node`` in the node home's keystore.

One key is both the libp2p identity (its peer ID is the node's address on the network) and a
publisher key, so what a node attests or publishes is signed by the same peer ID that gossiped
it; a reader can tie a signature to a network peer without a second binding. It lives in the
keystore (``<home>/keys/node.key``, 0600) like every other key, so ``dre keys`` shows it and the
keystore's permission checks protect it.
"""

from __future__ import annotations

from pathlib import Path

from dre.protocol.errors import NotFoundError, ValidationError
from dre.protocol.keys import PublisherKey
from dre.storage.keystore import Keystore

__all__ = ["NODE_KEY_NAME", "node_identity"]

NODE_KEY_NAME = "node"


def node_identity(home: Path, *, create: bool = True) -> PublisherKey:
    """The node's key, generated on first use when ``create`` (NotFoundError otherwise)."""
    keystore = Keystore(home)
    try:
        key: PublisherKey = keystore.get(NODE_KEY_NAME)
        return key
    except NotFoundError:
        if not create:
            raise
    try:
        keystore.generate(NODE_KEY_NAME)
    except ValidationError:
        # Another process created it between our two steps: theirs is the identity now.
        if not keystore.exists(NODE_KEY_NAME):
            raise
    key = keystore.get(NODE_KEY_NAME)
    return key
