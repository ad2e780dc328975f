"""Block exchange: Bitswap 1.2.0 over py-libp2p, backed by our block store, interoperable with Kubo.

::

    async with open_host(seed, network="main") as h, open_block_exchange(h.host, store) as bx:
        await h.connect(provider_addr)
        fetched = await bx.fetch_dag(root, [provider_peer_id], timeout=10.0)

Two halves:

**Serving.** :class:`StoreAdapter` presents our :class:`~dre.storage.blockstore.BlockStore`
(sync, keyed by multihash, our ``multiformats`` CIDs) as py-libp2p's bitswap ``BlockStore`` ABC
(async, py-cid objects); CIDs cross between the two libraries as binary CIDs. Every peer that
sends us a wantlist gets the blocks we have (``want-block``), ``HAVE``/``DONT_HAVE`` presences
(``want-have``, ``sendDontHave``), and later the block if we store it while it is still wanted.

**Fetching.** :meth:`BlockExchange.fetch_dag` walks a DAG from its root, asks providers for the
blocks the store lacks, verifies every block against the CID it was asked for before storing
it, and keeps a penalty score per peer (a block with wrong bytes bans the peer; time-outs add up).

py-libp2p 0.8.1's ``BitswapClient`` does not interoperate with Kubo 0.22 as shipped; the
subclass :class:`_Bitswap` fixes, without touching site-packages:

1. *Replies on the wrong stream.* It answers a wantlist "inline", on the stream the wantlist
   came in on. go-bitswap (Kubo) only writes to the streams it opens and reads messages only from
   streams the remote opened, so Kubo never sees those blocks and its fetch hangs. We reply on
   our own outbound stream (the per-peer message queue), as go-bitswap does.
2. *No prefix for CIDv0 blocks.* ``get_cid_prefix`` returns ``b""`` for a CIDv0; go-cid's
   ``PrefixFromBytes`` rejects that and Kubo drops the whole message. We send the prefix Go
   sends for v0 (``00 70 12 20``: version 0, dag-pb, sha2-256, 32 bytes).
3. *want-have answered with the block, no HAVE.* Fine for Kubo, but wasteful; we answer a
   ``want-have`` with ``HAVE`` (or the block itself when it is at most 1 KiB, as Kubo does).
4. *Received blocks are stored under whatever CID their bytes hash to.* The client rebuilds
   the CID from the prefix and the data and stores it, so a peer can write any block into our
   store, and wrong bytes for a wanted block are silently stored under another CID. We route
   every received block to :class:`BlockExchange`, which accepts only blocks it asked that peer
   for and penalizes the peer otherwise.
5. *Response reader gives up.* The reader attached to our outbound streams stops (and closes
   the stream) whenever py-libp2p's own "expected blocks" set is empty, which is always the case
   for wants sent outside its sessions; ours reads until the peer closes the stream.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import trio
import trio.lowlevel
from dre.protocol import varint
from dre.protocol.cid import (
    CID,
    SHA2_256,
    Block,
    cid_from_bytes,
    multihash_of,
    sha256_multihash,
    verify_block,
)
from dre.protocol.errors import DreError, IntegrityError, NotFoundError
from dre.protocol.links import links_of
from dre.storage.blockstore import BlockStore
from libp2p.bitswap import BitswapClient
from libp2p.bitswap import BlockStore as BitswapBlockStore
from libp2p.bitswap.cid import CIDInput, CIDObject, parse_cid
from libp2p.bitswap.config import BITSWAP_PROTOCOL_V100, BITSWAP_PROTOCOL_V120
from libp2p.bitswap.pb.bitswap_pb2 import Message
from libp2p.peer.id import ID as PeerID

__all__ = [
    "INVALID_BLOCK_PENALTY",
    "PENALTY_LIMIT",
    "TIMEOUT_PENALTY",
    "BlockExchange",
    "FetchTimeoutError",
    "PeerStats",
    "ProgressCallback",
    "StoreAdapter",
    "cid_prefix",
    "open_block_exchange",
    "to_bitswap_cid",
    "to_dre_cid",
]

#: Called with the byte size of each block fetched from the network (as ``dre add`` reports
#: bytes read): a progress bar adds them up.
ProgressCallback = Callable[[int], None]

#: A peer whose score reaches this is never asked again by this exchange (until it is rebuilt).
PENALTY_LIMIT: Final = 100
#: A block that is not what we asked that peer for (wrong bytes, or unsolicited): one is enough.
INVALID_BLOCK_PENALTY: Final = 100
#: A want the peer neither answered nor refused within the timeout: five of them ban it.
TIMEOUT_PENALTY: Final = 20

#: Wants outstanding at once per fetch, and per provider. go-bitswap keeps ~32 want-blocks in
#: flight per peer; a 256 KiB block each, 32 keep a loopback link busy without hoarding memory.
MAX_INFLIGHT: Final = 128
MAX_INFLIGHT_PER_PEER: Final = 32
#: Blocks written to the store per transaction (FINDINGS: one fsync'd txn per block is slow).
WRITE_BATCH: Final = 64
#: Kubo answers a want-have with the block itself when the block is this small (bitswap server
#: ``maxBlockSizeReplaceHasWithBlock``); so do we.
_SMALL_BLOCK: Final = 1024
#: Wantlist entries honoured per message: a peer cannot make us load an unbounded set at once.
_MAX_WANTLIST_ENTRIES: Final = 1024

_WANT_BLOCK: Final = 0
_WANT_HAVE: Final = 1

_log = logging.getLogger("dre.node.blockexchange")


class FetchTimeoutError(NotFoundError):
    """No provider delivered a block in time (some stayed silent, the others lacked it)."""


# ------------------------------------------------------------------------------- CID plumbing


def to_dre_cid(cid: CIDInput) -> CID:
    """A py-libp2p bitswap CID (py-cid object, bytes or text) as our ``multiformats`` CID.

    Goes through the binary form, the one representation both libraries agree on; raises
    :class:`IntegrityError` (via our strict parser) for anything that is not one valid CID.
    """
    if isinstance(cid, bytes):
        return cid_from_bytes(cid)
    try:
        raw: bytes = parse_cid(cid).buffer
    except Exception as exc:  # py-cid raises ValueError, TypeError and its own errors
        raise IntegrityError(f"not a CID: {cid!r}: {exc}") from None
    return cid_from_bytes(bytes(raw))


def to_bitswap_cid(cid: CID) -> CIDObject:
    """Our CID as the py-cid object py-libp2p's bitswap keys its wantlists by."""
    return parse_cid(bytes(cid))


def cid_prefix(cid: CID) -> bytes:
    """The Bitswap 1.1+ block prefix of ``cid``: version, codec, hash code, digest length.

    Also for CIDv0 (``00 70 12 20``), as go-cid's ``Prefix.Bytes()`` writes it: py-libp2p sends
    an empty prefix there, which Kubo rejects (module docstring, point 2).
    """
    mh = multihash_of(cid)
    code, pos = varint.decode(mh, 0)
    length, _ = varint.decode(mh, pos)
    return (
        varint.encode(cid.version)
        + varint.encode(cid.codec.code)
        + varint.encode(code)
        + varint.encode(length)
    )


def _prefix_multihash(prefix: bytes, data: bytes) -> bytes:
    """The multihash of ``data`` under the hash function a 1.1+ block prefix names.

    Only sha2-256 is supported (our store's only hash); anything else raises IntegrityError.
    """
    if not prefix:  # a 1.1 peer sending a CIDv0 block the way py-libp2p does
        return sha256_multihash(data)
    try:
        _version, pos = varint.decode(prefix, 0)
        _codec, pos = varint.decode(prefix, pos)
        code, pos = varint.decode(prefix, pos)
        length, pos = varint.decode(prefix, pos)
    except Exception as exc:  # our varint raises on truncation/overflow
        raise IntegrityError(f"malformed block prefix {prefix.hex()}: {exc}") from None
    if code != SHA2_256 or length != 32 or pos != len(prefix):
        raise IntegrityError(f"unsupported block prefix {prefix.hex()}")
    return sha256_multihash(data)


def _peer_id(peer: PeerID | str) -> PeerID:
    return peer if isinstance(peer, PeerID) else PeerID.from_base58(str(peer))


# -------------------------------------------------------------------------------- the adapter


class StoreAdapter(BitswapBlockStore):
    """Our block store behind py-libp2p's bitswap ``BlockStore`` interface.

    Reads run inline: an LMDB get of a 256 KiB block takes ~0.15 ms, less than a thread hop.
    Writes go to a worker thread (an LMDB commit may fsync) and are verified against the CID
    first: nothing enters our store through this adapter unverified.
    """

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    def get_sync(self, cid: CID) -> bytes | None:
        """The block's bytes, or None if we do not have it."""
        try:
            return self.store.get(cid)
        except NotFoundError:
            return None

    async def get_block(self, cid: CIDInput) -> bytes | None:
        """Bytes of ``cid``, or None when the store lacks it (or the CID is not one we parse)."""
        try:
            ours = to_dre_cid(cid)
        except DreError:
            return None
        return self.get_sync(ours)

    async def put_block(self, cid: CIDInput, data: bytes) -> None:
        """Verify ``data`` against ``cid`` (IntegrityError if it differs), then store it."""
        block = Block(to_dre_cid(cid), bytes(data))
        verify_block(block.cid, block.data)
        await trio.to_thread.run_sync(lambda: self.store.put(block, verify=False))

    async def has_block(self, cid: CIDInput) -> bool:
        """Whether the store holds ``cid`` (by multihash, as the store keys blocks)."""
        try:
            return self.store.has(to_dre_cid(cid))
        except DreError:
            return False

    async def delete_block(self, cid: CIDInput) -> None:
        """Delete a block. The store may keep it if a pin or an import lease protects it."""
        await trio.to_thread.run_sync(self.store.delete, to_dre_cid(cid))

    def get_all_cids(self) -> list[bytes]:
        """Every block as a binary CIDv0 (a bare sha2-256 multihash).

        The store keys blocks by multihash and does not remember codecs, so the codec cannot be
        given back; nothing on the serving path calls this.
        """
        return [mh for mh in self.store.iter_multihashes() if mh[:2] == b"\x12\x20"]


# ----------------------------------------------------------------- py-libp2p bitswap, corrected


class _Bitswap(BitswapClient):
    """``BitswapClient`` with the Kubo-interop and safety fixes of the module docstring."""

    def __init__(self, host: Any, adapter: StoreAdapter, exchange: BlockExchange) -> None:
        super().__init__(host, adapter, protocol_version=BITSWAP_PROTOCOL_V120)
        self._adapter = adapter
        self._exchange = exchange

    # -- serving (points 1-3) --

    async def _process_wantlist(self, wantlist: Any, peer_id: PeerID, stream: Any) -> None:
        peer_wants = self._peer_wantlists.setdefault(peer_id, {})
        if wantlist.full:
            peer_wants.clear()
        protocol = self._peer_protocols.get(peer_id, BITSWAP_PROTOCOL_V100)
        v100 = protocol == BITSWAP_PROTOCOL_V100
        presences_ok = protocol not in (BITSWAP_PROTOCOL_V100, "/ipfs/bitswap/1.1.0")
        blocks_v100: list[bytes] = []
        blocks_v110: list[tuple[bytes, bytes]] = []
        presences: list[tuple[CIDObject, bool]] = []
        for entry in list(wantlist.entries)[:_MAX_WANTLIST_ENTRIES]:
            try:
                cid = cid_from_bytes(bytes(entry.block))
                key = parse_cid(bytes(entry.block))
            except Exception:  # a malformed entry from the peer: skip it, serve the rest
                continue
            if entry.cancel:
                peer_wants.pop(key, None)
                continue
            data = self._adapter.get_sync(cid)
            if data is None:
                # Remember the want: if we store the block later, _notify_peers_about_block
                # sends it (or HAVE), as a Kubo server does.
                peer_wants[key] = {
                    "priority": entry.priority,
                    "want_type": entry.wantType,
                    "send_dont_have": entry.sendDontHave,
                }
                if entry.sendDontHave and presences_ok:
                    presences.append((key, False))
                continue
            peer_wants.pop(key, None)  # answered now
            if entry.wantType == _WANT_HAVE and presences_ok and len(data) > _SMALL_BLOCK:
                presences.append((key, True))
            elif v100:
                blocks_v100.append(data)
            else:
                blocks_v110.append((cid_prefix(cid), data))
        if not (blocks_v100 or blocks_v110 or presences):
            return
        # Point 1: reply on our own outbound stream, never inline on theirs.
        queue = self.get_or_create_message_queue(peer_id)
        if presences:
            queue.add_presences(presences)
        if blocks_v110:
            queue.add_blocks_v110(blocks_v110)
        if blocks_v100:
            queue.add_blocks_v100(blocks_v100)

    async def _notify_peers_about_block(self, cid: CIDObject, data: bytes) -> None:
        # The base sends an empty prefix for CIDv0 (point 2): redo it with ours.
        ours = to_dre_cid(cid)
        for peer_id, wants in list(self._peer_wantlists.items()):
            want = wants.pop(cid, None)
            if want is None:
                continue
            queue = self.get_or_create_message_queue(peer_id)
            protocol = self._peer_protocols.get(peer_id, BITSWAP_PROTOCOL_V100)
            if want.get("want_type") == _WANT_HAVE and protocol != BITSWAP_PROTOCOL_V100:
                queue.add_presences([(cid, True)])
            elif protocol == BITSWAP_PROTOCOL_V100:
                queue.add_blocks_v100([data])
            else:
                queue.add_blocks_v110([(cid_prefix(ours), data)])

    # -- receiving (points 4-5) --

    async def _process_blocks_v100(self, blocks: list[bytes], peer_id: PeerID) -> None:
        for data in blocks:
            await self._exchange._on_block(peer_id, sha256_multihash(data), bytes(data))

    async def _process_blocks_v110(self, blocks: Sequence[Any], peer_id: PeerID) -> None:
        for block in blocks:
            data = bytes(block.data)
            try:
                mh = _prefix_multihash(bytes(block.prefix), data)
            except IntegrityError as exc:
                self._exchange._penalize(peer_id, INVALID_BLOCK_PENALTY, str(exc))
                continue
            await self._exchange._on_block(peer_id, mh, data)

    async def _process_block_presences(self, presences: Sequence[Any], peer_id: PeerID) -> None:
        for presence in presences:
            try:
                mh = multihash_of(cid_from_bytes(bytes(presence.cid)))
            except DreError:
                continue
            self._exchange._on_presence(peer_id, mh, presence.type == Message.Have)

    def _on_message_queue_stream_opened(self, stream: Any, peer_id: PeerID) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._read_replies, stream, peer_id)

    async def _read_replies(self, stream: Any, peer_id: PeerID) -> None:
        """Read what a peer sends back on a stream we opened, until it closes (point 5)."""
        while True:
            msg = await self._read_message(stream)  # None on EOF, reset or garbage
            if msg is None:
                return
            try:
                await self._process_message(msg, peer_id, stream)
            except Exception:
                # Never let one peer's message take the node's nursery down.
                _log.warning("bad bitswap message from %s", peer_id, exc_info=True)
                return


# ------------------------------------------------------------------------------- the exchange


@dataclass
class _Want:
    """One block a fetch is waiting for, and whom it asked."""

    cid: CID
    #: peer -> when we asked it (trio clock); a peer leaves when it answers or times out.
    asked: dict[PeerID, float] = field(default_factory=dict)
    #: peers that timed out, said DONT_HAVE, or got banned, for this block.
    failed: dict[PeerID, str] = field(default_factory=dict)
    data: bytes | None = None
    #: the peer whose block we kept.
    source: PeerID | None = None


@dataclass
class PeerStats:
    """What one peer did for us, for penalties and for tests/status output."""

    score: int = 0
    blocks: int = 0
    bytes: int = 0
    timeouts: int = 0
    invalid: int = 0
    dont_have: int = 0
    reasons: list[str] = field(default_factory=list)


class BlockExchange:
    """Serve our blocks over Bitswap and fetch DAGs from providers. Use :func:`open_block_exchange`.

    Penalty scores live as long as this object: a peer at :data:`PENALTY_LIMIT` or more is never
    asked again, by any fetch.
    """

    def __init__(
        self,
        host: Any,
        store: BlockStore,
        *,
        stagger: float = 1.0,
        max_inflight: int = MAX_INFLIGHT,
        max_inflight_per_peer: int = MAX_INFLIGHT_PER_PEER,
    ) -> None:
        self.store = store
        self.adapter = StoreAdapter(store)
        self.bitswap = _Bitswap(host, self.adapter, self)
        #: Seconds a want waits on one provider before a second one is asked too.
        self.stagger = stagger
        self.max_inflight = max_inflight
        self.max_inflight_per_peer = max_inflight_per_peer
        self.peers: dict[PeerID, PeerStats] = {}
        # multihash -> the want of a running fetch (a block wanted twice at once is asked once).
        self._wants: dict[bytes, _Want] = {}
        # peer -> multihashes we have ever asked it for in a live fetch: a block outside this set
        # is unsolicited (or has wrong bytes) and penalized; inside it but no longer wanted it is
        # just late (another provider was faster) and ignored.
        self._asked: dict[PeerID, set[bytes]] = {}
        # One event per running fetch: anything that may let a fetch progress sets them all.
        self._fetches: set[_Fetch] = set()

    # -- peer scores --

    def penalty(self, peer: PeerID | str) -> int:
        """The penalty score of ``peer`` (0 for a peer we know nothing bad about)."""
        stats = self.peers.get(_peer_id(peer))
        return stats.score if stats else 0

    def banned(self, peer: PeerID | str) -> bool:
        """Whether ``peer`` is no longer asked for blocks."""
        return self.penalty(peer) >= PENALTY_LIMIT

    def stats(self, peer: PeerID | str) -> PeerStats:
        """Counters for ``peer`` (blocks, bytes, timeouts, invalid blocks, penalty reasons)."""
        return self.peers.setdefault(_peer_id(peer), PeerStats())

    def _notify(self) -> None:
        for fetch in self._fetches:
            fetch.wake.set()

    def _penalize(self, peer: PeerID, points: int, reason: str) -> None:
        stats = self.stats(peer)
        was_banned = stats.score >= PENALTY_LIMIT
        stats.score += points
        stats.reasons.append(reason)
        if not was_banned and stats.score >= PENALTY_LIMIT:
            _log.warning("peer %s banned from block exchange: %s", peer, reason)
        else:
            _log.info("peer %s penalized %d: %s", peer, points, reason)
        self._notify()

    # -- callbacks from _Bitswap (never raise: they run in the host's nursery) --

    async def _on_block(self, peer: PeerID, mh: bytes, data: bytes) -> None:
        if mh not in self._asked.get(peer, ()):
            # Wrong bytes for something we asked (they hash to something else), or a block we
            # never asked this peer for: either way it does not go into our store.
            self.stats(peer).invalid += 1
            self._penalize(peer, INVALID_BLOCK_PENALTY, f"block {mh.hex()[:16]}… not requested")
            return
        want = self._wants.get(mh)
        if want is None or want.data is not None:
            return  # late duplicate from a slower provider
        try:
            verify_block(want.cid, data)  # the multihash matched; check the CID's hash anyway
        except IntegrityError as exc:
            self.stats(peer).invalid += 1
            self._penalize(peer, INVALID_BLOCK_PENALTY, str(exc))
            return
        want.data = data
        want.source = peer
        stats = self.stats(peer)
        stats.blocks += 1
        stats.bytes += len(data)
        self._notify()

    def _on_presence(self, peer: PeerID, mh: bytes, have: bool) -> None:
        want = self._wants.get(mh)
        if want is None or have or peer not in want.asked:
            return
        del want.asked[peer]
        want.failed[peer] = "dont-have"
        self.stats(peer).dont_have += 1
        self._notify()

    # -- fetching --

    def _send_wants(self, peer: PeerID, cids: list[CID]) -> None:
        objs = [to_bitswap_cid(c) for c in cids]
        info = {"priority": 1, "want_type": _WANT_BLOCK, "send_dont_have": True}
        self.bitswap.get_or_create_message_queue(peer).add_wants(
            objs, want_infos={o: info for o in objs}
        )

    def _send_cancels(self, peer: PeerID, cids: list[CID]) -> None:
        if cids:
            self.bitswap.get_or_create_message_queue(peer).add_cancels(
                [to_bitswap_cid(c) for c in cids]
            )

    async def fetch_dag(
        self,
        root: CID,
        providers: Sequence[PeerID | str],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109  (per want and provider, not a deadline)
        progress: ProgressCallback | None = None,
    ) -> int:
        """Fetch every block of the DAG under ``root`` that the store lacks; return how many.

        Blocks already in the store are not fetched again (an interrupted fetch resumes); their
        links are still followed. Wants are spread over ``providers`` (in that order of
        preference, at most :attr:`max_inflight_per_peer` each); a want unanswered after
        :attr:`stagger` seconds is also sent to the next provider, and one unanswered after
        ``timeout`` seconds counts as a time-out of that provider (:data:`TIMEOUT_PENALTY`).
        Every block is verified against its CID before it is stored; a peer that sends one that
        does not match is banned (:data:`INVALID_BLOCK_PENALTY`) and its wants go elsewhere.

        Raises :class:`~dre.protocol.errors.NotFoundError` when every provider said it lacks a
        block (or is banned), :class:`FetchTimeoutError` (a NotFoundError) when some stayed
        silent, and :class:`IntegrityError` for a block that does not decode under its codec.
        Blocks stored before an error or a cancellation stay: the next call resumes.
        """
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        fetch = _Fetch(self, [_peer_id(p) for p in providers], timeout, progress)
        fetch.todo.append(root)
        self._fetches.add(fetch)
        try:
            while True:
                await fetch.collect()  # first: delivered blocks add links to walk
                await fetch.walk()
                if not fetch.mine and not fetch.todo:
                    await fetch.flush()
                    return fetch.fetched
                deadline = fetch.assign(trio.current_time())
                if any(w.data is not None for w in fetch.mine.values()):
                    continue  # arrived while we were busy: no need to sleep
                with trio.move_on_at(deadline):
                    await fetch.wake.wait()
                fetch.wake = trio.Event()
        finally:
            self._fetches.discard(fetch)
            with trio.CancelScope(shield=True):
                await fetch.close()

    def _unavailable(self, want: _Want, peers: Iterable[PeerID]) -> NotFoundError:
        reasons = {str(p): want.failed.get(p, "banned") for p in peers}
        detail = ", ".join(f"{p}: {r}" for p, r in reasons.items()) or "no providers given"
        if any(r == "timeout" for r in reasons.values()):
            return FetchTimeoutError(f"block {want.cid}: no provider delivered it ({detail})")
        return NotFoundError(f"block {want.cid}: no provider has it ({detail})")


class _Fetch:
    """The state of one :meth:`BlockExchange.fetch_dag` call."""

    def __init__(
        self,
        exchange: BlockExchange,
        peers: list[PeerID],
        timeout: float,
        progress: ProgressCallback | None,
    ) -> None:
        self.ex = exchange
        self.peers = list(dict.fromkeys(peers))
        self.timeout = timeout
        self.progress = progress
        self.fetched = 0
        self.todo: deque[CID] = deque()  # discovered, not yet looked at
        self.seen: set[bytes] = set()  # multihashes looked at
        self.mine: dict[bytes, _Want] = {}  # this fetch's outstanding wants
        self.to_write: list[Block] = []
        #: Set when a block, a DONT_HAVE or a ban arrives.
        self.wake = trio.Event()

    async def walk(self) -> None:
        """Follow links through blocks we have; turn missing ones into wants (bounded)."""
        ex = self.ex
        steps = 0
        while self.todo and len(self.mine) < ex.max_inflight:
            cid = self.todo.popleft()
            mh = multihash_of(cid)
            if mh in self.seen:
                continue
            self.seen.add(mh)
            data = ex.adapter.get_sync(cid)
            if data is None:
                # A block another running fetch wants too is asked once, shared.
                self.mine[mh] = ex._wants.setdefault(mh, _Want(cid))
                continue
            self.todo.extend(links_of(cid, data))
            steps += 1
            if steps % 256 == 0:  # a big local DAG must not starve the host
                await trio.lowlevel.checkpoint()

    async def collect(self) -> None:
        """Take delivered (already verified) blocks: queue their links, write them in batches."""
        ex = self.ex
        for mh, want in list(self.mine.items()):
            if want.data is None:
                continue
            del self.mine[mh]
            if ex._wants.get(mh) is want:
                del ex._wants[mh]
            for peer in want.asked:  # others still racing for it: call them off
                if peer != want.source:
                    ex._send_cancels(peer, [want.cid])
            self.to_write.append(Block(want.cid, want.data))
            self.fetched += 1
            if self.progress is not None:
                self.progress(len(want.data))
            self.todo.extend(links_of(want.cid, want.data))
        if len(self.to_write) >= WRITE_BATCH:
            await self.flush()

    async def flush(self) -> None:
        """Write the delivered blocks in one transaction, off the event loop (it may fsync)."""
        if not self.to_write:
            return
        batch, self.to_write = self.to_write, []
        # verify=False: every block was verified against its CID on arrival (_on_block).
        await trio.to_thread.run_sync(lambda: self.ex.store.put_many(batch, verify=False))

    def assign(self, now: float) -> float:
        """Expire unanswered wants, send wants to providers; return when to look again.

        Raises NotFoundError / FetchTimeoutError when a want has no provider left.
        """
        ex = self.ex
        inflight: dict[PeerID, int] = {}
        for want in self.mine.values():
            for peer in want.asked:
                inflight[peer] = inflight.get(peer, 0) + 1
        sends: dict[PeerID, list[CID]] = {}
        deadline = now + 1.0  # a safety net; events normally wake us first
        for want in self.mine.values():
            for peer, since in list(want.asked.items()):
                if ex.banned(peer):
                    reason = "banned"
                elif now - since >= self.timeout:
                    reason = "timeout"
                    ex.stats(peer).timeouts += 1
                    ex._penalize(
                        peer, TIMEOUT_PENALTY, f"{want.cid}: no answer in {self.timeout:g} s"
                    )
                else:
                    continue
                del want.asked[peer]
                want.failed[peer] = reason
                inflight[peer] -= 1
                ex._send_cancels(peer, [want.cid])
            oldest = min(want.asked.values(), default=None)
            if oldest is None or now - oldest >= ex.stagger:
                chosen = self._pick(want, inflight)
                if chosen is not None:
                    want.asked[chosen] = now
                    inflight[chosen] = inflight.get(chosen, 0) + 1
                    ex._asked.setdefault(chosen, set()).add(multihash_of(want.cid))
                    sends.setdefault(chosen, []).append(want.cid)
                elif not want.asked and not any(
                    p not in want.failed and not ex.banned(p) for p in self.peers
                ):
                    raise ex._unavailable(want, self.peers)
            for since in want.asked.values():
                deadline = min(deadline, since + self.timeout, since + ex.stagger)
        for peer, cids in sends.items():
            ex._send_wants(peer, cids)
        return deadline

    def _pick(self, want: _Want, inflight: dict[PeerID, int]) -> PeerID | None:
        """The provider to ask next for ``want``: least loaded, then the caller's order."""
        ex = self.ex
        candidates = [
            p
            for p in self.peers
            if p not in want.asked
            and p not in want.failed
            and not ex.banned(p)
            and inflight.get(p, 0) < ex.max_inflight_per_peer
        ]
        return min(candidates, key=lambda p: inflight.get(p, 0)) if candidates else None

    async def close(self) -> None:
        """Withdraw our wants and keep what arrived (so the next fetch resumes from it)."""
        ex = self.ex
        for mh, want in self.mine.items():
            if want.data is not None:
                self.to_write.append(Block(want.cid, want.data))
            if ex._wants.get(mh) is want:
                del ex._wants[mh]
            for peer in want.asked:
                ex._send_cancels(peer, [want.cid])
        self.mine.clear()
        await self.flush()
        if not ex._wants:
            ex._asked.clear()  # no live fetch: forget whom we asked what


@asynccontextmanager
async def open_block_exchange(
    host: Any, store: BlockStore, **options: Any
) -> AsyncIterator[BlockExchange]:
    """Serve ``store`` over Bitswap on ``host`` (the raw py-libp2p host) until the block exits.

    ``options`` go to :class:`BlockExchange` (``stagger``, ``max_inflight``,
    ``max_inflight_per_peer``). Enter it inside the host's context and leave it first.
    """
    exchange = BlockExchange(host, store, **options)
    async with trio.open_nursery() as nursery:
        exchange.bitswap.set_nursery(nursery)
        await exchange.bitswap.start()
        try:
            yield exchange
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await exchange.bitswap.stop()
            nursery.cancel_scope.cancel()
