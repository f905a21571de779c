"""Process life cycle: open the store, load the key index, start both listeners, run the
background tasks, and shut down in order (stop listening, let in-flight requests finish up to
`server.shutdown_timeout`, flush usage, close resources). The event-loop choice lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from aiohttp import web

from gateway.admin import create_admin_app
from gateway.admin.state import AdminToken
from gateway.config import Settings
from gateway.dataplane import DataPlane
from gateway.index import KeyIndex
from gateway.logs import AccessLog
from gateway.metrics import Gauges, render
from gateway.store.sqlite import SQLiteStore
from gateway.sync import IndexSync
from gateway.timeutil import now_us
from gateway.usage import UsageRecorder

log = logging.getLogger("gateway")

CHANGE_LOG_RETENTION_US = 24 * 3600 * 1_000_000


class Gateway:
    """Both listeners and everything behind them, in one process."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.store = SQLiteStore(settings.store.sqlite_path)
        self.index = KeyIndex()
        self.data_port = 0
        self.admin_port = 0
        self._plane: DataPlane | None = None
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._usage: UsageRecorder | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def plane(self) -> DataPlane:
        assert self._plane is not None
        return self._plane

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        token = AdminToken.from_settings(settings, self.environ)
        await self.store.open()
        try:
            assert self.store.revision is not None
            sync = IndexSync(self.store, self.index, self.store.revision)
            await sync.load()
            self._usage = UsageRecorder(self.store, settings.store.usage_flush_seconds)
            plane = DataPlane(
                settings, self.index, sync, self._usage, AccessLog(settings.log), loop, self.store
            )
            self._plane = plane
            srv = settings.server
            self._server = await loop.create_server(
                plane.protocol,
                host=srv.host,
                port=srv.port,
                reuse_port=srv.workers > 1,
                backlog=4096,
            )
            self.data_port = _bound_port(self._server)
            shortest = min(
                srv.header_timeout, srv.keepalive_timeout, settings.upstream.read_timeout
            )
            plane.ctx.start(tick_every=max(0.05, min(0.25, shortest / 4)))
            admin_app = create_admin_app(settings, self.store, token, self.render_metrics)
            self._runner = web.AppRunner(
                admin_app,
                access_log=None,
                handle_signals=False,
                shutdown_timeout=srv.shutdown_timeout,
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, settings.admin.host, settings.admin.port, backlog=128)
            await site.start()
            self.admin_port = _site_port(self._runner)
            self._spawn(self._usage.run_forever())
            self._spawn(sync.poll_forever(1.0))
            self._spawn(self._prune_change_log())
        except BaseException:
            await self.stop()
            raise
        log.info(
            "gateway ready: data plane on %s:%d, admin on %s:%d, %d keys loaded",
            settings.server.host,
            self.data_port,
            settings.admin.host,
            self.admin_port,
            len(self.index),
        )

    def render_metrics(self) -> bytes:
        plane = self.plane
        gauges = Gauges(
            keys_cached=len(self.index),
            store_write_lag_seconds=self._usage.lag(time.time()) if self._usage else 0.0,
            connections_open=len(plane.ctx.connections),
        )
        return render([plane.metrics], gauges)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def _prune_change_log(self) -> None:
        while True:
            await asyncio.sleep(3600)
            try:
                await self.store.prune_changes(now_us() - CHANGE_LOG_RETENTION_US)
            except Exception as exc:
                log.warning("change-log pruning failed: %s", exc)

    async def stop(self) -> None:
        """Graceful: stop accepting, drain in-flight requests (bounded), then close."""
        timeout = self.settings.server.shutdown_timeout
        plane = self._plane
        if self._server is not None:
            self._server.close()
        if plane is not None:
            ctx = plane.ctx
            ctx.draining = True
            for conn in list(ctx.connections):
                conn.drain()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while ctx.connections and loop.time() < deadline:  # noqa: ASYNC110 - polled, bounded
                await asyncio.sleep(0.05)
            for conn in list(ctx.connections):
                conn.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._usage is not None:
            await self._usage.flush()
        if plane is not None:
            plane.ctx.stop()
            await plane.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        await self.store.close()


def _bound_port(server: asyncio.AbstractServer) -> int:
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(sock.getsockname()[1])
    return 0


def _site_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    return 0


async def serve(settings: Settings, ready: Callable[[Gateway], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(settings)
    await gateway.start()
    if ready is not None:
        ready(gateway)
    try:
        await stop.wait()
        log.info(
            "shutting down: draining in-flight requests (up to %.0fs)",
            settings.server.shutdown_timeout,
        )
    finally:
        await gateway.stop()
    log.info("stopped")


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on uvloop when available (the default), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(main)
        return
    uvloop.run(main)
