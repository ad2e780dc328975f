"""Everything quirky about py-libp2p 0.8.1, in one place.

The rest of ``dre.node`` builds on the names exported here and never reaches into py-libp2p's
module globals itself. Each workaround cites the numbered pitfall in ``shared/FINDINGS.md``
("py-libp2p 0.8.1") that was observed on this machine:

====  ========================================================================================
 1    Security: only Noise is offered and accepted (:func:`security_options`).
 2    Dial delay: the 250 ms happy-eyeballs head start is set to 0 (:func:`apply_patches`).
 3    Gossipsub: 1 s heartbeat, explicit degrees, queues of 32 raised, content-based message
      ids (:class:`GossipSettings`, :func:`content_message_id`, :func:`apply_patches`).
 4    Kad-DHT: ``protocol_prefix`` is ignored, so the protocol id is patched per network
      (:func:`set_dht_protocol`, process-global).
 5    Streams: ``read()`` raises ``StreamEOF`` instead of returning ``b""``
      (:func:`read_some`, :func:`read_exactly`, :func:`read_until_eof`, :func:`half_close`).
 6    ``host.run()`` opens a nursery: handled by :func:`dre.node.host.open_host`.
 7    Logging: libp2p's logger has no handler and does not propagate (:func:`configure_logging`).
 8    Identify completes in the background: :meth:`dre.node.host.HostHandle.wait_identified`.
 9    The wheel installs top-level ``examples``/``docs``/``interop``/``stubs``/``newsfragments``
      packages: never give one of our modules such a name (nothing to patch).
10    Throughput: write in chunks of 256 KiB-1 MiB (:data:`PREFERRED_WRITE_SIZE`).
====  ========================================================================================

Also found while writing this module (not in FINDINGS):

* ``Swarm`` keeps a 60 s *negative cache* of peers whose every address failed; any dial to such
  a peer fails at once with "recently failed all addresses". An explicit user dial should not be
  refused because of an earlier failure: :func:`forget_dial_failure`.
* ``new_host`` takes no ``retry_config``: a dial of a refused port is retried 3 times with
  backoff (~0.7 s) before it fails. Callers bound dials with their own timeout.
* ``RpcQueue``'s default size is bound at function definition, so patching
  ``rpc_queue.OutBoundQueueSize`` has no effect; the class is replaced in ``pubsub.pubsub``.
* Gossipsub's eclipse protection wants peers from 3 distinct IPs in a mesh; on loopback every
  peer shares one IP, so it is off in :data:`LOOPBACK_GOSSIP`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from typing import Any, Final

import libp2p.kad_dht.common
import libp2p.kad_dht.kad_dht
import libp2p.kad_dht.peer_routing
import libp2p.kad_dht.provider_store
import libp2p.kad_dht.value_store
import libp2p.network.swarm
import libp2p.pubsub.pubsub
import libp2p.pubsub.rpc_queue
from dre.protocol.errors import DreError, RemoteProtocolError, ValidationError
from libp2p.crypto.ed25519 import create_new_key_pair as _ed25519_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as _x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamClosed, StreamEOF, StreamError, StreamReset
from libp2p.pubsub.gossipsub import PROTOCOL_ID as MESHSUB_V10
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as MESHSUB_V11
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V12 as MESHSUB_V12
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

__all__ = [
    "DEFAULT_GOSSIP",
    "LOOPBACK_GOSSIP",
    "NOISE_PROTOCOL_ID",
    "PREFERRED_WRITE_SIZE",
    "YAMUX_PROTOCOL_ID",
    "GossipSettings",
    "NetworkError",
    "apply_patches",
    "configure_logging",
    "content_message_id",
    "current_dht_protocol",
    "dht_protocol_id",
    "forget_dial_failure",
    "half_close",
    "key_pair_from_seed",
    "make_pubsub",
    "muxer_options",
    "read_exactly",
    "read_some",
    "read_until_eof",
    "security_options",
    "set_dht_protocol",
    "validate_network_name",
]

#: Chunk size for bulk writes on one stream (FINDINGS 10: 64 KiB writes give 50-62 MB/s,
#: 256 KiB-1 MiB writes 91-101 MB/s over Noise+Yamux).
PREFERRED_WRITE_SIZE: Final = 256 * 1024

# Reads ask Yamux for at most this much at once: its frames carry 64 KiB, so larger requests
# only return what is buffered anyway, and a small request keeps one read's allocation bounded.
_READ_CHUNK: Final = 64 * 1024

# FINDINGS 3: subscription channels and per-peer send queues hold 32 messages and drop the rest
# silently (a burst of 100 publishes -> 16 % delivered). 4096 holds a 1000-publish burst with
# room for the other topics; memory is bounded by the pubsub max message size times this.
_QUEUE_SIZE: Final = 4096

# A network name becomes part of protocol ids and topic names (/dre/<network>/kad/1.0.0,
# dre/<network>/announce): keep it to characters that are safe in both and in file names.
_NETWORK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

_log = logging.getLogger("dre.node.compat")


class NetworkError(DreError):
    """A peer could not be reached in time, or a stream to it broke (reset, closed, timed out).

    Distinct from :class:`~dre.protocol.errors.RemoteProtocolError` (the peer answered, wrongly)
    and :class:`~dre.protocol.errors.IntegrityError` (the peer sent bad bytes).
    """


# --------------------------------------------------------------------------- patches


class _LargeRpcQueue(libp2p.pubsub.rpc_queue.RpcQueue):
    """``RpcQueue`` with a larger default size (FINDINGS 3).

    ``Pubsub`` creates each peer's queue as ``RpcQueue()``; the default argument was bound when
    py-libp2p defined the class, so only replacing the class name it looks up works.
    """

    def __init__(
        self,
        max_size: int = _QUEUE_SIZE,
        max_message_size: int = libp2p.pubsub.rpc_queue.DefaultMaxMessageSize,
    ) -> None:
        super().__init__(max_size=max_size, max_message_size=max_message_size)


def apply_patches() -> None:
    """Apply every module-global workaround once; later calls do nothing (idempotent).

    Called by :func:`dre.node.host.open_host`; call it yourself before building a libp2p object
    by other means (tests, simulations).
    """
    # The replaced RpcQueue doubles as the "already applied" flag (it is set last).
    if libp2p.pubsub.pubsub.RpcQueue is _LargeRpcQueue:  # type: ignore[attr-defined]
        return
    # FINDINGS 2: every dial waits 250 ms for the "primary" address even when there is only one
    # address; 0 brings a loopback connect from ~260 ms to 6-13 ms. We dial one TCP address per
    # peer, so racing addresses earlier costs nothing.
    libp2p.network.swarm._HAPPY_EYEBALLS_DELAY = 0.0
    # FINDINGS 3: both read at call time from the module's globals.
    libp2p.pubsub.pubsub.SUBSCRIPTION_CHANNEL_SIZE = _QUEUE_SIZE
    configure_logging()
    libp2p.pubsub.pubsub.RpcQueue = _LargeRpcQueue  # type: ignore[attr-defined]


def configure_logging(handler: logging.Handler | None = None, level: int = logging.WARNING) -> None:
    """Route py-libp2p's log records somewhere visible (FINDINGS 7). Idempotent.

    On import, py-libp2p gives its ``libp2p`` logger no handler and ``propagate = False``, so
    its warnings vanish. With ``handler`` they go there; without, they propagate to the root
    logger like ours do. ``libp2p.kad_dht.kad_dht`` warns on every normal stream close, so it
    is raised to ERROR. If ``LIBP2P_DEBUG`` is set in the environment, py-libp2p's own debug
    logging is left alone.
    """
    root = logging.getLogger("libp2p")
    if not os.environ.get("LIBP2P_DEBUG"):
        root.setLevel(level)
        if handler is None:
            root.propagate = True
        elif handler not in root.handlers:
            root.addHandler(handler)
    logging.getLogger("libp2p.kad_dht.kad_dht").setLevel(max(level, logging.ERROR))
    # The auto-connector forces its own logger to INFO at import and then logs two lines every
    # 10 s while the node has fewer than 50 connections (always, for us).
    logging.getLogger("libp2p.network.auto_connector").setLevel(max(level, logging.WARNING))
    # Normal peer-to-peer outcomes that py-libp2p logs at ERROR; callers get a NetworkError for
    # each, so the log line is demoted to DEBUG instead of alarming an operator.
    for name in _ROUTINE_ERRORS:
        named = logging.getLogger(name)
        if _demote_routine_errors not in named.filters:
            named.addFilter(_demote_routine_errors)


# logger -> message prefixes (as formatted) of ERROR records that are routine for a P2P node.
_ROUTINE_ERRORS: Final = {
    # BasicHost.new_stream: a peer answered "na" to a protocol it does not speak (multi-line).
    "libp2p.host.basic_host": ("Failed to open stream to peer",),
    # TCP dial of a peer that is offline or gone.
    "libp2p.transport.tcp.tcp": ("Failed to open TCP stream",),
}


def _demote_routine_errors(record: logging.LogRecord) -> bool:
    """Logging filter: turn a routine ERROR (see :data:`_ROUTINE_ERRORS`) into a DEBUG record."""
    prefixes = _ROUTINE_ERRORS.get(record.name, ())
    if record.levelno == logging.ERROR and record.getMessage().startswith(prefixes):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
    return True


# --------------------------------------------------------------------------- host options


def key_pair_from_seed(seed: bytes) -> KeyPair:
    """The libp2p Ed25519 key pair of a 32-byte seed (the same key PyNaCl derives)."""
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise ValidationError("an Ed25519 seed must be exactly 32 bytes")
    return _ed25519_key_pair(seed)


def security_options(key_pair: KeyPair) -> dict[TProtocol, Any]:
    """``sec_opt`` for ``new_host``: Noise and nothing else (FINDINGS 1).

    Without it py-libp2p offers /noise, /tls, /secio and /plaintext/2.0.0; over plaintext a
    dialer claimed another peer's ID and was accepted. The Noise static (X25519) key is fresh
    per host: it is authenticated by a signature of the Ed25519 identity, so it need not persist.
    """
    noise = NoiseTransport(key_pair, noise_privkey=_x25519_key_pair().private_key)
    return {NOISE_PROTOCOL_ID: noise}


def muxer_options() -> dict[TProtocol, Any]:
    """``muxer_opt`` for ``new_host``: Yamux only (FINDINGS: Mplex hangs on two-way bulk)."""
    return {TProtocol(YAMUX_PROTOCOL_ID): Yamux}


def forget_dial_failure(host: Any, peer_id: Any) -> None:
    """Lift the swarm's 60 s "recently failed" block on ``peer_id`` (py-libp2p ID).

    After a failed dial, the swarm refuses every dial of that peer for 60 s without trying. An
    explicit dial (the user names an address, a peer came back) must really try again.
    """
    cache = getattr(host.get_network(), "_negative_peer_cache", None)
    if cache is not None:
        cache.evict(str(peer_id))


# --------------------------------------------------------------------------- kad-dht


def validate_network_name(network: str) -> str:
    """``network`` if it is a valid network name (lowercase ``[a-z0-9-]``, 1-63 characters)."""
    if not isinstance(network, str) or not _NETWORK_NAME.fullmatch(network):
        raise ValidationError(
            f"invalid network name {network!r}: use 1-63 of a-z, 0-9 and '-', starting "
            "with a letter or digit"
        )
    return network


def dht_protocol_id(network: str) -> str:
    """The Kademlia protocol id of a network, e.g. ``/dre/main/kad/1.0.0``."""
    return f"/dre/{validate_network_name(network)}/kad/1.0.0"


_DHT_MODULES = (
    libp2p.kad_dht.common,
    libp2p.kad_dht.kad_dht,
    libp2p.kad_dht.peer_routing,
    libp2p.kad_dht.provider_store,
    libp2p.kad_dht.value_store,
)


def set_dht_protocol(network: str) -> str:
    """Make every ``KadDHT`` in this process speak ``/dre/<network>/kad/1.0.0``; return it.

    FINDINGS 4: ``KadDHT(protocol_prefix=...)`` is ignored and the id is always
    ``/ipfs/kad/1.0.0``, which would merge our DHT with any IPFS node that connects. The id is a
    module global imported by name into five modules, so all five are patched.

    **Process-global**: all DHTs in one process share one network; a KadDHT registers its
    stream handler when created and looks the id up at each request, so set this before
    creating one and do not change it while one runs (``open_host`` enforces this for hosts).
    Setting it again to the same network is a no-op.
    """
    protocol = TProtocol(dht_protocol_id(network))
    for module in _DHT_MODULES:
        module.PROTOCOL_ID = protocol  # type: ignore[attr-defined]
    return protocol


def current_dht_protocol() -> str:
    """The Kademlia protocol id in force in this process."""
    return str(libp2p.kad_dht.common.PROTOCOL_ID)


# --------------------------------------------------------------------------- gossipsub


def content_message_id(msg: Any) -> bytes:
    """Gossipsub message id = sha256 of the payload (raw 32-byte digest).

    FINDINGS 3: py-libp2p's default id is ``from + seqno`` and js-libp2p's differs again; a
    content id makes a republished announcement a duplicate everywhere. Peers of other
    implementations must use the same function (js: ``msgIdFn: m => sha256(m.data)``).
    """
    return hashlib.sha256(bytes(msg.data)).digest()


@dataclasses.dataclass(frozen=True, slots=True)
class GossipSettings:
    """Gossipsub parameters that differ from py-libp2p's defaults (FINDINGS 3)."""

    #: Mesh degree D, D_low, D_high (required arguments in py-libp2p; libp2p spec values).
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    #: Seconds between heartbeats; py-libp2p's default of 120 s leaves meshes unformed for
    #: minutes (int because py-libp2p's ``GossipSub`` annotates it so).
    heartbeat_interval: int = 1
    heartbeat_initial_delay: float = 0.1
    #: Spam protection counts every message per peer per topic, our own publishes included;
    #: the default 10/s drops a legitimate burst. Batch and pace publishes as well.
    max_messages_per_topic_per_second: float = 500.0
    #: Wants a mesh from >= 3 distinct IPs; off for loopback networks (one IP).
    eclipse_protection_enabled: bool = True
    #: Our messages are signed by our own protocol (manifests, records); libp2p's signature on
    #: the envelope is still required so a peer cannot relay under another's ``from``.
    strict_signing: bool = True
    #: Upper bound of one pubsub RPC frame accepted from a peer.
    max_inbound_rpc_size: int = 1024 * 1024

    def router_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``libp2p.pubsub.gossipsub.GossipSub`` (without ``protocols``)."""
        return {
            "degree": self.degree,
            "degree_low": self.degree_low,
            "degree_high": self.degree_high,
            "heartbeat_interval": self.heartbeat_interval,
            "heartbeat_initial_delay": self.heartbeat_initial_delay,
            "max_messages_per_topic_per_second": self.max_messages_per_topic_per_second,
            "eclipse_protection_enabled": self.eclipse_protection_enabled,
        }

    def pubsub_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``libp2p.pubsub.pubsub.Pubsub`` (without host and router)."""
        return {
            "msg_id_constructor": content_message_id,
            "strict_signing": self.strict_signing,
            "max_inbound_rpc_size": self.max_inbound_rpc_size,
        }


# meshsub 1.3+ (extensions, v2.0 adaptive gossip) exist only in py-libp2p; js-libp2p 2.x
# speaks 1.2 / 1.1 / 1.0, the versions interop was measured with (FINDINGS).
_MESHSUB_PROTOCOLS: Final = (MESHSUB_V12, MESHSUB_V11, MESHSUB_V10)

DEFAULT_GOSSIP: Final = GossipSettings()
LOOPBACK_GOSSIP: Final = GossipSettings(eclipse_protection_enabled=False)


def make_pubsub(
    host: Any, settings: GossipSettings = DEFAULT_GOSSIP, protocols: Sequence[str] = ()
) -> tuple[Any, Any]:
    """``(pubsub, router)`` for ``host``, not started.

    Start them inside the host's lifetime, router after pubsub, and exit in reverse order::

        async with background_trio_service(pubsub), background_trio_service(router):
            await pubsub.wait_until_ready()

    ``protocols`` defaults to meshsub 1.2, 1.1 and 1.0 (what js-libp2p 2.x speaks).
    """
    apply_patches()
    ids = [TProtocol(p) for p in protocols] if protocols else list(_MESHSUB_PROTOCOLS)
    router = GossipSub(protocols=ids, **settings.router_kwargs())
    pubsub = Pubsub(host, router, **settings.pubsub_kwargs())
    return pubsub, router


# --------------------------------------------------------------------------- streams


async def read_some(stream: Any, max_bytes: int = _READ_CHUNK) -> bytes:
    """Up to ``max_bytes`` (at least 1) from ``stream``; ``b""`` at end of stream.

    FINDINGS 5: py-libp2p raises ``StreamEOF`` at EOF where trio returns ``b""``; this gives
    the trio convention. A reset (which py-libp2p's Yamux also reports as ``StreamEOF``) or
    otherwise broken stream raises :class:`NetworkError`.
    """
    if max_bytes < 1:
        raise ValueError("max_bytes must be at least 1")
    try:
        data = await stream.read(max_bytes)
    except StreamEOF:
        # py-libp2p's Yamux reports a peer's RST as EOF on read (StreamReset only on write):
        # without this check a response cut short by a reset would pass as complete.
        if getattr(getattr(stream, "muxed_stream", None), "reset_received", False) is True:
            raise NetworkError("stream reset by peer") from None
        return b""
    except (StreamReset, StreamClosed, StreamError) as error:
        raise NetworkError(f"stream broken: {type(error).__name__} {error}".rstrip()) from error
    return bytes(data)


async def read_exactly(stream: Any, n: int) -> bytes:
    """Exactly ``n`` bytes; :class:`RemoteProtocolError` if the stream ends before."""
    if n < 0:
        raise ValueError("n must not be negative")
    parts: list[bytes] = []
    remaining = n
    while remaining:
        chunk = await read_some(stream, min(remaining, _READ_CHUNK))
        if not chunk:
            raise RemoteProtocolError(f"stream ended after {n - remaining} of {n} expected bytes")
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


async def read_until_eof(stream: Any, limit: int) -> bytes:
    """Everything up to the peer's half-close, at most ``limit`` bytes.

    Raises :class:`RemoteProtocolError` as soon as more than ``limit`` bytes arrive (the rest is
    not read: a peer cannot make us buffer without bound).
    """
    if limit < 0:
        raise ValueError("limit must not be negative")
    parts: list[bytes] = []
    total = 0
    while True:
        # Ask for one byte beyond the limit so an exactly-full stream still ends cleanly.
        chunk = await read_some(stream, min(limit - total + 1, _READ_CHUNK))
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > limit:
            raise RemoteProtocolError(f"peer sent more than the limit of {limit} bytes")
        parts.append(chunk)


async def half_close(stream: Any) -> None:
    """Close our sending side; the peer reads EOF, we can still read (FINDINGS 5).

    ``NetStream.close()`` marks both directions closed and drops the stream from the swarm's
    tracking (and closes both on QUIC); ``close_write()`` is the half-close.
    A stream the peer already reset raises :class:`NetworkError`.
    """
    try:
        await stream.close_write()
    except (StreamReset, StreamClosed, StreamError) as error:
        raise NetworkError(f"stream broken: {type(error).__name__} {error}".rstrip()) from error
