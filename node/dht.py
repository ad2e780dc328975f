"""Content and name discovery over a private Kademlia DHT (one per network).

The DHT speaks ``/dre/<network>/kad/1.0.0`` (:func:`dre.node.compat.set_dht_protocol`, set by
:func:`dre.node.host.open_host`), so it never merges with the public IPFS DHT.

What a node provides (provider records are keyed by the multihash, as in IPFS):

* the **root CIDs** it holds: a package's tree root, its doc, and the manifest envelope — not
  every block (a fetch walks the DAG from its root with the providers of the root);
* a **name key** per package name it holds, so "who has ``@acme/retry``" is a provider lookup::

      name_key(name) = cid_for(b"dre-name-v1\\x00" + name.encode("utf-8"), RAW)

  i.e. a CIDv1 (raw codec) of the sha2-256 of a fixed, versioned prefix and the UTF-8 name. The
  prefix keeps name keys apart from any content CID (no file's bytes start with it by accident
  and match a name), and the ``v1`` changes if the derivation ever does. Providers found for a
  name are then asked for their signed manifests, which verify themselves: a peer that provides
  a name it does not hold wastes a lookup, nothing more.

py-libp2p quirks handled here (``shared/FINDINGS.md`` pitfall 4):

* Connecting to a peer does not add it to the routing table: a background task adds every
  connected peer that speaks our DHT protocol (after identify, which completes in the
  background) and re-checks whenever a connection opens.
* ``find_providers`` defaults to ``count=20`` and then asks every node: :meth:`Dht.find_providers`
  passes a small count (default 3).
* Provider records expire after 48 h and py-libp2p republishes only on a 22 h schedule of its own;
  :class:`Dht` re-provides everything it provides on its own timer (default 12 h) and marks each
  key as republished so py-libp2p's loop does not repeat the work.
* Every network operation is bounded (py-libp2p bounds each peer query at 10 s but not a whole
  lookup): ``provide`` by :data:`PROVIDE_TIMEOUT`, lookups by :data:`LOOKUP_TIMEOUT`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

import trio
from dre.protocol.cid import CID, RAW, cid_for, multihash_of
from libp2p.abc import INotifee
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

from . import compat

__all__ = [
    "LOOKUP_TIMEOUT",
    "NAME_KEY_PREFIX",
    "PROVIDE_TIMEOUT",
    "REPROVIDE_INTERVAL",
    "Dht",
    "Provider",
    "name_key",
    "open_dht",
]

_log = logging.getLogger("dre.node.dht")

#: Prefix of the bytes whose CID is a package name's DHT key (see the module docstring).
NAME_KEY_PREFIX: Final = b"dre-name-v1\x00"
#: Bound of one ``provide`` (closest-peer walk plus ADD_PROVIDER to each).
PROVIDE_TIMEOUT: Final = 30.0
#: Bound of one provider lookup.
LOOKUP_TIMEOUT: Final = 10.0
#: How often everything provided is announced again (records live 48 h on other nodes).
REPROVIDE_INTERVAL: Final = 12 * 60 * 60.0
#: How long a provider's addresses learned from a lookup stay in the peerstore.
_PROVIDER_ADDR_TTL: Final = 10 * 60
# Routing-table upkeep: check connected peers at least this often, and at once on a connection.
_PEER_SYNC_INTERVAL: Final = 5.0


def name_key(name: str) -> CID:
    """The DHT key of a package name: ``cid_for(b"dre-name-v1\\x00" + name, RAW)``."""
    if not isinstance(name, str) or not name:
        raise ValueError("a package name must be a non-empty string")
    return cid_for(NAME_KEY_PREFIX + name.encode("utf-8"), RAW)


class Provider:
    """A peer that announced it holds a key, with the addresses it gave (may be empty)."""

    __slots__ = ("addrs", "peer_id")

    def __init__(self, peer_id: str, addrs: list[str]) -> None:
        self.peer_id = peer_id
        self.addrs = addrs

    def __repr__(self) -> str:
        return f"Provider({self.peer_id}, {self.addrs})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Provider) and (self.peer_id, self.addrs) == (
            other.peer_id,
            other.addrs,
        )

    def __hash__(self) -> int:
        return hash(self.peer_id)


class _ConnectionWatcher(INotifee):
    """Wakes the routing-table task when a connection opens (py-libp2p notifee interface)."""

    def __init__(self, wake: trio.Event) -> None:
        self.wake = wake

    async def connected(self, network: Any, conn: Any) -> None:
        self.wake.set()
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: Any, multiaddr: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        await trio.lowlevel.checkpoint()


class Dht:
    """A running DHT of one network (from :func:`open_dht`)."""

    def __init__(self, host: Any, kad: KadDHT, protocol: str) -> None:
        self.host = host
        self.kad = kad
        self.protocol = protocol
        self._provided: dict[bytes, CID] = {}
        self._watcher = _ConnectionWatcher(trio.Event())

    # ------------------------------------------------------------------ provide

    @property
    def provided(self) -> frozenset[CID]:
        """Every key this node announces (and re-announces on the timer)."""
        return frozenset(self._provided.values())

    async def provide(self, cid: CID) -> bool:
        """Announce that this node holds ``cid`` (a root: package, doc or manifest).

        Remembered for re-providing even when no peer could be told now (returns False then:
        no DHT peer, or none answered within :data:`PROVIDE_TIMEOUT`). Our own provider store
        always answers lookups for it.
        """
        key = multihash_of(cid)
        self._provided[key] = cid
        return await self._announce(key)

    async def provide_name(self, name: str) -> bool:
        """Announce that this node holds versions of package ``name`` (:func:`name_key`)."""
        return await self.provide(name_key(name))

    def unprovide(self, cid: CID) -> None:
        """Stop announcing ``cid`` (after it was deleted). Remote records expire in 48 h."""
        key = multihash_of(cid)
        self._provided.pop(key, None)
        store = self.kad.provider_store
        store.providing_keys.discard(key)
        store._last_republish.pop(key, None)
        # Our own store would still list us as a provider of it to anyone who asks.
        records = store.providers.get(key)
        if records is not None:
            records.pop(str(self.host.get_id()), None)

    async def _announce(self, key: bytes) -> bool:
        ok = False
        with trio.move_on_after(PROVIDE_TIMEOUT):
            try:
                ok = await self.kad.provider_store.provide(key)
            except trio.Cancelled:
                raise
            except Exception as exc:  # py-libp2p raises many kinds for a broken peer
                _log.warning("provide %s failed: %s", key.hex(), exc)
        # Mark it republished now so py-libp2p's own 22 h loop does not announce it again at
        # its next maintenance tick (it treats a key it never republished as overdue).
        self.kad.provider_store._last_republish[key] = time.time()
        return ok

    async def reprovide_all(self) -> int:
        """Announce every provided key again; the number that reached at least one peer."""
        done = 0
        for key in list(self._provided):
            if key in self._provided and await self._announce(key):
                done += 1
        return done

    # ------------------------------------------------------------------ lookups

    async def find_providers(
        self, cid: CID, count: int = 3, *, include_self: bool = False
    ) -> list[Provider]:
        """Up to ``count`` providers of ``cid``; an empty list if none within LOOKUP_TIMEOUT.

        Keep ``count`` small: py-libp2p stops the walk only once it has ``count`` providers, so
        a large count (its default is 20) queries every node it can reach. The providers'
        addresses are added to the peerstore, so they can be dialed by peer ID at once.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        key = multihash_of(cid)
        me = self.host.get_id()
        found: list[Any] = []
        with trio.move_on_after(LOOKUP_TIMEOUT):
            try:
                # One more than asked: our own record is in the local store if we provide it.
                found = await self.kad.provider_store.find_providers(key, count + 1)
            except trio.Cancelled:
                raise
            except Exception as exc:
                _log.warning("find_providers %s failed: %s", cid, exc)
        providers: list[Provider] = []
        seen: set[str] = set()
        store = self.host.get_peerstore()
        for info in found:
            peer = str(info.peer_id)
            if peer in seen or (info.peer_id == me and not include_self):
                continue
            seen.add(peer)
            if info.addrs and info.peer_id != me:
                store.add_addrs(info.peer_id, info.addrs, _PROVIDER_ADDR_TTL)
            providers.append(Provider(peer, [str(a) for a in info.addrs]))
        return providers[:count]

    async def find_name_providers(self, name: str, count: int = 3) -> list[Provider]:
        """Up to ``count`` peers that announced they hold package ``name``."""
        return await self.find_providers(name_key(name), count)

    # ------------------------------------------------------------------ routing table

    def routing_table_peers(self) -> set[str]:
        """Base58 IDs of the peers in our routing table."""
        return {str(p) for p in self.kad.routing_table.get_peer_ids()}

    async def add_connected_peers(self) -> int:
        """Add every connected peer that speaks our DHT protocol; the number added now.

        FINDINGS 4: a connection alone never puts a peer in the routing table, so a node that
        only dialed its bootstrap peers could not route. Peers whose identify has not finished
        are skipped (and picked up by the next round): without identify we know neither their
        listen addresses nor whether they serve the DHT.
        """
        added = 0
        store = self.host.get_peerstore()
        table = self.kad.routing_table
        for peer in list(self.host.get_connected_peers()):
            if table.peer_in_table(peer):
                continue
            try:
                protocols = store.get_protocols(peer)
            except Exception:  # not identified yet
                continue
            if self.protocol not in {str(p) for p in protocols or ()}:
                continue
            with trio.move_on_after(LOOKUP_TIMEOUT):
                if await self.kad.add_peer(peer):
                    added += 1
        return added

    async def _keep_routing_table(self) -> None:
        while True:
            self._watcher.wake = trio.Event()
            try:
                await self.add_connected_peers()
            except Exception as exc:
                _log.warning("routing table upkeep failed: %s", exc)
            with trio.move_on_after(_PEER_SYNC_INTERVAL):
                await self._watcher.wake.wait()
                # Identify finishes after the connection event: give it a moment, then retry
                # quickly a few times rather than waiting a whole interval.
                for delay in (0.05, 0.2, 0.5):
                    await trio.sleep(delay)
                    await self.add_connected_peers()

    async def _reprovide_forever(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            count = await self.reprovide_all()
            _log.info("re-provided %d of %d keys", count, len(self._provided))


@asynccontextmanager
async def open_dht(
    host: Any,
    network: str,
    *,
    reprovide_interval: float = REPROVIDE_INTERVAL,
    seed_peers: Iterable[str] = (),
) -> AsyncIterator[Dht]:
    """Run a server-mode Kademlia DHT of ``network`` on a running raw py-libp2p ``host``.

    The protocol id must already be this network's (``open_host(..., network=network)`` sets
    it); a mismatch raises ``ValueError`` rather than silently joining another DHT. Exit before
    the host exits (strict nesting, FINDINGS 6).
    """
    protocol = compat.dht_protocol_id(network)
    if compat.current_dht_protocol() != protocol:
        raise ValueError(
            f"the process's DHT protocol is {compat.current_dht_protocol()}, not {protocol}: "
            "open the host with this network first"
        )
    kad = KadDHT(host, DHTMode.SERVER)
    dht = Dht(host, kad, protocol)
    for peer in seed_peers:
        await kad.add_peer(ID.from_base58(peer))
    host.get_network().register_notifee(dht._watcher)
    async with background_trio_service(kad), trio.open_nursery() as nursery:
        nursery.start_soon(dht._keep_routing_table)
        nursery.start_soon(dht._reprovide_forever, reprovide_interval)
        try:
            yield dht
        finally:
            nursery.cancel_scope.cancel()
