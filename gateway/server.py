"""Process life cycle for `workers = 1`: one process runs the data plane and the admin API.
Start-up opens the store, loads the key index and starts both listeners; shutdown stops
listening, lets in-flight requests finish up to `server.shutdown_timeout`, flushes usage and
closes resources; SIGHUP reloads the configuration. The event-loop choice lives here.
(`workers > 1` is `gateway.supervisor`.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from gateway.admin.state import AdminToken
from gateway.config import Settings, load_settings
from gateway.dataplane import DataPlane
from gateway.errors import ConfigError
from gateway.metrics import Gauges, render
from gateway.runtime import AdminRuntime, DataPlaneRuntime, reloadable, webhook_gauges
from gateway.signing import load_box
from gateway.store.factory import make_store

T = TypeVar("T")
log = logging.getLogger("gateway")


class Gateway:
    """Both listeners and everything behind them, in one process."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.store = make_store(settings.store, self.environ)
        self.data: DataPlaneRuntime | None = None
        self.admin: AdminRuntime | None = None

    @property
    def plane(self) -> DataPlane:
        assert self.data is not None
        return self.data.plane

    @property
    def index(self):  # type: ignore[no-untyped-def]  # tests peek at it
        assert self.data is not None
        return self.data.index

    @property
    def data_port(self) -> int:
        return self.data.port if self.data else 0

    @property
    def admin_port(self) -> int:
        return self.admin.port if self.admin else 0

    async def start(self) -> None:
        token = AdminToken.from_settings(self.settings, self.environ)
        await self.store.open(self.settings.store.migrate_mode)
        try:
            box = load_box(self.settings, self.environ)
            self.data = DataPlaneRuntime(self.settings, self.store, box)
            await self.data.start()
            self.admin = AdminRuntime(self.settings, self.store, token, self.render_metrics, box)
            await self.admin.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "gateway ready: data plane on %s:%d, admin on %s:%d, %d keys loaded",
            self.settings.server.host,
            self.data_port,
            self.settings.admin.host,
            self.admin_port,
            len(self.data.index),
        )

    def render_metrics(self) -> bytes:
        assert self.data is not None
        m = self.data.metrics()
        admin = self.admin
        gauges = Gauges(
            keys_cached=m["keys_cached"],
            store_write_lag_seconds=m["store_write_lag_seconds"],
            connections_open=m["connections_open"],
            applied_revision=m["applied_revision"],
            staleness_seconds=m["staleness_seconds"],
            instances_live=admin.instances_live if admin else None,
            propagation=admin.barrier.latency if admin and admin.barrier else None,
            **webhook_gauges(admin),
        )
        return render(m["counters"], gauges)

    def reload(self, settings: Settings) -> None:
        settings = reloadable(self.settings, settings)
        self.settings = settings
        if self.data is not None:
            self.data.reload(settings)
        if self.admin is not None:
            self.admin.reload(settings)
        log.info("configuration reloaded from %s", settings.source)

    async def stop(self) -> None:
        """Graceful: stop accepting, drain in-flight requests (bounded), then close."""
        if self.data is not None:
            await self.data.drain(self.settings.server.shutdown_timeout)
        if self.admin is not None:
            await self.admin.stop()
        if self.data is not None:
            await self.data.stop()
        await self.store.close()


def read_reload(path: str) -> Settings | None:
    try:
        return load_settings(path)
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration: %s", exc)
        return None


async def serve(settings: Settings, ready: Callable[[Gateway], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads the config."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(settings)
    await gateway.start()

    def reload() -> None:
        new = read_reload(settings.source)
        if new is not None:
            from gateway.logs import setup_logging

            setup_logging(new.log)
            gateway.reload(new)

    loop.add_signal_handler(signal.SIGHUP, reload)
    if ready is not None:
        ready(gateway)
    try:
        await stop.wait()
        log.info(
            "shutting down: draining in-flight requests (up to %.0fs)",
            gateway.settings.server.shutdown_timeout,
        )
    finally:
        await gateway.stop()
    log.info("stopped")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when available (the default), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(main)
    return uvloop.run(main)
