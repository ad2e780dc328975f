"""The libp2p host and the py-libp2p compatibility layer, over real loopback TCP.

Each test runs whole hosts in one ``trio.run``; the file takes a few seconds.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import SimpleNamespace
from typing import Any

import libp2p.network.swarm
import libp2p.pubsub.pubsub
import multiaddr
import pytest
import trio
from dre.node import compat
from dre.node.host import DIAL_TIMEOUT, HostHandle, NetworkError, open_host
from dre.protocol.errors import RemoteProtocolError, ValidationError
from dre.protocol.keys import PublisherKey
from libp2p import new_host
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

NET = "hosttest"
ECHO = "/dre/hosttest/echo/1.0.0"
SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
SEED_C = hashlib.sha256(b"c").digest()


def _addr_pattern(peer_id: str) -> re.Pattern[str]:
    return re.compile(rf"/ip4/127\.0\.0\.1/tcp/\d+/p2p/{peer_id}")


async def echo_handler(stream: Any) -> None:
    """Read to the peer's half-close (bounded), send it back, half-close."""
    data = await compat.read_until_eof(stream, limit=1 << 20)
    await stream.write(data)
    await compat.half_close(stream)


@asynccontextmanager
async def two_hosts() -> AsyncIterator[tuple[HostHandle, HostHandle]]:
    async with open_host(SEED_A, network=NET) as a, open_host(SEED_B, network=NET) as b:
        yield a, b


def _chain_text(error: BaseException) -> str:
    """The messages of an exception and of everything it was raised from."""
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None and len(texts) < 10:
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    return " | ".join(texts)


async def _free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


# ------------------------------------------------------------------ identity and addresses


@pytest.mark.trio
async def test_peer_id_is_the_publisher_key_of_the_seed() -> None:
    async with open_host(SEED_A, network=NET) as host:
        assert host.peer_id == PublisherKey.from_seed(SEED_A).peer_id
        assert host.peer_id.startswith("12D3KooW")
        assert host.addrs, "listening on at least one address"
        for addr in host.addrs:
            assert _addr_pattern(host.peer_id).fullmatch(addr), addr
            assert not addr.endswith("/tcp/0/p2p/" + host.peer_id)  # the OS-chosen port
        # the private DHT id of this network is in force (FINDINGS 4)
        assert compat.current_dht_protocol() == "/dre/hosttest/kad/1.0.0"


def test_bad_seed_and_network_are_validation_errors() -> None:
    async def main(seed: bytes, network: str) -> None:
        async with open_host(seed, network=network):
            pass

    with pytest.raises(ValidationError):
        trio.run(main, b"short", NET)
    with pytest.raises(ValidationError):
        trio.run(main, SEED_A, "Bad/Name")


@pytest.mark.trio
async def test_hosts_of_two_networks_cannot_share_a_process() -> None:
    # The DHT protocol id is process-global (compat.set_dht_protocol).
    async with open_host(SEED_A, network=NET):
        with pytest.raises(ValidationError, match="process"):
            async with open_host(SEED_B, network="othernet"):
                pass  # pragma: no cover
        assert compat.current_dht_protocol() == "/dre/hosttest/kad/1.0.0"


# ------------------------------------------------------------------ connect, identify, streams


@pytest.mark.trio
async def test_connect_identify_and_echo_with_half_close() -> None:
    async with two_hosts() as (a, b):
        b.set_stream_handler(ECHO, echo_handler)
        started = time.perf_counter()
        assert await a.connect(b.addrs[0]) == b.peer_id
        # FINDINGS 2: no 250 ms happy-eyeballs wait on a single address
        assert time.perf_counter() - started < 0.2
        assert a.connected_peers() == [b.peer_id]

        # FINDINGS 8: identify finishes in the background, on both sides
        protocols_of_b = await a.wait_identified(b.peer_id)
        assert ECHO in protocols_of_b
        assert "/ipfs/id/1.0.0" in await b.wait_identified(a.peer_id)
        assert b.connected_peers() == [a.peer_id]

        payload = hashlib.sha256(b"x").digest() * 10_000  # 320 kB: several Yamux frames
        stream = await a.open_stream(b.peer_id, ["/dre/hosttest/nope/1.0.0", ECHO])
        assert stream.get_protocol() == ECHO
        await stream.write(payload)
        await compat.half_close(stream)  # the handler reads to EOF, then answers
        assert await compat.read_until_eof(stream, limit=len(payload)) == payload
        # and EOF stays EOF (b"", never StreamEOF: FINDINGS 5)
        assert await compat.read_some(stream) == b""

        # a second connect reuses the connection
        assert await a.connect(b.addrs[0]) == b.peer_id


@pytest.mark.trio
async def test_unknown_protocol_and_failing_handler_leave_the_connection_up() -> None:
    async def broken(stream: Any) -> None:
        await compat.read_exactly(stream, 4)
        raise RuntimeError("handler bug")

    async with two_hosts() as (a, b):
        b.set_stream_handler("/dre/hosttest/broken/1.0.0", broken)
        b.set_stream_handler(ECHO, echo_handler)
        await a.connect(b.addrs[0])
        with pytest.raises(NetworkError, match="stream"):
            await a.open_stream(b.peer_id, ["/dre/hosttest/unknown/1.0.0"])

        stream = await a.open_stream(b.peer_id, ["/dre/hosttest/broken/1.0.0"])
        await stream.write(b"ping")
        # reset by the guard; py-libp2p reads a reset as EOF, compat tells them apart
        with pytest.raises(NetworkError, match="reset"):
            await compat.read_until_eof(stream, limit=100)

        stream = await a.open_stream(b.peer_id, [ECHO])  # same connection, still fine
        await stream.write(b"still here")
        await compat.half_close(stream)
        assert await compat.read_until_eof(stream, limit=100) == b"still here"
        assert a.connected_peers() == [b.peer_id]


@pytest.mark.trio
async def test_read_until_eof_enforces_its_limit_on_a_real_stream() -> None:
    async def flood(stream: Any) -> None:
        await stream.write(b"x" * 5000)
        await compat.half_close(stream)

    async with two_hosts() as (a, b):
        b.set_stream_handler("/dre/hosttest/flood/1.0.0", flood)
        await a.connect(b.addrs[0])
        stream = await a.open_stream(b.peer_id, ["/dre/hosttest/flood/1.0.0"])
        with pytest.raises(RemoteProtocolError, match="limit of 4999"):
            await compat.read_until_eof(stream, limit=4999)
        stream = await a.open_stream(b.peer_id, ["/dre/hosttest/flood/1.0.0"])
        assert len(await compat.read_until_eof(stream, limit=5000)) == 5000  # exactly full


# ------------------------------------------------------------------ security (FINDINGS 1)


def _plaintext_only_host(seed: bytes) -> Any:
    """A py-libp2p host that offers nothing but /plaintext/2.0.0 (the pitfall's attacker)."""
    compat.apply_patches()
    key_pair = compat.key_pair_from_seed(seed)
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)},
        muxer_opt=compat.muxer_options(),
    )


@pytest.mark.trio
async def test_plaintext_dialer_is_refused() -> None:
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    plain = _plaintext_only_host(SEED_C)
    async with open_host(SEED_A, network=NET) as ours, plain.run(listen):
        target = info_from_p2p_addr(multiaddr.Multiaddr(ours.addrs[0]))
        with trio.fail_after(DIAL_TIMEOUT), pytest.raises(Exception) as refused:
            await plain.connect(target)
        assert "failed to negotiate the secure protocol" in _chain_text(refused.value)
        assert plain.get_connected_peers() == []
        await trio.sleep(0.05)
        assert ours.connected_peers() == []


@pytest.mark.trio
async def test_the_default_py_libp2p_host_would_accept_that_plaintext_dialer() -> None:
    # The reason for compat.security_options: with py-libp2p's default sec_opt the same
    # plaintext-only dialer gets an unencrypted connection. If this starts failing, py-libp2p
    # stopped offering plaintext by default; the test above must still pass.
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    compat.apply_patches()
    default_host = new_host(key_pair=compat.key_pair_from_seed(SEED_B))
    plain = _plaintext_only_host(SEED_C)
    async with default_host.run(listen), plain.run(listen):
        await plain.connect(info_from_p2p_addr(default_host.get_addrs()[0]))
        assert default_host.get_id() in plain.get_connected_peers()
        await plain.close()
        await default_host.close()


# ------------------------------------------------------------------ failures and clean exits


@pytest.mark.trio
async def test_dial_of_a_closed_port_fails_quickly() -> None:
    port = await _free_port()
    peer = PublisherKey.from_seed(SEED_B).peer_id
    async with open_host(SEED_A, network=NET) as a:
        started = time.perf_counter()
        with pytest.raises(NetworkError, match="cannot connect"):
            await a.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")
        assert time.perf_counter() - started < DIAL_TIMEOUT
        with pytest.raises(ValidationError):
            await a.connect(f"/ip4/127.0.0.1/tcp/{port}")  # no /p2p/ part
        with pytest.raises(ValidationError):
            await a.connect(a.addrs[0])  # ourselves


@pytest.mark.trio
async def test_peer_that_comes_back_can_be_dialed_again_at_once() -> None:
    # py-libp2p blocks a peer for 60 s after a failed dial; an explicit connect lifts that.
    async with open_host(SEED_A, network=NET) as a:
        async with open_host(SEED_B, network=NET) as b:
            b_addr = b.addrs[0]
        with pytest.raises(NetworkError):  # b is gone: its port is closed after the exit
            await a.connect(b_addr)
        listen = b_addr.rsplit("/p2p/", 1)[0]
        async with open_host(SEED_B, [listen], network=NET) as b_again:
            assert b_again.addrs == [b_addr]
            assert await a.connect(b_addr) == b_again.peer_id


@pytest.mark.trio
async def test_exits_are_clean_and_leave_no_tasks_behind() -> None:
    await trio.sleep(0.05)
    baseline = trio.lowlevel.current_statistics().tasks_living
    for _ in range(2):
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(open_host(SEED_A, network=NET))
            b = await stack.enter_async_context(open_host(SEED_B, network=NET))
            b.set_stream_handler(ECHO, echo_handler)
            await a.connect(b.addrs[0])
            await a.wait_identified(b.peer_id)
            await b.wait_identified(a.peer_id)
            stream = await a.open_stream(b.peer_id, [ECHO])
            await stream.write(b"bye")
            await compat.half_close(stream)
            assert await compat.read_until_eof(stream, limit=10) == b"bye"
        # hosts left by cancellation, while connected, also exit cleanly (shielded close)
        with trio.move_on_after(0.3) as scope:
            async with open_host(SEED_A, network=NET) as c, open_host(SEED_B, network=NET) as d:
                await c.connect(d.addrs[0])
                await trio.sleep_forever()
        assert scope.cancelled_caught
    await trio.sleep(0.1)
    assert trio.lowlevel.current_statistics().tasks_living <= baseline


# ------------------------------------------------------------------ stream helpers, no network


class _FakeStream:
    """Just the read/close_write surface of a py-libp2p stream."""

    def __init__(self, chunks: list[bytes], end: type[Exception] = StreamEOF) -> None:
        self.chunks = list(chunks)
        self.end = end
        self.closed_write = False
        self.muxed_stream: Any = None

    async def read(self, n: int) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.chunks:
            raise self.end()
        chunk = self.chunks.pop(0)
        head, rest = chunk[:n], chunk[n:]
        if rest:
            self.chunks.insert(0, rest)
        return head

    async def close_write(self) -> None:
        self.closed_write = True


@pytest.mark.trio
async def test_stream_helpers_normalize_eof_and_bound_reads() -> None:
    assert await compat.read_some(_FakeStream([])) == b""
    assert await compat.read_exactly(_FakeStream([b"ab", b"cdef"]), 5) == b"abcde"
    with pytest.raises(RemoteProtocolError, match="after 3 of 5"):
        await compat.read_exactly(_FakeStream([b"abc"]), 5)
    assert await compat.read_until_eof(_FakeStream([b"ab", b"cd"]), limit=4) == b"abcd"
    with pytest.raises(RemoteProtocolError, match="limit of 3"):
        await compat.read_until_eof(_FakeStream([b"ab", b"cd"]), limit=3)
    with pytest.raises(NetworkError, match="StreamReset"):
        await compat.read_some(_FakeStream([], end=StreamReset))
    reset_as_eof = _FakeStream([b"partial"])  # what py-libp2p's Yamux does on a peer's RST
    reset_as_eof.muxed_stream = SimpleNamespace(reset_received=True)
    with pytest.raises(NetworkError, match="reset by peer"):
        await compat.read_until_eof(reset_as_eof, limit=100)
    fake = _FakeStream([])
    await compat.half_close(fake)
    assert fake.closed_write


def test_patches_are_idempotent_and_logging_is_visible() -> None:
    compat.apply_patches()
    queue_class = libp2p.pubsub.pubsub.RpcQueue  # type: ignore[attr-defined]
    compat.apply_patches()
    assert libp2p.pubsub.pubsub.RpcQueue is queue_class  # type: ignore[attr-defined]
    assert queue_class().__class__.__name__ == "_LargeRpcQueue"
    assert libp2p.network.swarm._HAPPY_EYEBALLS_DELAY == 0.0
    assert libp2p.pubsub.pubsub.SUBSCRIPTION_CHANNEL_SIZE > 32
    assert logging.getLogger("libp2p").propagate
    assert logging.getLogger("libp2p.kad_dht.kad_dht").getEffectiveLevel() >= logging.ERROR


def test_routine_py_libp2p_errors_are_demoted(caplog: pytest.LogCaptureFixture) -> None:
    compat.apply_patches()
    with caplog.at_level(logging.DEBUG, logger="libp2p"):
        logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream: gone")
        logging.getLogger("libp2p.transport.tcp.tcp").error("something else broke")
    levels = {r.getMessage(): r.levelname for r in caplog.records}
    assert levels == {"Failed to open TCP stream: gone": "DEBUG", "something else broke": "ERROR"}


def test_gossip_settings_and_content_message_id() -> None:
    class Msg:
        data = b"announcement"

    assert compat.content_message_id(Msg()) == hashlib.sha256(b"announcement").digest()
    router = compat.DEFAULT_GOSSIP.router_kwargs()
    assert router["heartbeat_interval"] == 1
    assert router["degree_low"] <= router["degree"] <= router["degree_high"]
    assert compat.DEFAULT_GOSSIP.pubsub_kwargs()["msg_id_constructor"] is compat.content_message_id
