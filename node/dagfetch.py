"""DAG-at-once: fetch a whole DAG from one peer in one stream (`/dre/dag/1.0.0`).

Bitswap asks for blocks one round trip per DAG level and pays per-block bookkeeping on both
sides; between two DRE nodes that is most of the cost of moving a large package. Here the
requester names a root and the holder streams the DAG back as a CARv1 body (the same framing as
`dre dag export`), depth-first, every block once. The requester verifies each block against its
CID as it arrives and accepts only blocks it expects — the root, then the links of blocks
already received — so a peer can neither slip in other blocks nor send wrong bytes unnoticed.
Blocks already in the requester's store are still sent (the holder cannot know them); the
requester skips storing them. Bitswap stays for everything else (Kubo, Helia, partial DAGs).

Wire (specs/network.md §3): request = the root CID in binary, then half-close; response = a CARv1
(header with that single root, then sections) and end of stream. A holder that lacks a block of
the DAG ends the stream early; the requester then reports the DAG incomplete (and falls back to
Bitswap).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from dre.protocol import varint
from dre.protocol.car import CarDecoder, CarHeader, EndOfCar, NeedData, encode_header
from dre.protocol.cid import CID, RAW, Block, cid_from_bytes, cid_to_bytes
from dre.protocol.errors import IntegrityError, NotFoundError, RemoteProtocolError
from dre.protocol.links import links_of
from dre.storage.blockstore import BlockStore

from . import compat
from .host import HostHandle

__all__ = ["DAG_PROTOCOL", "DagFetcher"]

DAG_PROTOCOL: Final = "/dre/dag/1.0.0"
#: A request is one binary CID.
_MAX_REQUEST: Final = 128
#: Bytes of blocks buffered before one store transaction. 4 MiB measured best (83-92 % of a raw
#: stream over 6 runs of simulations/sim_network.py, against 74-85 % at 8 MiB and 64 % when the
#: whole 64 MiB went in one transaction); why smaller is faster was not profiled.
_BATCH_BYTES: Final = 4 << 20
#: Largest read from the stream at once.
_READ_SIZE: Final = 1 << 20
#: A stream that brings nothing for this long is abandoned.
IDLE_TIMEOUT: Final = 10.0

ProgressCallback = Callable[[int], None]


class DagFetcher:
    """Serves DAGs from ``store`` and fetches DAGs into it over ``/dre/dag/1.0.0``."""

    def __init__(self, handle: HostHandle, store: BlockStore,
                 penalize: Callable[[str, str], None] | None = None) -> None:
        self.handle = handle
        self.store = store
        self._penalize = penalize if penalize is not None else (lambda _peer, _why: None)

    def install(self) -> None:
        """Answer peers' requests."""
        self.handle.set_stream_handler(DAG_PROTOCOL, self._serve)

    # -- serving -------------------------------------------------------------------------------

    async def _serve(self, stream: Any) -> None:
        with trio.move_on_after(IDLE_TIMEOUT):
            request = await compat.read_until_eof(stream, _MAX_REQUEST)
        root = cid_from_bytes(request)  # IntegrityError → the stream is reset (host wrapper)
        buffer = bytearray(encode_header([root]))
        stack, seen = [root], set()
        while stack:
            cid = stack.pop()
            key = cid_to_bytes(cid)
            if key in seen:
                continue
            seen.add(key)
            cid_bytes = cid_to_bytes(cid)

            def frame(data: bytes | memoryview, cid: CID = cid, cid_bytes: bytes = cid_bytes
                      ) -> tuple[bytes, list[CID]]:
                head = varint.encode(len(cid_bytes) + len(data)) + cid_bytes
                links = [] if cid.codec.code == RAW else links_of(cid, bytes(data))
                return head + data, links

            try:
                section, links = self.store.with_block(cid, frame)
            except NotFoundError:
                break  # we hold only part of it: the requester sees an incomplete DAG
            stack.extend(reversed(links))
            if len(section) >= compat.PREFERRED_WRITE_SIZE:
                # A full-size leaf goes out as it is: no copying it into the buffer and out.
                if buffer:
                    await stream.write(bytes(buffer))
                    buffer.clear()
                await stream.write(section)
                continue
            buffer += section
            if len(buffer) >= compat.PREFERRED_WRITE_SIZE:
                await stream.write(bytes(buffer))
                buffer.clear()
        if buffer:
            await stream.write(bytes(buffer))
        await stream.close()

    # -- fetching ------------------------------------------------------------------------------

    async def fetch(self, peer: str, root: CID, *,
                    progress: ProgressCallback | None = None) -> int:
        """Fetch the DAG under ``root`` from ``peer``; the number of blocks newly stored.

        Raises IntegrityError (and penalizes the peer) for a wrong or unexpected block,
        NotFoundError when the peer sent only part of the DAG, DreError for a broken stream.
        """
        stream = await self.handle.open_stream(peer, [DAG_PROTOCOL])
        try:
            await stream.write(cid_to_bytes(root))
            await compat.half_close(stream)
            return await self._receive(stream, peer, root, progress)
        except (IntegrityError, RemoteProtocolError) as exc:
            self._penalize(peer, str(exc))
            await _reset(stream)
            raise
        except BaseException:
            await _reset(stream)
            raise

    async def _receive(self, stream: Any, peer: str, root: CID,
                       progress: ProgressCallback | None) -> int:
        # Serial on purpose: committing in a worker thread while receiving measured slower
        # (66-69 % of a raw stream against 75 %): LMDB's copy holds the GIL the loop needs.
        stored = 0

        async def commit(batch: list[Block]) -> None:
            nonlocal stored
            stored += await self._commit(batch)

        await self._read_dag(stream, peer, root, progress, commit)
        return stored

    async def _read_dag(self, stream: Any, peer: str, root: CID,
                        progress: ProgressCallback | None,
                        commit: Callable[[list[Block]], Awaitable[None]]) -> None:
        decoder = CarDecoder(verify=True)  # hashes every block against its CID
        expected = {cid_to_bytes(root)}
        received: set[bytes] = set()
        batch: list[Block] = []
        batch_bytes = 0
        eof = False
        while True:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                if eof:
                    raise RemoteProtocolError(f"{peer} ended the DAG stream mid-section")
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    data = await compat.read_some(stream, _READ_SIZE)
                if idle.cancelled_caught:
                    raise NotFoundError(f"{peer} stopped sending {root}")
                eof = not data
                decoder.receive_data(data)
                continue
            if isinstance(event, EndOfCar):
                break
            if isinstance(event, CarHeader):
                if list(event.roots) != [root]:
                    raise IntegrityError(f"{peer} answered for {event.roots}, not {root}")
                continue
            key = cid_to_bytes(event.cid)
            if key not in expected or key in received:
                raise IntegrityError(f"{peer} sent block {event.cid}, which is not in the DAG")
            received.add(key)
            expected.update(cid_to_bytes(link) for link in links_of(event.cid, event.data))
            if not self.store.has(event.cid):
                batch.append(event)
                batch_bytes += len(event.data)
            if progress is not None:
                progress(len(event.data))
            if batch_bytes >= _BATCH_BYTES:
                await commit(batch)
                batch, batch_bytes = [], 0
        if batch:
            await commit(batch)
        missing = expected - received
        if missing:
            raise NotFoundError(
                f"{peer} sent {len(received)} blocks of {root} but not {len(missing)} more")

    async def _commit(self, blocks: list[Block]) -> int:
        # Verified on arrival (the decoder hashed each block against its CID).
        count: int = await trio.to_thread.run_sync(
            lambda: self.store.put_many(blocks, verify=False))
        return count


async def _reset(stream: Any) -> None:
    try:
        await stream.reset()
    except Exception:  # the stream is already gone: nothing more to do
        return

