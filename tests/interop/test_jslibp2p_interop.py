"""Our node against a real js-libp2p 2.x peer: gossip announcements and the private DHT.

The peer is ``jslibp2p/peer.mjs`` (libp2p 2.10.0, @chainsafe/libp2p-gossipsub 14.1.2,
@libp2p/kad-dht 15.1.11, ...; exact versions in ``jslibp2p/package-lock.json``), run as a
subprocess that dials our host and speaks JSON lines (see the script's header). It uses the same
content message id (sha256 of the data), topic ``dre/<network>/announce`` and DHT protocol
``/dre/<network>/kad/1.0.0`` as our node.

Outside CI a missing ``node`` or ``node_modules`` skips with the install command; with
``CI=true`` it fails (same rule as ``conftest.py``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
import trio
from dre.node import compat
from dre.node.dht import Dht, open_dht
from dre.node.gossip import ANNOUNCE, Gossip, open_gossip, topic_name
from dre.node.host import HostHandle, open_host
from dre.protocol.cid import DAG_PB, RAW, Block, cid_for
from dre.protocol.keys import PublisherKey
from dre.protocol.records import MANIFEST, Manifest, Record, sign_record
from libp2p.peer.id import ID

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
JS_DIR = HERE / "jslibp2p"
IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}
NETWORK = "jsinterop"
PUBLISHER = PublisherKey.from_seed(b"\x11" * 32)
#: Bound of each wait on the JS peer (its own dial and lookup bounds are 10 s).
STEP_TIMEOUT = 15.0
#: The JS peer exits by itself after this many seconds even if nobody closes its stdin.
JS_LIFETIME = 60


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: interop tools must be installed, not skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def jslibp2p_cmd() -> list[str]:
    """The command prefix that runs ``jslibp2p/peer.mjs`` (checked once per session)."""
    node = shutil.which("node")
    if node is None:
        _unavailable("Node.js is not installed (need node >= 20 on PATH)")
    modules = JS_DIR / "node_modules"
    for package in ("libp2p", "@chainsafe/libp2p-gossipsub", "@libp2p/kad-dht"):
        if not (modules / package).is_dir():
            _unavailable(
                f"js-libp2p 2.x is not installed: run `cd "
                f"{JS_DIR.relative_to(HERE.parent.parent)} && npm ci`"
            )
    return [str(node), "peer.mjs"]


def manifest(key: PublisherKey) -> Block:
    record = Manifest(
        name="hello-js",
        version="1.0.0",
        description="Announced to a js-libp2p peer.",
        license="Apache-2.0",
        keywords=[],
        category="tools",
        dependencies={},
        package=cid_for(b"js interop package", DAG_PB),
        doc=cid_for(b"js interop doc", RAW),
        generator="dre-generator/1",
        publisher=key.peer_id,
        previous=None,
        time=1_700_000_000,
        reproducible=True,
    )
    return sign_record(MANIFEST, record, key)


def allow_all(record: Record, signer: str) -> bool:
    return True


class JsPeer:
    """The running ``peer.mjs``: its JSON-line events, and commands on its stdin."""

    def __init__(self, process: trio.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.events: list[dict[str, Any]] = []
        self._changed = trio.Event()
        self._closed = False
        self.peer_id = ""

    async def pump(self) -> None:
        """Read stdout into :attr:`events` until the process closes it."""
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for chunk in self.process.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.events.append(json.loads(line))
                self._changed.set()
                self._changed = trio.Event()
        finally:
            self._closed = True
            self._changed.set()

    async def expect(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, within: float = STEP_TIMEOUT
    ) -> dict[str, Any]:
        """The first event that satisfies ``predicate``; fails the test after ``within`` s."""
        with trio.move_on_after(within):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                    if event.get("event") == "error":
                        self.fail(f"JS peer reported an error while waiting for {what}")
                if self._closed:
                    self.fail(f"JS peer exited while waiting for {what}")
                await self._changed.wait()
        self.fail(f"no {what} from the JS peer within {within:g} s")
        raise AssertionError  # unreachable

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    def fail(self, message: str) -> None:
        stderr = self.stderr_path.read_text(errors="replace")[-4000:]
        pytest.fail(f"{message}\nevents: {self.events[-20:]}\nstderr: {stderr}")


@asynccontextmanager
async def js_peer(cmd: list[str], target: str, tmp_path: Path) -> AsyncIterator[JsPeer]:
    stderr_path = tmp_path / "jslibp2p.stderr"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*cmd, NETWORK, target, str(JS_LIFETIME)],
            cwd=JS_DIR,
            stdin=PIPE,
            stdout=PIPE,
            stderr=stderr,
        )
        peer = JsPeer(process, stderr_path)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.pump)
                ready = await peer.expect(lambda e: e.get("event") == "ready", "ready event")
                peer.peer_id = ready["peerId"]
                yield peer
                # Closing stdin asks the peer to stop; it exits within ~3 s.
                assert process.stdin is not None
                await process.stdin.aclose()
                with trio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    peer.fail("JS peer did not exit within 5 s of its stdin closing")
                elif process.returncode != 0:
                    peer.fail(f"JS peer exited with code {process.returncode}")
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


@asynccontextmanager
async def our_node() -> AsyncIterator[tuple[HostHandle, Gossip, Dht]]:
    async with AsyncExitStack() as stack:
        host = await stack.enter_async_context(open_host(b"\x21" * 32, network=NETWORK))
        gossip = await stack.enter_async_context(
            open_gossip(host.host, NETWORK, authorize=allow_all, settings=compat.LOOPBACK_GOSSIP)
        )
        dht = await stack.enter_async_context(open_dht(host.host, NETWORK))
        yield host, gossip, dht


async def eventually(
    predicate: Callable[[], bool], what: str, within: float = STEP_TIMEOUT
) -> None:
    step = 0.02
    for _ in range(int(within / step)):
        if predicate():
            return
        await trio.sleep(step)
    pytest.fail(f"{what}: not within {within:g} s")


@pytest.mark.trio
async def test_js_libp2p_peer_gets_our_announcement_and_finds_our_provider_record(
    jslibp2p_cmd: list[str], tmp_path: Path
) -> None:
    block = manifest(PUBLISHER)
    # Provided before the JS peer exists: the announcement reaches nobody, so the record lives
    # only in our own provider store and the JS peer can find it only by asking us.
    held_only_here = cid_for(b"held only by the python node", DAG_PB)
    # Provided once the JS peer is in our routing table: it receives an ADD_PROVIDER too.
    announced = cid_for(b"announced to the js peer", DAG_PB)
    with trio.fail_after(30):
        async with our_node() as (host, gossip, dht):
            assert not await dht.provide(held_only_here)
            async with js_peer(jslibp2p_cmd, host.addrs[0], tmp_path) as js:
                assert js.peer_id in host.connected_peers()

                # Gossip: wait until the JS peer subscribed and is in our mesh, then publish.
                topic = topic_name(NETWORK, ANNOUNCE)
                with trio.fail_after(STEP_TIMEOUT):
                    await gossip.wait_for_subscriber(js.peer_id)
                    await gossip.pubsub.wait_for_mesh(
                        ID.from_base58(js.peer_id), topic, timeout=STEP_TIMEOUT
                    )
                await gossip.publish(block)
                got = await js.expect(lambda e: e.get("event") == "message", "gossip message")
                assert got["topic"] == topic
                assert bytes.fromhex(got["dataHex"]) == block.data
                assert got["from"] == host.peer_id

                # DHT: each side has the other in its routing table (over /dre/<net>/kad).
                await js.expect(
                    lambda e: e.get("event") == "routing" and e.get("peerId") == host.peer_id,
                    "our peer in JS routing",
                )
                await eventually(
                    lambda: js.peer_id in dht.routing_table_peers(), "JS peer in our routing table"
                )

                # GET_PROVIDERS answered from our provider store.
                await js.send(f"find {held_only_here}")
                found = await js.expect(
                    lambda e: e.get("event") == "providers" and e.get("cid") == str(held_only_here),
                    "providers of the locally held CID",
                )
                assert host.peer_id in found["peers"], found

                # ADD_PROVIDER sent to the JS peer (then found, from its store or ours).
                assert await dht.provide(announced)
                await js.send(f"find {announced}")
                found = await js.expect(
                    lambda e: e.get("event") == "providers" and e.get("cid") == str(announced),
                    "providers of the announced CID",
                )
                assert host.peer_id in found["peers"], found
