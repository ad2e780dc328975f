"""The running node: one supervisor, one trio nursery, every service inside it.

Like trio's ``serve_listeners`` and spegel's ``main.go``, :meth:`Node.run` owns one nursery and
each service runs in it: the HTTP API (hypercorn's trio worker) and the libp2p host, with gossip,
DHT, block exchange and sync to follow as further services. A service is an async function
``service(state, *, task_status)`` that calls ``task_status.started()`` once it is serving and
returns soon after :attr:`Node.shutdown` is set; a service that raises stops the whole node (a
node with a dead half is worse than a node that is down and says why).

Stopping: SIGINT or SIGTERM sets the shutdown event; services get :data:`STOP_TIMEOUT` seconds to
finish what they are doing (HTTP requests in flight, closing connections), then whatever is left
is cancelled. A second signal cancels at once. Cancelling :meth:`Node.run` from outside (tests)
stops everything immediately; either way the run files are removed.

Run files in the node home (names and reader in :mod:`dre.node.config`), so the CLI can find a
running node:

- ``node.pid``: the node's process ID; created exclusively, so a second node on the same home
  is refused instead of fighting over the store, the identity and the API address.
- ``api``: the HTTP API's base URL (``http://127.0.0.1:5860``), written once it is bound, so a
  node started with ``--http 127.0.0.1:0`` can still be found.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import trio
from dre.protocol.errors import DreError
from dre.protocol.keys import PublisherKey
from dre.storage.fsutil import write_atomically
from dre.storage.repo import Repo
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.run import worker_serve
from hypercorn.typing import ASGIFramework
from hypercorn.utils import wrap_app

from .config import (
    API_FILE,
    CONFIG_FILE,
    MAX_API_FILE,
    PID_FILE,
    NodeConfig,
    load_config,
    parse_http_address,
    pid_alive,
    read_pid,
    save_config,
)
from .host import HostHandle, open_host
from .http_api import NodeState, make_app
from .identity import node_identity
from .peers import load_peers
from .registry_service import RegistryService
from .search_protocol import SearchService, run_search_protocol

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose trio-stubs shadow trio's own (newer) annotations for
    # mypy; its TaskStatus is the one mypy knows. At run time it is trio's.
    from trio_typing import TaskStatus
else:
    TaskStatus = trio.TaskStatus

__all__ = [
    "HTTP_GRACE",
    "STOP_TIMEOUT",
    "Node",
    "Service",
]

#: Bound on a clean stop: after this many seconds, services still running are cancelled.
STOP_TIMEOUT = 5.0
#: Requests in flight get this long to finish once the node stops (within STOP_TIMEOUT).
HTTP_GRACE = 2.0

_log = logging.getLogger("dre.node")


class Service(Protocol):
    """One part of the running node (see the module docstring for the contract)."""

    def __call__(
        self, state: NodeState, *, task_status: TaskStatus[None]
    ) -> Awaitable[None]: ...


class Node:
    """A node over the home ``home``. ``await node.run()`` runs it until stopped."""

    def __init__(
        self,
        home: Path,
        config: NodeConfig | None = None,
        *,
        p2p: bool = True,
        handle_signals: bool = False,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        """``config`` defaults to ``<home>/node.json``. ``p2p=False`` runs without a libp2p
        host (HTTP only). ``handle_signals`` needs the main thread. ``echo`` gets the lines a
        person should see (peer ID, addresses, stopping)."""
        self.home = home
        self._config = config
        self.p2p = p2p
        self.handle_signals = handle_signals
        self._echo = echo if echo is not None else (lambda _line: None)
        self.shutdown = trio.Event()
        #: The running libp2p host (for the services that build on it), once started.
        self.host: HostHandle | None = None
        self.state: NodeState | None = None
        #: The registry's network service (gossip, DHT, block exchange, sync), once running.
        self.registry_service: RegistryService | None = None
        self._key: PublisherKey | None = None
        self._live = 0
        self._stopped = trio.Event()

    @property
    def config(self) -> NodeConfig:
        """The settings this node runs with (loaded from the home when not given)."""
        if self._config is None:
            self._config = load_config(self.home)
        return self._config

    def stop(self) -> None:
        """Ask the node to stop cleanly (what SIGTERM does)."""
        self.shutdown.set()

    # -- the supervisor ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[NodeState] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run until stopped; ``task_status.started(state)`` once every service is up."""
        self.shutdown = trio.Event()
        self._stopped = trio.Event()
        self.state = None
        self._live = 0
        # Small local files and an LMDB open: fast, and done before anything runs concurrently.
        self.config.check()
        if Repo.init(self.home):
            self._echo(f"initialized DRE home at {self.home}")
        # Claimed before the store is opened: a second node on this home is told so, instead of
        # failing on LMDB's lock (or, in one process, on its "already open" check).
        _claim_pid_file(self.home)
        try:
            repo, self._key = self._open()
            try:
                state = NodeState(repo=repo, peer_id=self._key.peer_id, config=self.config,
                                  key=self._key)
                self.state = state
                try:
                    await self._supervise(state, task_status)
                except BaseExceptionGroup as group:
                    _raise_sole_error(group)
                    raise
            finally:
                repo.close()
        finally:
            url = self.state.http_url if self.state is not None else None
            _remove_if_contains(self.home / API_FILE, url)
            _remove_if_contains(self.home / PID_FILE, str(os.getpid()))
            self.host = None

    def _open(self) -> tuple[Repo, PublisherKey]:
        if not (self.home / CONFIG_FILE).exists():
            # Written on first start so there is a file to edit; flags never go in it.
            save_config(self.home, load_config(self.home))
        repo = Repo.open(self.home)
        try:
            key = node_identity(self.home)
        except BaseException:
            repo.close()
            raise
        return repo, key

    async def _supervise(self, state: NodeState, task_status: TaskStatus[NodeState]) -> None:
        signals = (
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
            if self.handle_signals
            else contextlib.nullcontext(None)
        )
        with signals as signal_aiter:
            async with trio.open_nursery() as nursery:
                if signal_aiter is not None:
                    nursery.start_soon(self._watch_signals, signal_aiter, nursery.cancel_scope)
                for service in self._services():
                    await nursery.start(self._run_service, service, state)
                peers = (*self.config.bootstrap, *load_peers(self.home))
                if self.host is not None and peers:
                    nursery.start_soon(self._bootstrap, self.host, peers)
                if state.http_url is not None:
                    _write_api_file(self.home, state.http_url)
                self._announce(state)
                task_status.started(state)

                await self.shutdown.wait()
                with trio.move_on_after(STOP_TIMEOUT):
                    await self._stopped.wait()
                # Whatever is still running (signal watcher, slow services) goes now.
                nursery.cancel_scope.cancel()
        self._echo("stopped")

    def _services(self) -> list[Service]:
        # Started in this order, each serving before the next starts. The libp2p host is the
        # seam the network services (gossip, DHT, bitswap, sync) will hang from: they go after
        # it, taking `self.host`.
        services: list[Service] = [self._serve_http, self._run_search]
        if self.p2p:
            services.append(self._run_host)
            services.append(self._run_registry)
            services.append(self._run_search_protocol)
        return services

    async def _run_service(
        self, service: Service, state: NodeState, *, task_status: TaskStatus[None]
    ) -> None:
        self._live += 1
        try:
            await service(state, task_status=task_status)
            if not self.shutdown.is_set():
                # A service that ends on its own leaves the node half-working: stop it all.
                _log.error("service %s ended unexpectedly; stopping the node", service)
                self.shutdown.set()
        finally:
            self._live -= 1
            if self._live == 0:
                self._stopped.set()

    async def _watch_signals(
        self, signals: AsyncIterator[int], scope: trio.CancelScope
    ) -> None:
        async for signum in signals:
            if self.shutdown.is_set():
                self._echo("stopping now")
                scope.cancel()
                return
            self._echo(f"{signal.Signals(signum).name}: stopping (send it again to force)")
            self.shutdown.set()

    def _announce(self, state: NodeState) -> None:
        self._echo(f"peer ID  {state.peer_id}")
        self._echo(f"network  {state.config.network}")
        for addr in state.addrs:
            self._echo(f"libp2p   {addr}")
        if not state.p2p:
            self._echo("libp2p   off")
        if state.http_url is not None:
            self._echo(f"HTTP API {state.http_url}/api/v1")
            self._echo(f"web page {state.http_url}/")
        self._echo("node running; Ctrl+C or SIGTERM stops it")

    # -- services ---------------------------------------------------------------------------------

    def _hypercorn_config(self) -> HypercornConfig:
        host, port = parse_http_address(self.config.http)
        cfg = HypercornConfig()
        cfg.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        # Hypercorn's default backlog of 100 overflowed (connection resets) under 300 clients
        # at once; the kernel allows 4096 here.
        cfg.backlog = 2048
        cfg.graceful_timeout = HTTP_GRACE
        cfg.keep_alive_timeout = 5.0
        cfg.accesslog = None
        # Hypercorn's own INFO lines ("Running on …") would repeat what we print.
        cfg.errorlog = logging.getLogger("dre.node.http")
        cfg.loglevel = "WARNING"
        cfg.include_server_header = False
        return cfg

    async def _serve_http(self, state: NodeState, *, task_status: TaskStatus[None]) -> None:
        cfg = self._hypercorn_config()
        # Bound here rather than inside hypercorn.trio.serve so a busy port is one clear error
        # (hypercorn would raise it wrapped in two exception groups) and so the real port of
        # `:0` is known. Hypercorn 0.18 (pinned) takes ready sockets through worker_serve.
        try:
            sockets = cfg.create_sockets()
        except OSError as exc:
            raise DreError(
                f"cannot serve the HTTP API on {self.config.http}: {exc.strerror or exc}"
            ) from None
        try:
            for sock in sockets.insecure_sockets:
                sock.listen(cfg.backlog)
            state.http_url = _url_of(sockets.insecure_sockets[0])
            task_status.started()
            await worker_serve(
                wrap_app(cast(ASGIFramework, make_app(state)), cfg.wsgi_max_body_size, "asgi"),
                cfg,
                sockets=sockets,
                shutdown_trigger=self.shutdown.wait,
            )
        finally:
            for sock in sockets.insecure_sockets:
                sock.close()

    async def _run_search(self, state: NodeState, *, task_status: TaskStatus[None]) -> None:
        # Independent of libp2p, so a node started with networking off searches too. The
        # engine loads its model in a worker thread; the node serves meanwhile.
        from .search_engine import SearchEngine  # noqa: PLC0415

        engine = SearchEngine.open(state.repo)
        state.search = engine
        try:
            await engine.run(self.shutdown, task_status=task_status)
        finally:
            state.search = None
            engine.close()

    async def _run_host(self, state: NodeState, *, task_status: TaskStatus[None]) -> None:
        assert self._key is not None
        async with open_host(
            self._key.seed, list(self.config.listen), network=self.config.network
        ) as handle:
            if handle.peer_id != state.peer_id:
                raise DreError(
                    f"libp2p host peer ID {handle.peer_id} differs from the node key "
                    f"{state.peer_id}"
                )
            self.host = handle
            state.addrs = list(handle.addrs)
            state.p2p = True
            state.peer_count = lambda: len(handle.connected_peers())
            task_status.started()
            await self.shutdown.wait()
            state.p2p = False

    async def _run_search_protocol(self, state: NodeState, *,
                                   task_status: TaskStatus[None]) -> None:
        assert self.host is not None
        # The engine is looked up per query: a peer asking while none runs is told so.
        service = SearchService(self.host, lambda: state.search, network=self.config.network)
        state.federation = service
        try:
            await run_search_protocol(service, self.shutdown, task_status=task_status)
        finally:
            state.federation = None

    async def _run_registry(self, state: NodeState, *, task_status: TaskStatus[None]) -> None:
        assert self.host is not None and self._key is not None
        service = RegistryService(state.repo, self._key, network=self.config.network,
                                  verify_policy=self.config.verify)
        self.registry_service = service
        state.network = service
        await service.run(self.host, self.shutdown, task_status=task_status)
        state.network = None

    async def _bootstrap(self, handle: HostHandle, addrs: tuple[str, ...]) -> None:
        # One at a time and only logged on failure: a bootstrap peer being down is normal.
        for addr in addrs:
            try:
                await handle.connect(addr)
                self._echo(f"connected to {addr}")
            except DreError as exc:
                self._echo(f"bootstrap: {exc}")


# -- run files -------------------------------------------------------------------------------------


def _url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _claim_pid_file(home: Path) -> None:
    """Create ``<home>/node.pid`` exclusively; refuse if a live node holds it."""
    path = home / PID_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pid = read_pid(path)
            if pid is not None and pid_alive(pid):
                raise DreError(f"a node is already running for {home} (pid {pid})") from None
            # Left by a node that died without cleaning up (kill -9, power loss).
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        return
    raise DreError(f"cannot claim {path}: another node is starting for {home}")


def _write_api_file(home: Path, url: str) -> None:
    data = f"{url}\n".encode()
    write_atomically(home / API_FILE, lambda fh: fh.write(data))


def _remove_if_contains(path: Path, expected: str | None) -> None:
    # Only our own file: a second node that started after us must keep its files.
    if expected is None:
        return
    try:
        if path.read_bytes()[:MAX_API_FILE].decode("utf-8", "replace").strip() == expected:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            _log.warning("cannot remove %s: %s", path, exc)


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _raise_sole_error(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise the one real error inside nested nursery groups, so the CLI can print it as a
    line; return (and let the caller re-raise the group) if there are several."""
    errors = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
    if len(errors) == 1:
        raise errors[0] from None
