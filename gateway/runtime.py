"""The two halves a process can run: the data plane (key index kept coherent, usage
write-behind, listener) and the admin API. One process runs both (`workers = 1`); with workers,
each worker runs a data plane and the supervisor runs the admin API.

Resources are born in `start` and die in `stop`, in dependency order; the caller owns the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from gateway.admin import create_admin_app
from gateway.admin.listener import AdminRunner
from gateway.admin.state import SETTINGS, AdminToken
from gateway.changes import ChangeSignal, NotifySignal
from gateway.config import Settings
from gateway.console.app import create_console_app
from gateway.dataplane import DataPlane
from gateway.fleet import Barrier, Member
from gateway.index import KeyIndex
from gateway.logs import AccessLog
from gateway.signing import SecretBox
from gateway.store.factory import change_signal
from gateway.store.postgres import PostgresStore, Presence
from gateway.store.sql import SqlStore
from gateway.sync import IndexSync
from gateway.timeutil import now_us
from gateway.usage import UsageRecorder
from gateway.webhooks import Sender

log = logging.getLogger("gateway")

CHANGE_LOG_RETENTION_US = 24 * 3600 * 1_000_000
DELIVERY_RETENTION_US = 30 * 24 * 3600 * 1_000_000  # finished webhook deliveries kept 30 days


def tick_interval(settings: Settings) -> float:
    srv = settings.server
    shortest = min(
        srv.header_timeout,
        srv.keepalive_timeout,
        srv.body_timeout,
        srv.send_timeout,
        settings.upstream.read_timeout,
    )
    return max(0.05, min(0.25, shortest / 4))


def reloadable(old: Settings, new: Settings) -> Settings:
    """`new` as a running process can take it: what only a restart can change (listeners,
    workers, store, admin) keeps its running value, with a warning for each."""
    for name in restart_only_changes(old, new):
        log.warning("reload: %s changed; that takes a restart (keeping the running value)", name)
    server = replace(
        new.server, host=old.server.host, port=old.server.port, workers=old.server.workers
    )
    webhooks = replace(new.webhooks, secret_key_env=old.webhooks.secret_key_env)
    return replace(new, server=server, store=old.store, admin=old.admin, webhooks=webhooks)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """Settings a reload cannot apply to a running process."""
    changed = []
    if (old.server.host, old.server.port) != (new.server.host, new.server.port):
        changed.append("server.host/port")
    if old.server.workers != new.server.workers:
        changed.append("server.workers")
    if old.store != new.store:
        changed.append("store")
    if old.admin != new.admin:
        changed.append("admin")
    if old.webhooks.secret_key_env != new.webhooks.secret_key_env:
        changed.append("webhooks.secret_key_env")
    return changed


class DataPlaneRuntime:
    def __init__(self, settings: Settings, store: SqlStore, box: SecretBox) -> None:
        self.settings = settings
        self.store = store
        self.box = box
        self.index = KeyIndex()
        self.port = 0
        self._plane: DataPlane | None = None
        self._server: asyncio.AbstractServer | None = None
        self._usage: UsageRecorder | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._signal: ChangeSignal | None = None
        self.member: Member | None = None
        self._sync: IndexSync | None = None

    @property
    def plane(self) -> DataPlane:
        assert self._plane is not None
        return self._plane

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        self._signal = signal = change_signal(self.store)
        await signal.start()
        sync = IndexSync(self.store, self.index, signal)
        await sync.load()
        if isinstance(self.store, PostgresStore):
            listening = signal.listening if isinstance(signal, NotifySignal) else lambda: True
            index = self.index

            def fresh() -> bool:
                return listening() and signal.read() <= index.seq

            self.member = member = Member(Presence(self.store), settings.store, fresh)
            await member.start(self.index.seq)
            sync.on_applied = member.applied_through
            sync.on_contact = member.in_touch
            if isinstance(signal, NotifySignal):
                signal.on_change = sync.catch_up
                if signal.read() > self.index.seq:
                    sync.catch_up()  # announced while loading or registering
        self._sync = sync
        self._usage = UsageRecorder(self.store, settings.store.usage_flush_seconds)
        plane = DataPlane(
            settings,
            self.index,
            sync,
            self._usage,
            AccessLog(settings.log),
            loop,
            self.store,
            self.box,
        )
        self._plane = plane
        if self.member is not None:
            plane.staleness = self.member.staleness
        srv = settings.server
        self._server = await loop.create_server(
            plane.server,
            host=srv.host,
            port=srv.port,
            reuse_port=srv.workers > 1,
            backlog=4096,
        )
        self.port = bound_port(self._server)
        plane.ctx.start(tick_every=tick_interval(settings))
        self._tasks.append(loop.create_task(self._usage.run_forever()))
        self._tasks.append(loop.create_task(sync.poll_forever(settings.store.poll_seconds)))

    def metrics(self) -> dict[str, Any]:
        """Counters and gauges of this data plane, as plain data."""
        plane = self.plane
        return {
            "counters": plane.metrics.snapshot(),
            "keys_cached": len(self.index),
            "store_write_lag_seconds": self._usage.lag(time.time()) if self._usage else 0.0,
            "connections_open": len(plane.ctx.connections),
            "applied_revision": self.index.seq,
            "staleness_seconds": self.member.staleness() if self.member else None,
        }

    def reload(self, settings: Settings) -> None:
        self.settings = settings
        self.plane.reload(settings)

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - a deadline, not a cancel
        """Stop accepting; let in-flight requests finish (bounded); cut what is left."""
        if self._server is not None:
            self._server.close()
        plane = self._plane
        if plane is None:
            return
        ctx = plane.ctx
        ctx.draining = True
        for pool in plane.pools():
            pool.draining = True
        for conn in list(ctx.connections):
            conn.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while ctx.connections and loop.time() < deadline:  # noqa: ASYNC110 - polled, bounded
            await asyncio.sleep(0.05)
        for conn in list(ctx.connections):
            conn.abort()

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks = []
        if self._sync is not None:
            await self._sync.stop()
        if self._signal is not None:
            await self._signal.stop()
            self._signal = None
        if self.member is not None:
            await self.member.stop()
            self.member = None
        if self._usage is not None:
            await self._usage.flush()
        if self._plane is not None:
            self._plane.ctx.stop()
            await self._plane.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None


class AdminRuntime:
    def __init__(
        self,
        settings: Settings,
        store: SqlStore,
        token: AdminToken,
        metrics_source: Callable[[], bytes],
        box: SecretBox,
    ) -> None:
        self.settings = settings
        self.store = store
        self.box = box
        self.token = token
        self.metrics_source = metrics_source
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.barrier: Barrier | None = None  # fleet (PostgreSQL) only
        self.sender: Sender | None = None

    async def start(self) -> None:
        settings = self.settings
        if isinstance(self.store, PostgresStore):
            self.barrier = Barrier(Presence(self.store), settings.store)
        app = create_admin_app(
            settings,
            self.store,
            self.token,
            self.metrics_source,
            self.box,
            self.barrier,
            console=lambda ref: create_console_app(ref, self.store, self.box, self.token),
        )
        self._runner = AdminRunner(app, shutdown_timeout=settings.server.shutdown_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.admin.host, settings.admin.port, backlog=128)
        await site.start()
        for addr in self._runner.addresses:
            if isinstance(addr, tuple):
                self.port = int(addr[1])
                break
        self._tasks.append(asyncio.get_running_loop().create_task(self._prune_change_log()))
        self.sender = Sender(self.store, self.box, settings.webhooks)
        self._tasks.append(asyncio.get_running_loop().create_task(self.sender.run_forever()))
        self._tasks.append(
            asyncio.get_running_loop().create_task(self.sender.watch_expiry_forever())
        )
        if self.barrier is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._count_instances()))

    def reload(self, settings: Settings) -> None:
        self.settings = settings
        if self._runner is not None:
            self._runner.app[SETTINGS].current = settings
        if self.sender is not None:
            self.sender.settings = settings.webhooks

    @property
    def instances_live(self) -> int | None:
        return self.barrier.live if self.barrier is not None else None

    async def _count_instances(self) -> None:
        assert self.barrier is not None
        store = self.settings.store
        presence = self.barrier.presence
        while True:
            try:
                _, self.barrier.live = await presence.confirmations(0, store.node_timeout)
                await presence.forget_silent(max(3600.0, 100 * store.node_timeout))
            except Exception as exc:
                log.warning("cannot count live instances: %s", exc)
            await asyncio.sleep(2.0)

    async def _prune_change_log(self) -> None:
        """Hourly: the change log beyond a day, finished webhook deliveries beyond 30 days."""
        while True:
            await asyncio.sleep(3600)
            try:
                await self.store.prune_changes(now_us() - CHANGE_LOG_RETENTION_US)
                await self.store.prune_deliveries(now_us() - DELIVERY_RETENTION_US)
            except Exception as exc:
                log.warning("pruning the change log or the outbox failed: %s", exc)

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks = []
        if self.sender is not None:
            await self.sender.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def webhook_gauges(admin: AdminRuntime | None) -> dict[str, Any]:
    sender = admin.sender if admin is not None else None
    if sender is None:
        return {}
    return {
        "webhook_outcomes": dict(sender.outcomes),
        "outbox_depth": sender.depth,
        "outbox_oldest_seconds": sender.oldest_age,
    }


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def bound_port(server: asyncio.AbstractServer) -> int:
    for sock in getattr(server, "sockets", None) or []:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(sock.getsockname()[1])
    return 0
