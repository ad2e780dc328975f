"""The node's libp2p host: Ed25519 identity from a seed, TCP + Noise + Yamux, bounded dials.

::

    async with open_host(seed, ["/ip4/127.0.0.1/tcp/0"], network="main") as h:
        h.set_stream_handler("/dre/main/echo/1.0.0", handle)
        peer = await h.connect("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…")
        stream = await h.open_stream(peer, ["/dre/main/echo/1.0.0"])

Every py-libp2p workaround lives in :mod:`dre.node.compat`; this module only composes them.
Strings (peer IDs, multiaddrs, protocol ids) cross this API; py-libp2p objects stay inside,
except :attr:`HostHandle.host` for the other node modules (pubsub, DHT, bitswap) that need it.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import multiaddr
import trio
from dre.protocol.errors import ValidationError
from libp2p import new_host
from libp2p.custom_types import TProtocol
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL_ID
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from . import compat
from .compat import NetworkError

__all__ = [
    "DEFAULT_LISTEN",
    "DIAL_TIMEOUT",
    "STREAM_OPEN_TIMEOUT",
    "HostHandle",
    "NetworkError",
    "StreamHandler",
    "open_host",
]

#: Where a host listens unless told otherwise: loopback, a port the OS picks.
DEFAULT_LISTEN: Final = ("/ip4/127.0.0.1/tcp/0",)
#: Bound of one dial: TCP connect + Noise + Yamux (py-libp2p retries a refused port 3 times,
#: ~0.7 s, and its own dial timeout is far longer).
DIAL_TIMEOUT: Final = 10.0
#: Bound of opening one stream: Yamux SYN + multistream-select (py-libp2p's default: 30 s).
STREAM_OPEN_TIMEOUT: Final = 10.0
#: Bound of waiting for identify to finish with a peer.
IDENTIFY_TIMEOUT: Final = 10.0
# Bound of closing the host's connections and listeners on exit.
_CLOSE_TIMEOUT: Final = 5.0

#: A protocol handler: gets the py-libp2p stream, owns it until it returns.
StreamHandler = Callable[[Any], Awaitable[None]]

_log = logging.getLogger("dre.node.host")

# How many live hosts use each network in this process: the DHT protocol id is process-global
# (compat.set_dht_protocol), so hosts of two networks must not run side by side.
_live_networks: collections.Counter[str] = collections.Counter()


class HostHandle:
    """A running libp2p host, seen through strings. Created by :func:`open_host`."""

    def __init__(self, host: Any, network: str) -> None:
        #: The raw py-libp2p ``BasicHost``, for the node modules that build on it.
        self.host = host
        self.network = network
        self._peer_id = str(host.get_id())

    @property
    def peer_id(self) -> str:
        """Our peer ID (``12D3KooW…``)."""
        return self._peer_id

    @property
    def addrs(self) -> list[str]:
        """The addresses we listen on, each ending in ``/p2p/<peer_id>``, ready to dial.

        From the listeners (with the port the OS chose), not ``host.get_addrs()``: that one
        also lists addresses peers claim to observe, which nobody has checked.
        """
        return [f"{addr}/p2p/{self._peer_id}" for addr in self.host.get_transport_addrs()]

    def connected_peers(self) -> list[str]:
        """Peer IDs we have at least one open connection to."""
        return [str(p) for p in self.host.get_connected_peers()]

    def peer_addrs(self, peer_id: str) -> list[str]:
        """The addresses the peerstore knows for ``peer_id`` (without ``/p2p/``)."""
        try:
            addrs = self.host.get_peerstore().addrs(ID.from_base58(peer_id))
        except Exception:  # py-libp2p raises PeerStoreError for an unknown peer
            return []
        return [str(a) for a in addrs]

    async def connect(self, address: str) -> str:
        """Connect to the peer at ``address`` (a multiaddr ending in ``/p2p/<peer ID>``).

        Returns the peer ID. Reuses an open connection. The peer must prove that ID in the
        Noise handshake. Raises :class:`ValidationError` for a bad address and
        :class:`NetworkError` when no connection is up within :data:`DIAL_TIMEOUT` seconds
        (wrap the call in ``trio.move_on_after`` for a shorter bound).
        """
        timeout = DIAL_TIMEOUT
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as error:  # multiaddr raises several types for bad text
            raise ValidationError(
                f"invalid peer address {address!r}: expected /ip4/…/tcp/…/p2p/<peer ID> ({error})"
            ) from None
        if str(info.peer_id) == self._peer_id:
            raise ValidationError(f"{address} is this node's own address")
        # An explicit dial tries again even if this peer failed a moment ago (compat).
        compat.forget_dial_failure(self.host, info.peer_id)
        with trio.move_on_after(timeout) as scope:
            try:
                await self.host.connect(info)
            except trio.Cancelled:
                raise
            except Exception as error:
                raise NetworkError(f"cannot connect to {address}: {_reason(error)}") from error
        if scope.cancelled_caught:
            raise NetworkError(f"cannot connect to {address}: no answer within {timeout:g} s")
        return str(info.peer_id)

    def set_stream_handler(self, protocol_id: str, handler: StreamHandler) -> None:
        """Serve ``protocol_id`` with ``handler``.

        A handler that raises has its stream reset and the error logged: py-libp2p would let
        the exception tear down the peer's whole connection. Streams are closed when the
        handler returns (idempotent if it closed them itself).
        """

        async def guarded(stream: Any) -> None:
            try:
                await handler(stream)
            except Exception:
                _log.warning(
                    "handler for %s failed (peer %s); stream reset",
                    protocol_id,
                    _remote_peer(stream),
                    exc_info=True,
                )
                await _quietly(stream.reset)
                return
            await _quietly(stream.close)

        self.host.set_stream_handler(TProtocol(protocol_id), guarded)

    def remove_stream_handler(self, protocol_id: str) -> None:
        """Stop serving ``protocol_id`` (new streams for it are refused)."""
        self.host.remove_stream_handler(TProtocol(protocol_id))

    async def open_stream(self, peer_id: str, protocol_ids: Sequence[str]) -> Any:
        """A new stream to a peer we know an address of, speaking the first protocol it accepts.

        Dials if not connected; the whole call is bounded by :data:`STREAM_OPEN_TIMEOUT`. The
        returned py-libp2p stream has ``read``/``write``/``close_write``/``reset``; read it
        through :func:`dre.node.compat.read_some` and friends. Raises :class:`NetworkError`.
        """
        timeout = STREAM_OPEN_TIMEOUT
        if not protocol_ids:
            raise ValueError("open_stream needs at least one protocol id")
        try:
            peer = ID.from_base58(peer_id)
        except Exception:
            raise ValidationError(f"invalid peer ID {peer_id!r}") from None
        with trio.move_on_after(timeout) as scope:
            try:
                return await self.host.new_stream(peer, [TProtocol(p) for p in protocol_ids])
            except trio.Cancelled:
                raise
            except Exception as error:
                raise NetworkError(
                    f"cannot open {'/'.join(protocol_ids)} stream to {peer_id}: {_reason(error)}"
                ) from error
        assert scope.cancelled_caught
        raise NetworkError(
            f"cannot open {'/'.join(protocol_ids)} stream to {peer_id}: "
            f"no answer within {timeout:g} s"
        )

    async def wait_identified(self, peer_id: str) -> list[str]:
        """Wait until identify with ``peer_id`` is done; return the protocols it announced.

        FINDINGS 8: identify runs in the background after a connection is up, on both sides;
        ``connect()`` returning says nothing about it, so poll the peerstore. Raises
        :class:`NetworkError` after :data:`IDENTIFY_TIMEOUT` seconds.
        """
        timeout = IDENTIFY_TIMEOUT
        peer = ID.from_base58(peer_id)
        store = self.host.get_peerstore()
        with trio.move_on_after(timeout):
            delay = 0.005
            while True:
                if store.supports_protocols(peer, [str(IDENTIFY_PROTOCOL_ID)]):
                    return [str(p) for p in store.get_protocols(peer)]
                await trio.sleep(delay)
                delay = min(delay * 2, 0.1)
        raise NetworkError(f"identify with {peer_id} did not finish within {timeout:g} s")

    def __repr__(self) -> str:
        return f"HostHandle({self._peer_id}, network={self.network!r})"


@asynccontextmanager
async def open_host(
    seed: bytes, listen: Sequence[str] = DEFAULT_LISTEN, *, network: str
) -> AsyncIterator[HostHandle]:
    """Run a libp2p host with the Ed25519 identity of ``seed`` until the block exits.

    The peer ID equals ``PublisherKey.from_seed(seed).peer_id``. Security is Noise only (a
    plaintext, TLS or secio dialer is refused), the muxer Yamux only, and Kademlia speaks
    ``/dre/<network>/kad/1.0.0`` — process-global, so all hosts alive at once in one process
    must share ``network`` (:class:`ValidationError` otherwise).

    Exit is clean in either direction: the host's own nursery (FINDINGS 6) is entered and left
    here, inside this context, so a caller that enters several hosts and services in one
    ``AsyncExitStack`` (or nested ``async with``) leaves them in reverse order.
    """
    compat.validate_network_name(network)
    if not listen:
        raise ValidationError("a host needs at least one listen address")
    try:
        listen_addrs = [multiaddr.Multiaddr(a) for a in listen]
    except Exception as error:
        raise ValidationError(f"invalid listen address in {list(listen)!r}: {error}") from None
    other = [n for n, count in _live_networks.items() if count and n != network]
    if other:
        raise ValidationError(
            f"this process already runs a host on network {other[0]!r}; the DHT protocol id is "
            f"process-wide, so it cannot also run one on {network!r}"
        )
    compat.apply_patches()
    compat.set_dht_protocol(network)
    key_pair = compat.key_pair_from_seed(seed)
    host = new_host(
        key_pair=key_pair,
        sec_opt=compat.security_options(key_pair),
        muxer_opt=compat.muxer_options(),
        negotiate_timeout=math.ceil(STREAM_OPEN_TIMEOUT),
    )
    _live_networks[network] += 1
    started = False
    try:
        async with host.run(listen_addrs):
            started = True
            handle = HostHandle(host, network)
            _log.info("libp2p host %s listening on %s", handle.peer_id, handle.addrs)
            try:
                yield handle
            finally:
                # Cancels in-flight identify tasks (trio *system* tasks that would otherwise
                # outlive the host) and closes connections and listeners before host.run()
                # stops the network service. Shielded so a cancelled caller still cleans up;
                # bounded so a wedged peer cannot hold the exit.
                with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
                    scope.shield = True
                    await host.close()
    except OSError as error:
        if started:
            raise
        raise NetworkError(f"cannot listen on {list(listen)}: {error}") from error
    finally:
        _live_networks[network] -= 1


def _reason(error: BaseException) -> str:
    """One line from a py-libp2p exception and its causes (they nest two or three deep)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        text = str(current).strip() or type(current).__name__
        if text not in parts:
            parts.append(text)
        current = current.__cause__ or current.__context__
    return ": ".join(parts)


def _remote_peer(stream: Any) -> str:
    try:
        return str(stream.muxed_conn.peer_id)
    except Exception:
        return "?"


async def _quietly(action: Callable[[], Awaitable[None]]) -> None:
    """Run a best-effort cleanup (close/reset) whose failure changes nothing."""
    try:
        await action()
    except Exception:
        _log.debug("stream cleanup failed", exc_info=True)
