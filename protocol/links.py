"""The links of a block, by codec: what a DAG walk (pinning, GC, CAR export) follows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from . import dagcbor, dagpb
from .cid import CID, DAG_CBOR, DAG_PB, RAW
from .errors import NotFoundError, ValidationError

__all__ = ["SUPPORTED_CODECS", "dag_complete", "iter_dag", "links_of"]

SUPPORTED_CODECS = frozenset({RAW, DAG_PB, DAG_CBOR})


def _cids_in(value: Any) -> Iterator[CID]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, CID):
            yield item
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))


def links_of(cid: CID, data: bytes) -> list[CID]:
    """The CIDs ``data`` (the block of ``cid``) links to, in order.

    Raises :class:`~dre.protocol.errors.IntegrityError` if the block does not decode under its
    codec, :class:`ValidationError` for a codec we do not walk.
    """
    codec = cid.codec.code
    if codec == RAW:
        return []
    if codec == DAG_PB:
        return [link.hash for link in dagpb.decode(data).links]
    if codec == DAG_CBOR:
        return list(_cids_in(dagcbor.decode(data)))
    raise ValidationError(f"cannot follow links of {cid}: unsupported codec {cid.codec.name}")


def iter_dag(get: Callable[[CID], bytes], root: CID) -> Iterator[tuple[CID, bytes]]:
    """Every block of the DAG under ``root``, depth-first pre-order, each block once.

    This is the order `ipfs dag export` writes a CAR in. ``get`` raises
    :class:`~dre.protocol.errors.NotFoundError` for a block that is not there.
    """
    seen: set[bytes] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        key = bytes(cid)
        if key in seen:
            continue
        seen.add(key)
        data = get(cid)
        yield cid, data
        stack.extend(reversed(links_of(cid, data)))


def dag_complete(get: Callable[[CID], bytes], root: CID) -> bool:
    """Whether every block of the DAG under ``root`` is available through ``get``."""
    try:
        for _ in iter_dag(get, root):
            pass
    except NotFoundError:
        return False
    return True
