"""The registry on the network: announce what is published here, take in what peers announce.

One node service (see :mod:`dre.node.runtime`) that runs gossip, the DHT, block exchange and
anti-entropy sync on the node's libp2p host, around the node home's :class:`LocalRegistry`:

- **Outbox**: publishes and scope changes made on this node (by the CLI, in another process,
  or through the API) land in the audit log; the service follows the log and announces each
  new local entry on gossip, then provides the manifest, package and document CIDs and the
  package's name key on the DHT. Following the log rather than being called means a publish
  made while the node was down is announced when it comes up.
- **Inbox**: every record gossip accepted (signature, kind and authorization were checked
  before forwarding) is stored and indexed with the same rules as a local operation. Under the
  ``always`` verify policy a new manifest is then verified: the document is fetched from the
  peers that have it, the package regenerated from it (when it reproduces, its blocks need no
  download), a signed attestation stored and gossiped.
- **Sync**: gossip is lossy, so the service reconciles record catalogs with each connected
  peer on connect and on a timer (``/dre/sync/1.0.0``), which is how a node that was offline
  catches up.
- **Fetch**: :meth:`RegistryService.fetch` gets a DAG by CID from the network (DHT providers,
  then connected peers), every block verified.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio
from dre.protocol.cid import CID, Block
from dre.protocol.errors import AuthorizationError, DreError, IntegrityError, NotFoundError
from dre.protocol.keys import PublisherKey
from dre.protocol.records import MANIFEST, Manifest, Record
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

from .blockexchange import BlockExchange, open_block_exchange
from .dagfetch import DagFetcher
from .dht import Dht, open_dht
from .gossip import Accepted, Gossip, GossipRejected, open_gossip
from .host import HostHandle
from .sync import SyncService

if TYPE_CHECKING:
    from trio_typing import TaskStatus
else:
    TaskStatus = trio.TaskStatus

__all__ = ["RegistryService"]

_log = logging.getLogger("dre.node.registry")

#: How often the outbox looks for new local log entries.
OUTBOX_POLL = 0.25
#: Periodic anti-entropy with every connected peer.
SYNC_INTERVAL = 30.0
#: How often the service looks for newly connected peers to sync with.
CONNECT_POLL = 0.5
#: A peer that sent bad data this many times is not asked again.
_MAX_OFFENCES = 1
#: Bound on fetching one DAG for the inbox's verification.
FETCH_TIMEOUT = 60.0


class RegistryService:
    """Gossip, DHT, block exchange and sync for one node home (see the module docstring)."""

    def __init__(self, repo: Repo, key: PublisherKey, *, network: str,
                 verify_policy: str = "always", sync_interval: float = SYNC_INTERVAL) -> None:
        self.repo = repo
        self.registry = LocalRegistry(repo)
        self.key = key
        self.network = network
        self.verify_policy = verify_policy
        self.sync_interval = sync_interval
        self.handle: HostHandle | None = None
        self.gossip: Gossip | None = None
        self.dht: Dht | None = None
        self.exchange: BlockExchange | None = None
        self.sync: SyncService | None = None
        self.dagfetch: DagFetcher | None = None
        #: Peers that sent bad data over DAG-at-once, with their offences.
        self.penalties: dict[str, list[str]] = {}
        #: Counts for status and tests.
        self.stats: dict[str, int] = {"announced": 0, "received": 0, "rejected": 0,
                                      "verified": 0, "reproduced": 0, "fetched_blocks": 0}
        self._ready = trio.Event()
        self._verify_nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._accept_lock = threading.Lock()

    # -- the service ---------------------------------------------------------------------------

    async def run(self, handle: HostHandle, shutdown: trio.Event, *,
                  task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run on ``handle`` until ``shutdown`` is set. Strictly nested inside the host."""
        self.handle = handle
        self._token = trio.lowlevel.current_trio_token()
        async with AsyncExitStack() as stack:
            self.gossip = await stack.enter_async_context(
                open_gossip(handle.host, self.network, authorize=self._authorize))
            self.dht = await stack.enter_async_context(open_dht(handle.host, self.network))
            self.exchange = await stack.enter_async_context(
                open_block_exchange(handle.host, self.repo.store))
            self.sync = SyncService(
                handle, network=self.network, catalog=self.registry.record_cids,
                get_record=self._get_record, accept=self._accept_synced,
            )
            self.sync.install()
            self.dagfetch = DagFetcher(handle, self.repo.store, penalize=self._penalize)
            self.dagfetch.install()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._outbox)
                nursery.start_soon(self._inbox)
                nursery.start_soon(self.sync.sync_loop, self._peers, self.sync_interval)
                nursery.start_soon(self._sync_on_connect)
                self._ready.set()
                task_status.started()
                await shutdown.wait()
                nursery.cancel_scope.cancel()

    async def wait_ready(self) -> None:
        """Wait until every part of the service runs."""
        await self._ready.wait()

    async def _sync_on_connect(self) -> None:
        """Reconcile with each peer as soon as it connects: records published while we were
        apart arrive now rather than at the next periodic round."""
        assert self.sync is not None
        seen: set[str] = set()
        while True:
            current = set(self._peers())
            for peer in sorted(current - seen):
                try:
                    await self.sync.sync_with(peer)
                except DreError as exc:  # e.g. a Kubo or JS peer: no sync protocol
                    _log.debug("sync on connect with %s: %s", peer, exc)
            # A peer that disconnects and comes back is synced again.
            seen = current
            await trio.sleep(CONNECT_POLL)

    def _peers(self) -> list[str]:
        return sorted(self.handle.connected_peers()) if self.handle is not None else []

    # -- validation, storage ---------------------------------------------------------------------

    def _authorize(self, record: Record, signer: str) -> bool:
        # Gossip's validator: the local rules decide what is accepted *and forwarded*.
        try:
            self.registry.check_remote(record, signer)
        except AuthorizationError as exc:
            _log.info("refusing a record from %s: %s", signer, exc)
            return False
        return True

    def _get_record(self, cid: CID) -> bytes | None:
        try:
            return self.repo.store.get(cid)
        except NotFoundError:
            return None

    def _accept(self, block: Block) -> str | None:
        # Gossip and sync both accept records, each from a worker thread: accepting checks
        # then writes, so one at a time.
        with self._accept_lock:
            return self.registry.accept_record(block, now=int(time.time()))

    def _accept_synced(self, block: Block) -> bool:
        # Called by the sync service, possibly from a worker thread: the verification task is
        # handed to the trio loop through its (thread-safe) token.
        kind = self._accept(block)
        if kind is not None:
            self.stats["received"] += 1
            assert self._token is not None
            self._token.run_sync_soon(self._schedule_verify, block, kind)
        return kind is not None

    # -- outbox ------------------------------------------------------------------------------------

    async def _outbox(self) -> None:
        assert self.gossip is not None and self.dht is not None
        head = self.repo.index.log_head()
        # What was published before this start is provided again (records are re-announced
        # only through sync: gossip is for news).
        await self._provide_all()
        next_seq = 0 if head is None else head[0] + 1
        while True:
            for entry in list(self.registry.log_from(next_seq)):
                next_seq = entry.seq + 1
                if entry.action == "received":
                    continue
                await self._announce(entry.record)
            await trio.sleep(OUTBOX_POLL)

    async def _announce(self, record_cid: CID) -> None:
        assert self.gossip is not None and self.dht is not None
        block = Block(record_cid, self.repo.store.get(record_cid))
        try:
            opened = await self.gossip.publish(block)
        except GossipRejected as exc:
            _log.warning("not announcing %s: %s", record_cid, exc)
            return
        self.stats["announced"] += 1
        if isinstance(opened.record, Manifest):
            await self._provide_manifest(record_cid, opened.record)

    async def _provide_manifest(self, cid: CID, manifest: Manifest) -> None:
        assert self.dht is not None
        for root in (cid, manifest.package, manifest.doc):
            await self.dht.provide(root)
        await self.dht.provide_name(manifest.name)

    async def _provide_all(self) -> None:
        for name in self.repo.index.names():
            for _version, cid in self.repo.index.versions(name).items():
                try:
                    await self._provide_manifest(cid, self.registry.manifest(cid))
                except (IntegrityError, NotFoundError) as exc:
                    _log.warning("not providing %s: %s", cid, exc)

    # -- inbox -------------------------------------------------------------------------------------

    async def _inbox(self) -> None:
        assert self.gossip is not None
        async with trio.open_nursery() as nursery:
            self._verify_nursery = nursery
            async for item in self.gossip.accepted:
                await self._take(item)

    async def _take(self, item: Accepted) -> None:
        try:
            kind = await trio.to_thread.run_sync(self._accept, item.block)
        except (AuthorizationError, IntegrityError) as exc:
            self.stats["rejected"] += 1
            _log.info("record %s from %s refused: %s", item.block.cid, item.origin, exc)
            return
        if kind is None:
            return
        self.stats["received"] += 1
        self._schedule_verify(item.block, kind, hint=item.origin)

    def _schedule_verify(self, block: Block, kind: str, hint: str | None = None) -> None:
        if self.verify_policy != "always" or self._verify_nursery is None or kind != MANIFEST:
            return
        manifest = self.registry.manifest(block.cid)
        self._verify_nursery.start_soon(self._verify_received, block.cid, manifest, hint)

    async def _verify_received(self, cid: CID, manifest: Manifest, hint: str | None) -> None:
        """Fetch the document, regenerate, verify, attest and gossip the attestation."""
        try:
            await self.fetch(manifest.doc, hints=[hint] if hint else [])
            reproduced = await trio.to_thread.run_sync(
                self.registry.regenerate_into_store, manifest)
            if not reproduced:
                await self.fetch(manifest.package, hints=[hint] if hint else [])
            report = await trio.to_thread.run_sync(
                lambda: self.registry.verify(manifest.name, manifest.version, self.key,
                                             now=int(time.time())))
        except DreError as exc:
            _log.warning("could not verify %s@%s: %s", manifest.name, manifest.version, exc)
            return
        self.stats["verified"] += 1
        if report.reproduced:
            self.stats["reproduced"] += 1
        if report.attestation is not None and self.gossip is not None:
            block = Block(report.attestation, self.repo.store.get(report.attestation))
            try:
                await self.gossip.publish(block)
            except GossipRejected as exc:
                _log.warning("not gossiping attestation of %s: %s", cid, exc)

    # -- fetching ----------------------------------------------------------------------------------

    async def providers(self, cid: CID, *, hints: Sequence[str] = ()) -> list[str]:
        """Peers to ask for ``cid``: the hints, DHT providers, then every connected peer."""
        assert self.dht is not None
        ordered: list[str] = [h for h in hints if h]
        for provider in await self.dht.find_providers(cid, count=3):
            ordered.append(provider.peer_id)
        ordered.extend(self._peers())
        me = self.handle.peer_id if self.handle is not None else ""
        return [p for p in dict.fromkeys(ordered) if p != me]

    async def fetch(self, root: CID, *, hints: Sequence[str] = (), progress: Any = None) -> int:
        """Fetch the whole DAG under ``root`` into the store (blocks verified); block count."""
        assert self.exchange is not None and self.handle is not None
        providers = await self.providers(root, hints=hints)
        for peer in providers:
            if peer not in self.handle.connected_peers():
                try:
                    await self._connect_peer(peer)
                except DreError:
                    continue
        providers = [p for p in providers if len(self.penalties.get(p, ())) < _MAX_OFFENCES]
        if not providers:
            raise NotFoundError(f"no peer has {root}: no DHT providers and no connected peers")
        with trio.fail_after(FETCH_TIMEOUT):
            count = await self._fetch_whole(root, providers, progress)
        self.stats["fetched_blocks"] += count
        return count

    async def _fetch_whole(self, root: CID, providers: list[str], progress: Any) -> int:
        # DAG-at-once from the first DRE provider that has all of it (one stream, no per-block
        # round trips); Bitswap across all providers for what is left (Kubo, Helia, partial
        # holders). Blocks already stored are never fetched twice.
        assert self.exchange is not None and self.dagfetch is not None
        for peer in providers:
            try:
                return await self.dagfetch.fetch(peer, root, progress=progress)
            except DreError as exc:
                _log.info("DAG-at-once of %s from %s: %s", root, peer, exc)
        return await self.exchange.fetch_dag(root, providers, progress=progress)

    def _penalize(self, peer: str, why: str) -> None:
        _log.warning("peer %s sent bad data: %s", peer, why)
        self.penalties.setdefault(peer, []).append(why)

    async def _connect_peer(self, peer_id: str) -> None:
        """Dial a peer known only by ID, through the addresses the peerstore has for it (the
        DHT adds providers' addresses there)."""
        assert self.handle is not None
        addrs = self.handle.peer_addrs(peer_id)
        if not addrs:
            raise NotFoundError(f"no known address for peer {peer_id}")
        last: DreError | None = None
        for addr in addrs:
            try:
                await self.handle.connect(f"{addr}/p2p/{peer_id}")
                return
            except DreError as exc:
                last = exc
        assert last is not None
        raise last

    async def resolve_name(self, name: str) -> int:
        """Find peers that hold package ``name`` (DHT name key) and sync with them; the number
        of new records."""
        assert self.dht is not None and self.sync is not None and self.handle is not None
        received = 0
        for provider in await self.dht.find_name_providers(name):
            try:
                if provider.peer_id not in self.handle.connected_peers():
                    await self._connect_peer(provider.peer_id)
                summary = await self.sync.sync_with(provider.peer_id)
                received += summary.received
            except DreError as exc:
                _log.info("sync with %s failed: %s", provider.peer_id, exc)
        return received


