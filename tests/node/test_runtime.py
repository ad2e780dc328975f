"""Node.run under pytest-trio: services up, status over real loopback HTTP, clean exits."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio
from dre.node.config import API_FILE, PID_FILE, NodeConfig, read_api_url
from dre.node.identity import NODE_KEY_NAME
from dre.node.runtime import Node
from dre.protocol.errors import DreError
from dre.storage.keystore import Keystore

HTTP_ONLY = NodeConfig(http="127.0.0.1:0")


async def get_status(url: str) -> dict[str, object]:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        response = await client.get(f"{url}/api/v1/node/status")
    assert response.status_code == 200
    doc: dict[str, object] = response.json()
    return doc


@pytest.mark.trio
async def test_run_serves_status_and_cleans_up_on_cancel(tmp_path: Path) -> None:
    home = tmp_path / "home"
    lines: list[str] = []
    node = Node(home, HTTP_ONLY, p2p=False, echo=lines.append)
    async with trio.open_nursery() as nursery:
        state = await nursery.start(node.run)
        assert state.http_url is not None and state.http_url.startswith("http://127.0.0.1:")
        # The run files say where the node is, so the CLI can find it.
        assert (home / API_FILE).read_text().strip() == state.http_url
        assert (home / PID_FILE).read_text().strip() == str(os.getpid())
        assert read_api_url(home) == state.http_url
        status = await get_status(state.http_url)
        node_key = Keystore(home).get(NODE_KEY_NAME)
        assert status["peer_id"] == state.peer_id == node_key.peer_id
        assert status["http"] == state.http_url and status["p2p"] is False
        nursery.cancel_scope.cancel()
    assert not (home / API_FILE).exists() and not (home / PID_FILE).exists()
    assert read_api_url(home) is None
    assert f"peer ID  {state.peer_id}" in lines
    # The settings file is written on first start, with the defaults, not this run's overrides.
    assert '"http": "127.0.0.1:5860"' in (home / "node.json").read_text()


@pytest.mark.trio
async def test_stop_is_graceful_and_bounded(tmp_path: Path) -> None:
    home = tmp_path / "home"
    node = Node(home, HTTP_ONLY, p2p=False)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            state = await nursery.start(node.run)
            assert state.http_url is not None
            await get_status(state.http_url)
            started = trio.current_time()
            node.stop()
    # Within the HTTP grace period, not the whole stop bound: nothing was in flight.
    assert trio.current_time() - started < 3
    assert not (home / API_FILE).exists() and not (home / PID_FILE).exists()


@pytest.mark.trio
async def test_identity_is_stable_across_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    peer_ids = []
    for _ in range(2):
        async with trio.open_nursery() as nursery:
            state = await nursery.start(Node(home, HTTP_ONLY, p2p=False).run)
            peer_ids.append(state.peer_id)
            nursery.cancel_scope.cancel()
    assert peer_ids[0] == peer_ids[1]


@pytest.mark.trio
async def test_second_node_on_the_same_home_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with trio.open_nursery() as nursery:
        first = await nursery.start(Node(home, HTTP_ONLY, p2p=False).run)
        with pytest.raises(DreError, match="already running"):
            await Node(home, HTTP_ONLY, p2p=False).run()
        # The refused node left the running one's files alone.
        assert read_api_url(home) == first.http_url
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_stale_run_files_are_replaced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # A node killed with -9: its files remain, its pid is gone (pid 2**22+1 exceeds pid_max).
    (home / PID_FILE).write_text(f"{2**22 + 1}\n")
    (home / API_FILE).write_text("http://127.0.0.1:1\n")
    assert read_api_url(home) is None
    async with trio.open_nursery() as nursery:
        state = await nursery.start(Node(home, HTTP_ONLY, p2p=False).run)
        assert read_api_url(home) == state.http_url
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_busy_http_port_is_one_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with trio.open_nursery() as nursery:
        first = await nursery.start(Node(home, HTTP_ONLY, p2p=False).run)
        assert first.http_url is not None
        taken = first.http_url.removeprefix("http://")
        other = Node(tmp_path / "other", NodeConfig(http=taken), p2p=False)
        with pytest.raises(DreError, match=f"cannot serve the HTTP API on {taken}"):
            await other.run()
        assert not (tmp_path / "other" / PID_FILE).exists()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_with_libp2p_host(tmp_path: Path) -> None:
    home = tmp_path / "home"
    node = Node(home, HTTP_ONLY)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            state = await nursery.start(node.run)
            assert state.p2p and node.host is not None
            assert node.host.peer_id == state.peer_id
            assert state.addrs and all(a.endswith(f"/p2p/{state.peer_id}") for a in state.addrs)
            assert state.http_url is not None
            status = await get_status(state.http_url)
            assert status["addrs"] == state.addrs and status["p2p"] is True
            node.stop()
    assert node.host is None and not (home / PID_FILE).exists()


@pytest.mark.trio
async def test_bootstrap_connects_to_the_given_peer(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(Node(tmp_path / "a", HTTP_ONLY).run)
            config = NodeConfig(http="127.0.0.1:0", bootstrap=(first.addrs[0],))
            second = await nursery.start(Node(tmp_path / "b", config).run)
            # The host has no "connected" event to wait on; the dial runs in the background.
            while second.peer_count() == 0:  # noqa: ASYNC110
                await trio.sleep(0.05)
            assert first.peer_count() == 1
            assert (await get_status(str(second.http_url)))["peers"] == 1
            nursery.cancel_scope.cancel()
