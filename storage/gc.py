"""Garbage-collection helpers shared by every block store: DAG walks and lease liveness.

The stores own their data and their transactions; this module only holds the parts of pinning and
mark & sweep that do not depend on how blocks are stored, so both implementations behave alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from dre.protocol.cid import CID, multihash_of
from dre.protocol.errors import IntegrityError, ValidationError

if TYPE_CHECKING:  # blockstore imports this module at run time
    from .blockstore import LinksOf, PinKind

__all__ = ["cid_text", "find_missing", "mark_live", "process_alive", "process_start_ticks"]

#: Reads the bytes stored under a multihash, or ``None`` when the block is absent.
GetBlock = Callable[[bytes], bytes | None]


def cid_text(cid: CID) -> str:
    """``cid`` as users see it everywhere: base32 for CIDv1 (CIDs decoded from bytes would print
    as base58btc), base58btc for CIDv0."""
    return str(cid.set(base="base32")) if cid.version == 1 else str(cid)


def _walk(root: CID, get: GetBlock, links_of: LinksOf, seen: set[bytes]) -> CID | None:
    """Depth-first walk from ``root``, adding every reached multihash to ``seen``.

    Returns the first CID (in depth-first, link order) whose block is missing, or ``None`` when the
    whole DAG is present. Subtrees already in ``seen`` are not walked again, which keeps shared
    subtrees (dedup across versions) and big marks linear in the number of distinct blocks.
    """
    stack = [root]
    while stack:
        cid = stack.pop()
        mh = multihash_of(cid)
        if mh in seen:
            continue
        data = get(mh)
        if data is None:
            return cid
        seen.add(mh)
        try:
            links = list(links_of(cid, data))
        except (ValidationError, IntegrityError) as exc:
            raise IntegrityError(
                f"block {cid_text(cid)} cannot be decoded for its links: {exc}"
            ) from None
        for link in links:
            if not isinstance(link, CID):
                raise ValidationError(f"links_of returned {type(link).__name__}, not a CID")
        # Reversed so the stack pops links in their natural order: "first missing" is stable.
        stack.extend(reversed(links))
    return None


def find_missing(root: CID, get: GetBlock, links_of: LinksOf) -> CID | None:
    """The first block missing from the DAG under ``root``, or ``None`` if it is complete."""
    return _walk(root, get, links_of, set())


def mark_live(
    pins: Iterable[tuple[CID, PinKind]], get: GetBlock, links_of: LinksOf
) -> set[bytes]:
    """The multihashes kept alive by ``pins``.

    A direct pin keeps its own block (absent or not); a recursive pin keeps its whole DAG. A block
    missing under a recursive pin raises :class:`IntegrityError`: sweeping with an incomplete mark
    could delete pinned blocks that lie below the hole, so the caller must remove nothing.
    """
    live: set[bytes] = set()
    for cid, kind in pins:
        if kind == "direct":  # PinKind.DIRECT (a str enum)
            live.add(multihash_of(cid))
            continue
        missing = _walk(cid, get, links_of, live)
        if missing is not None:
            raise IntegrityError(
                f"block {cid_text(missing)} is missing under recursive pin {cid_text(cid)}; "
                "garbage collection "
                "removed nothing (fetch the block again or remove the pin)"
            )
    return live


def process_start_ticks(pid: int) -> int:
    """The start time of ``pid`` in clock ticks since boot (Linux), or 0 when unknown.

    Stored with a lease so that a recycled pid is not mistaken for the process that took it.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
    except OSError:
        return 0
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall: starttime
    except (IndexError, ValueError):
        return 0


def process_alive(pid: int, start_ticks: int) -> bool:
    """Whether the process that registered a lease as (``pid``, ``start_ticks``) still runs."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if start_ticks:
        now = process_start_ticks(pid)
        if now and now != start_ticks:
            return False
    # A zombie still answers kill(pid, 0) but will never finish its import.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
        state = stat[stat.rfind(b")") + 2 :].split()[:1]
        if state in ([b"Z"], [b"X"]):
            return False
    except OSError:
        pass
    return True
