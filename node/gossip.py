"""Gossip announcements of signed records on per-network gossipsub topics.

Topics (``<network>`` is a network name, :func:`dre.node.compat.validate_network_name`):

=============================  ============================================================
``dre/<network>/announce``      envelopes of manifests (``dre/manifest/1``) and scope records
                                (``dre/scope/1``)
``dre/<network>/attest``        envelopes of attestations (``dre/attestation/1``)
=============================  ============================================================

A gossip message is exactly the bytes of one signed envelope block (DAG-CBOR); its CID is
``cid_for(data, DAG_CBOR)``, so nothing but the bytes travels. The gossipsub message id is the
sha256 of those bytes (:func:`dre.node.compat.content_message_id`): the same record announced
twice, by anyone, is one message, and a re-announcement within the seen-cache TTL (120 s) is a
no-op everywhere.

Validation happens in a validator registered with py-libp2p's pubsub, which runs *before* a
message is delivered or forwarded, so spam stops at the first honest hop. A message is rejected
when it is larger than :data:`MAX_MESSAGE_BYTES`, when :func:`~dre.protocol.records.open_record`
rejects it (bad hash, encoding, envelope or signature), when its record kind does not belong on
its topic, or when the node's ``authorize(record, signer)`` callback says no (or raises).

py-libp2p quirks handled here (see ``shared/FINDINGS.md`` pitfall 3):

* Validators also run on our own ``publish()`` and a rejected message is dropped *silently*
  (``publish`` returns normally): :meth:`Gossip.publish` runs the same checks first and raises
  :class:`GossipRejected`; if the record is still dropped (its authorization changed in
  between), that is counted in :attr:`GossipStats.dropped_own`.
* Spam protection counts our own publishes too (``GossipSettings.max_messages_per_topic_per_
  second`` per peer per topic; excess messages are neither sent nor forwarded, silently), and
  per-peer send queues are bounded (compat raises them from 32 to 4096; a full queue drops
  silently). The :class:`Announcer` therefore queues publishes and sends them in batches paced
  below the spam limit and only while every peer's send queue has room.
* Pubsub caches each message id's validation result (success *and* failure) for 300 s. A record
  rejected because the node could not yet authorize it (its scope record had not arrived) is
  rejected again from that cache if re-announced within 5 minutes; anti-entropy sync, not
  gossip, is what catches such a record up.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from dre.protocol.cid import DAG_CBOR, Block, cid_for
from dre.protocol.errors import DreError, IntegrityError
from dre.protocol.records import (
    ATTESTATION,
    MANIFEST,
    MAX_RECORD_BYTES,
    SCOPE,
    OpenedRecord,
    Record,
    open_record,
)
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

from . import compat

__all__ = [
    "ANNOUNCE",
    "ATTEST",
    "MAX_MESSAGE_BYTES",
    "TOPIC_KINDS",
    "Accepted",
    "Announcer",
    "Authorize",
    "Gossip",
    "GossipRejected",
    "GossipStats",
    "RecordValidator",
    "channel_for",
    "open_gossip",
    "topic_name",
]

_log = logging.getLogger("dre.node.gossip")

#: Channel names; the topic is ``dre/<network>/<channel>``.
ANNOUNCE: Final = "announce"
ATTEST: Final = "attest"
#: Which record kinds may travel on which channel.
TOPIC_KINDS: Final[dict[str, frozenset[str]]] = {
    ANNOUNCE: frozenset({MANIFEST, SCOPE}),
    ATTEST: frozenset({ATTESTATION}),
}
#: Largest message accepted (256 KiB): any valid envelope fits (records.MAX_RECORD_BYTES).
MAX_MESSAGE_BYTES: Final = 256 * 1024
assert MAX_RECORD_BYTES <= MAX_MESSAGE_BYTES

#: ``authorize(record, signer) -> bool``: may ``signer`` publish this record? Called for every
#: kind (manifests: :func:`dre.protocol.packages.check_publisher`; scope records:
#: ``check_scope_update``; return True for kinds the node does not restrict). It runs inside
#: pubsub's message handling for every message, so it must be quick and must not block.
Authorize = Callable[[Record, str], bool]

# Opened records kept between the validator and the delivery task, so a record's signature is
# verified once per node, not twice. Bounded: a validated message may never reach delivery
# (blacklisted, or a duplicate racing it), and then its entry ages out.
_OPENED_CACHE_SIZE: Final = 8192
# Buffer between pubsub's subscription channel and the node's consumer. Pubsub's own channel
# (raised to 4096 by compat) drops when full; draining it into this one at once means a slow
# consumer is counted (GossipStats.dropped_delivery) instead of losing messages silently.
_DELIVERY_BUFFER: Final = 8192
# Publishes waiting in the Announcer before publish() applies back-pressure to its caller.
_ANNOUNCER_BUFFER: Final = 16384


def topic_name(network: str, channel: str) -> str:
    """``dre/<network>/<channel>`` for a valid network name and a known channel."""
    if channel not in TOPIC_KINDS:
        raise ValueError(f"unknown gossip channel {channel!r}")
    return f"dre/{compat.validate_network_name(network)}/{channel}"


def channel_for(kind: str) -> str:
    """The channel a record kind travels on."""
    for channel, kinds in TOPIC_KINDS.items():
        if kind in kinds:
            return channel
    raise GossipRejected("wrong-topic", f"no gossip channel carries {kind!r} records")


class GossipRejected(DreError):
    """A record that gossip validation refuses (the reason is the message).

    ``reason`` is a short machine-readable code: ``oversized``, ``invalid``, ``wrong-topic``,
    ``unauthorized``, ``unknown-topic``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Accepted:
    """A record received by gossip that passed validation."""

    #: Channel (``announce`` or ``attest``) and full topic it came on.
    channel: str
    topic: str
    #: The envelope block (store it as is: its CID is the record's identity).
    block: Block
    kind: str
    record: Record
    signer: str
    #: Base58 peer ID of the node that originated the gossip message (not necessarily the
    #: record's signer: any node may re-announce a record it holds).
    origin: str


@dataclass(slots=True)
class GossipStats:
    """Counters for diagnostics, tests and metrics."""

    #: Messages rejected by the validator, by reason (own publishes included).
    rejected: Counter[str] = field(default_factory=Counter)
    #: Messages accepted from other peers and handed to the consumer.
    delivered: int = 0
    #: Accepted messages dropped because the consumer did not keep up.
    dropped_delivery: int = 0
    #: Publishes handed to pubsub by the announcer.
    published: int = 0
    #: Own publishes that pubsub dropped silently (validator said no at publish time).
    dropped_own: int = 0
    #: Times the announcer waited for a peer's send queue to drain.
    queue_waits: int = 0


class RecordValidator:
    """The gossip validation rules of one network, usable with and without pubsub.

    :meth:`check` raises :class:`GossipRejected`; :meth:`for_topic` gives the
    ``(forwarder, msg) -> bool`` function py-libp2p's ``set_topic_validator`` wants.
    """

    def __init__(self, network: str, authorize: Authorize, stats: GossipStats | None = None):
        self.network = compat.validate_network_name(network)
        self.authorize = authorize
        self.stats = stats if stats is not None else GossipStats()
        self._opened: OrderedDict[bytes, OpenedRecord] = OrderedDict()

    def check(self, channel: str, data: bytes) -> OpenedRecord:
        """The verified record ``data`` carries, if it may travel on ``channel``."""
        kinds = TOPIC_KINDS.get(channel)
        if kinds is None:
            raise GossipRejected("unknown-topic", f"no gossip channel {channel!r}")
        opened = self._open(data)
        if opened.kind not in kinds:
            raise GossipRejected(
                "wrong-topic", f"a {opened.kind} record does not belong on {channel}"
            )
        self._authorize(opened)
        return opened

    def check_own(self, block: Block) -> tuple[str, OpenedRecord]:
        """``(channel, record)`` for a block we are about to publish, checked as peers will."""
        if cid_for(block.data, DAG_CBOR) != block.cid:
            raise GossipRejected("invalid", f"{block.cid} is not the DAG-CBOR CID of the data")
        opened = self._open(block.data)
        channel = channel_for(opened.kind)
        self._authorize(opened)
        return channel, opened

    @staticmethod
    def _open(data: bytes) -> OpenedRecord:
        # Size first: an oversized message is refused before any hashing or decoding.
        if len(data) > MAX_MESSAGE_BYTES:
            raise GossipRejected(
                "oversized", f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}"
            )
        try:
            return open_record(Block(cid_for(data, DAG_CBOR), data))
        except IntegrityError as exc:
            raise GossipRejected("invalid", str(exc)) from None

    def _authorize(self, opened: OpenedRecord) -> None:
        try:
            allowed = self.authorize(opened.record, opened.signer)
        except Exception as exc:
            # A failing policy must not let a record through, nor crash pubsub's handler task.
            _log.warning("authorize() raised %s: treating the record as unauthorized", exc)
            allowed = False
        if not allowed:
            raise GossipRejected(
                "unauthorized", f"{opened.signer} may not publish this {opened.kind} record"
            )

    def for_topic(self, channel: str) -> Callable[[Any, Any], bool]:
        """A synchronous py-libp2p topic validator for ``channel``."""

        def validate(forwarder: Any, msg: Any) -> bool:
            data = bytes(msg.data)
            try:
                opened = self.check(channel, data)
            except GossipRejected as exc:
                self.stats.rejected[exc.reason] += 1
                _log.debug("gossip from %s rejected on %s: %s", forwarder, channel, exc)
                return False
            self._remember(compat.content_message_id(msg), opened)
            return True

        return validate

    def _remember(self, msg_id: bytes, opened: OpenedRecord) -> None:
        self._opened[msg_id] = opened
        if len(self._opened) > _OPENED_CACHE_SIZE:
            self._opened.popitem(last=False)

    def take_opened(self, channel: str, msg_id: bytes, data: bytes) -> OpenedRecord:
        """The record the validator opened for ``msg_id`` (re-opened if it aged out)."""
        opened = self._opened.pop(msg_id, None)
        return opened if opened is not None else self.check(channel, data)


class Announcer:
    """Queues publishes and sends them in paced batches so that none is dropped.

    ``publish`` only validates and enqueues (back-pressure when :data:`_ANNOUNCER_BUFFER`
    publishes wait); :meth:`run` drains the queue, taking up to ``batch_size`` records at a time
    and sending each one when (a) the token bucket allows it -- at most ``rate`` messages per
    second per topic with bursts of ``burst``, which together stay under the spam limit counted
    by every peer over any one-second window -- and (b) no connected peer's send queue is more
    than half full.
    """

    def __init__(
        self,
        pubsub: Any,
        network: str,
        validator: RecordValidator,
        *,
        rate: float,
        burst: int,
        batch_size: int = 64,
        queue_wait: float = 0.005,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._pubsub = pubsub
        self._validator = validator
        self.stats = validator.stats
        self._topics = {channel: topic_name(network, channel) for channel in TOPIC_KINDS}
        self._rate = rate
        self._burst = burst
        self._batch_size = batch_size
        self._queue_wait = queue_wait
        self._send, self._receive = trio.open_memory_channel[tuple[str, bytes]](_ANNOUNCER_BUFFER)
        # One token bucket per topic: the spam limit is counted per topic.
        self._tokens = dict.fromkeys(self._topics.values(), float(burst))
        self._stamp = dict.fromkeys(self._topics.values(), time.monotonic())
        self._idle = trio.Event()
        self._idle.set()
        self._pending = 0

    async def publish(self, block: Block) -> OpenedRecord:
        """Validate ``block`` like a receiving peer would and queue it for sending.

        Raises :class:`GossipRejected` (reason as for received messages) instead of letting
        pubsub drop it silently; ``block.cid`` must be the DAG-CBOR CID of ``block.data``.
        Returns the opened record. Waits only when many publishes are already queued.
        """
        channel, opened = self._validator.check_own(block)
        await self._send.send((self._topics[channel], block.data))
        # Counted only once queued (a cancelled send queued nothing). No checkpoint lies between
        # the send and this, so the sender task cannot have taken the item out yet.
        if self._pending == 0:
            self._idle = trio.Event()
        self._pending += 1
        return opened

    async def wait_idle(self) -> None:
        """Return once every queued publish has been handed to pubsub."""
        if self._pending:
            await self._idle.wait()

    async def run(self) -> None:
        """Send queued publishes forever (run it in the gossip nursery)."""
        async with self._receive:
            while True:
                batch = [await self._receive.receive()]
                while len(batch) < self._batch_size:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                for topic, data in batch:
                    await self._take_token(topic)
                    await self._wait_for_queue_room()
                    await self._pubsub.publish(topic, data)
                    self.stats.published += 1
                    # Pubsub marks a message seen only after its validators passed; a message
                    # that is not seen now was dropped without a word.
                    msg_id = compat.content_message_id(_Data(data))
                    if not self._pubsub.seen_messages.has(msg_id):
                        self.stats.dropped_own += 1
                        _log.warning("own gossip message on %s was dropped by pubsub", topic)
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()

    async def _take_token(self, topic: str) -> None:
        now = time.monotonic()
        tokens = min(self._burst, self._tokens[topic] + (now - self._stamp[topic]) * self._rate)
        if tokens < 1:
            # Sleep exactly until one token has accrued; it is spent at once.
            await trio.sleep((1 - tokens) / self._rate)
            now = time.monotonic()
            tokens = 1.0
        self._tokens[topic] = tokens - 1
        self._stamp[topic] = now

    async def _wait_for_queue_room(self) -> None:
        # Each peer's outbound RpcQueue rejects (drops) RPCs when full. Keep every queue at most
        # half full so messages we forward for others in the meantime still fit.
        while True:
            queues = tuple(self._pubsub.peer_queues.values())
            if all(len(q) < _queue_capacity(q) // 2 for q in queues):
                return
            self.stats.queue_waits += 1
            await trio.sleep(self._queue_wait)


class _Data:
    """Just enough of a pubsub message for :func:`compat.content_message_id`."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _queue_capacity(queue: Any) -> int:
    # RpcQueue wraps a PriorityQueue holding max_size; fall back to py-libp2p's default of 32.
    inner = getattr(queue, "_queue", None)
    return int(getattr(inner, "max_size", 32))


class Gossip:
    """A running gossip service of one network (from :func:`open_gossip`).

    ``async for item in gossip.accepted`` yields every :class:`Accepted` record received from
    other peers (own publishes are not echoed back).
    """

    def __init__(
        self,
        network: str,
        pubsub: Any,
        validator: RecordValidator,
        announcer: Announcer,
        accepted: trio.MemoryReceiveChannel[Accepted],
    ) -> None:
        self.network = network
        self.pubsub = pubsub
        self.validator = validator
        self.announcer = announcer
        self.accepted = accepted
        self.stats = validator.stats
        self.topics = {channel: topic_name(network, channel) for channel in TOPIC_KINDS}

    async def publish(self, block: Block) -> OpenedRecord:
        """Announce a signed envelope block on its topic (see :meth:`Announcer.publish`)."""
        return await self.announcer.publish(block)

    def subscribed_peers(self, channel: str = ANNOUNCE) -> set[str]:
        """Base58 IDs of the peers known to be subscribed to ``channel``'s topic."""
        peers = self.pubsub.peer_topics.get(self.topics[channel], ())
        return {str(peer) for peer in peers}

    async def wait_for_subscriber(self, peer_id: str, channel: str = ANNOUNCE) -> None:
        """Wait until ``peer_id`` has subscribed to ``channel``'s topic (at most 10 s).

        Publishing before a newly connected peer's subscription arrived may miss it (py-libp2p
        queues such messages only for a while); use this where that matters, e.g. in tests.
        Raises ``trio.TooSlowError`` after 10 s.
        """
        await self.pubsub.wait_for_subscription(
            ID.from_base58(peer_id), self.topics[channel], timeout=10.0
        )


@asynccontextmanager
async def open_gossip(
    host: Any,
    network: str,
    *,
    authorize: Authorize,
    settings: compat.GossipSettings = compat.DEFAULT_GOSSIP,
) -> AsyncIterator[Gossip]:
    """Start gossipsub on a running ``host`` (raw py-libp2p host) and join both topics.

    Must be entered inside the host's lifetime and exited before it (strict nesting, FINDINGS
    6). The announcer paces at 60 % of ``settings.max_messages_per_topic_per_second`` with bursts
    of 20 % of it, so at most 80 % of the limit falls in any one-second window.
    """
    network = compat.validate_network_name(network)
    pubsub, router = compat.make_pubsub(host, settings)
    stats = GossipStats()
    validator = RecordValidator(network, authorize, stats)
    limit = settings.max_messages_per_topic_per_second
    announcer = Announcer(
        pubsub,
        network,
        validator,
        rate=0.6 * limit,
        burst=max(1, math.floor(0.2 * limit)),
    )
    deliver_send, deliver_receive = trio.open_memory_channel[Accepted](_DELIVERY_BUFFER)
    my_id = host.get_id()
    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        subscriptions = []
        for channel in TOPIC_KINDS:
            topic = topic_name(network, channel)
            # Registered before subscribing, so no message is ever accepted unchecked.
            pubsub.set_topic_validator(topic, validator.for_topic(channel), False)
            subscriptions.append((channel, topic, await pubsub.subscribe(topic)))

        async def drain(channel: str, topic: str, subscription: Any) -> None:
            async for msg in subscription:
                if bytes(msg.from_id) == my_id.to_bytes():
                    continue  # our own publish, echoed to our own subscription
                data = bytes(msg.data)
                try:
                    opened = validator.take_opened(channel, compat.content_message_id(msg), data)
                except GossipRejected:  # authorization changed since validation
                    continue
                item = Accepted(
                    channel=channel,
                    topic=topic,
                    block=Block(cid_for(data, DAG_CBOR), data),
                    kind=opened.kind,
                    record=opened.record,
                    signer=opened.signer,
                    origin=_peer_text(msg.from_id),
                )
                try:
                    deliver_send.send_nowait(item)
                    stats.delivered += 1
                except trio.WouldBlock:
                    stats.dropped_delivery += 1
                    _log.warning("gossip consumer is behind: dropped %s", item.block.cid)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run)
            for channel, topic, subscription in subscriptions:
                nursery.start_soon(drain, channel, topic, subscription)
            try:
                yield Gossip(network, pubsub, validator, announcer, deliver_receive)
            finally:
                nursery.cancel_scope.cancel()
                deliver_send.close()


def _peer_text(raw: bytes) -> str:
    try:
        return ID(bytes(raw)).to_base58()
    except Exception:
        return bytes(raw).hex()
