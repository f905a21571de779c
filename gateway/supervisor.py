"""`server.workers = N`: one supervisor and N data-plane worker processes on one port.

Each worker binds the data-plane port with SO_REUSEPORT, loads the key index from the store and
keeps it coherent on its own (the shared revision counter). The supervisor keeps the admin API
in one place, restarts a worker that dies, forwards SIGTERM/SIGINT for a graceful drain,
re-reads the configuration on SIGHUP and hands it to the workers, and adds up their metrics.
Workers are spawned (a fresh interpreter each), not forked from a running event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from gateway.admin.state import AdminToken
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.logs import setup_logging
from gateway.metrics import Gauges, PlaneMetrics, merge, render
from gateway.runtime import AdminRuntime, DataPlaneRuntime, reloadable, webhook_gauges
from gateway.server import read_reload, run
from gateway.signing import load_box
from gateway.store.factory import make_store

log = logging.getLogger("gateway.supervisor")

METRICS_EVERY = 1.0
RESTART_BACKOFF_MAX = 30.0


class StartupError(GatewayError):
    """A worker could not start (the message says why)."""


# -- the worker process ---------------------------------------------------------------------


def worker_main(settings: Settings, worker_id: int, conn: Connection) -> None:
    """Entry point of a spawned worker process."""
    setup_logging(settings.log)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads arrive from the supervisor
    with contextlib.suppress(KeyboardInterrupt):
        run(_worker(settings, worker_id, conn))


async def _worker(settings: Settings, worker_id: int, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = make_store(settings.store, os.environ)
    data: DataPlaneRuntime | None = None
    try:
        await store.open(settings.store.migrate_mode)
        data = DataPlaneRuntime(settings, store, load_box(settings, os.environ))
        await data.start()
    except Exception as exc:  # reported to the supervisor, which says it in one line
        with contextlib.suppress(OSError):
            conn.send(("failed", describe_startup_error(exc)))
        if data is not None:
            await data.stop()
        await store.close()
        return
    conn.send(("ready", os.getpid()))

    def on_message() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            stop.set()  # the supervisor is gone: do not linger as an orphan
            loop.remove_reader(conn.fileno())
            return
        if message[0] == "reload":
            setup_logging(message[1].log)  # this process's own messages, as the supervisor's
            data.reload(message[1])
            log.info("worker %d: configuration reloaded", worker_id)

    loop.add_reader(conn.fileno(), on_message)

    async def report() -> None:
        while True:
            await asyncio.sleep(METRICS_EVERY)
            with contextlib.suppress(OSError):
                conn.send(("metrics", data.metrics()))

    reporter = loop.create_task(report())
    try:
        await stop.wait()
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await data.drain(data.settings.server.shutdown_timeout)
        await data.stop()
        with contextlib.suppress(OSError):
            conn.send(("metrics", data.metrics()))  # the final counts are not lost
        with contextlib.suppress(Exception):
            loop.remove_reader(conn.fileno())
        await store.close()


def describe_startup_error(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot listen: {exc.strerror}"
    return str(exc) or exc.__class__.__name__


# -- the supervisor -------------------------------------------------------------------------


class Worker:
    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.pid = 0
        self.ready = asyncio.Event()
        self.failure: str | None = None
        self.metrics: dict[str, Any] | None = None
        self.started = 0.0
        self.restarts = 0


class Supervisor:
    def __init__(self, settings: Settings, environ: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = dict(os.environ) if environ is None else environ
        self.store = make_store(settings.store, self.environ)
        self.admin: AdminRuntime | None = None
        self.workers = [Worker(i) for i in range(settings.server.workers)]
        self.stopping = False
        self._mp = multiprocessing.get_context("spawn")
        self._retired = PlaneMetrics().snapshot()  # counts of workers that have exited
        self._monitor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        token = AdminToken.from_settings(self.settings, self.environ)
        # Migrations run once, here, before any worker opens the file.
        await self.store.open(self.settings.store.migrate_mode)
        try:
            box = load_box(self.settings, self.environ)  # and the key file, before the workers
            for worker in self.workers:
                self._spawn(worker)
            await self._wait_ready(self.workers)
            self.admin = AdminRuntime(self.settings, self.store, token, self.render_metrics, box)
            await self.admin.start()
        except BaseException:
            await self.stop()
            raise
        self._monitor = asyncio.get_running_loop().create_task(self._watch())
        log.info(
            "gateway ready: %d workers on %s:%d, admin on %s:%d",
            len(self.workers),
            self.settings.server.host,
            self.settings.server.port,
            self.settings.admin.host,
            self.admin.port,
        )

    def _spawn(self, worker: Worker) -> None:
        parent, child = self._mp.Pipe()
        process = self._mp.Process(
            target=worker_main,
            args=(self.settings, worker.slot, child),
            name=f"gateway-worker-{worker.slot}",
        )
        process.start()
        child.close()
        worker.process, worker.conn = process, parent
        worker.ready = asyncio.Event()
        worker.failure = None
        worker.started = time.monotonic()
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_message, worker)

    def _on_message(self, worker: Worker) -> None:
        conn = worker.conn
        assert conn is not None
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            worker.ready.set()  # unblock anyone waiting; _watch sees the exit
            return
        if kind == "ready":
            worker.pid = payload
            worker.ready.set()
        elif kind == "failed":
            worker.failure = payload
            worker.ready.set()
        elif kind == "metrics":
            worker.metrics = payload

    async def _wait_ready(self, workers: list[Worker]) -> None:
        for worker in workers:
            await worker.ready.wait()
            if worker.failure is not None or worker.pid == 0:
                raise StartupError(worker.failure or "a worker exited during start-up")

    async def _watch(self) -> None:
        """Restart workers that die, with a backoff if they keep dying."""
        while not self.stopping:
            await asyncio.sleep(0.2)
            for worker in self.workers:
                process = worker.process
                if process is None or process.is_alive() or self.stopping:
                    continue
                code = process.exitcode
                lived = time.monotonic() - worker.started
                log.error(
                    "worker %d (pid %d) exited with %s; restarting", worker.slot, worker.pid, code
                )
                self._retire(worker)
                worker.restarts = worker.restarts + 1 if lived < 10 else 0
                delay = (
                    min(RESTART_BACKOFF_MAX, 0.5 * (2 ** max(0, worker.restarts - 1)))
                    if worker.restarts
                    else 0
                )
                if delay:
                    await asyncio.sleep(delay)
                if self.is_stopping():  # stop() may have run while we slept
                    return
                self._spawn(worker)
                try:
                    await self._wait_ready([worker])
                except StartupError as exc:
                    log.error("worker %d could not restart: %s", worker.slot, exc)

    def is_stopping(self) -> bool:
        return self.stopping

    def _retire(self, worker: Worker) -> None:
        if worker.metrics is not None:
            self._retired = merge([self._retired, worker.metrics["counters"]])
            worker.metrics = None
        if worker.conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(worker.conn.fileno())
            worker.conn.close()
            worker.conn = None
        if worker.process is not None:
            worker.process.join(0)
            worker.process.close()
            worker.process = None
        worker.pid = 0

    def render_metrics(self) -> bytes:
        live = [w.metrics for w in self.workers if w.metrics is not None]
        counters = merge([self._retired, *(m["counters"] for m in live)])
        gauges = Gauges(
            keys_cached=max((m["keys_cached"] for m in live), default=0),
            store_write_lag_seconds=max((m["store_write_lag_seconds"] for m in live), default=0.0),
            connections_open=sum(m["connections_open"] for m in live),
            workers=sum(1 for w in self.workers if w.process is not None and w.process.is_alive()),
            applied_revision=min((m["applied_revision"] for m in live), default=0),
            staleness_seconds=max(
                (m["staleness_seconds"] for m in live if m["staleness_seconds"] is not None),
                default=None,
            ),
            instances_live=self.admin.instances_live if self.admin else None,
            propagation=self.admin.barrier.latency if self.admin and self.admin.barrier else None,
            **webhook_gauges(self.admin),
        )
        return render(counters, gauges)

    def reload(self, settings: Settings) -> None:
        settings = reloadable(self.settings, settings)
        self.settings = settings
        if self.admin is not None:
            self.admin.reload(settings)
        for worker in self.workers:
            if worker.conn is not None:
                with contextlib.suppress(OSError):
                    worker.conn.send(("reload", settings))
        log.info("configuration reloaded from %s", settings.source)

    async def stop(self) -> None:
        """SIGTERM every worker (each drains its connections), wait, then close the rest."""
        self.stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for worker in self.workers:
            if worker.process is not None and worker.process.is_alive() and worker.process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.server.shutdown_timeout + 5
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            while process.is_alive() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if process.is_alive():
                log.error("worker %d did not stop in time; killing it", worker.slot)
                process.kill()
                process.join(5)
            await asyncio.sleep(0)  # let a last metrics message be read
            self._retire(worker)
        if self.admin is not None:
            await self.admin.stop()
        await self.store.close()


async def supervise(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor = Supervisor(settings)

    def reload() -> None:
        new = read_reload(settings.source)
        if new is not None:
            setup_logging(new.log)
            supervisor.reload(new)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await supervisor.start()
    try:
        await stop.wait()
        log.info("shutting down: draining %d workers", len(supervisor.workers))
    finally:
        await supervisor.stop()
    log.info("stopped")
