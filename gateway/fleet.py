"""Fleet mode's promise: a change made through any instance is honoured on the next request by
every instance (contract section 8).

- `Member` (each data plane): registers in the store's `instances` table, applies a change as
  soon as its notification arrives (not lazily on the next request), says which change-log
  position it has applied, and beats a heartbeat. It also tracks the last confirmed contact
  with the store, from which the data plane fails closed after `store.max_staleness`.
- The propagation barrier (each admin API, both doors): a request whose write changed something
  returns once every live instance has applied that position, or after
  `store.propagation_timeout`, with `X-Gateway-Propagation: confirmed=K/N; revision=R`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.config import StoreSettings
from gateway.metrics import Histogram
from gateway.store.postgres import COMMITTED, Presence

log = logging.getLogger("gateway.fleet")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BARRIER_POLL = 0.005  # seconds between looks at the instances table while waiting
PROPAGATION: web.AppKey[Barrier] = web.AppKey("propagation", object)  # type: ignore[arg-type]


class Member:
    """This data plane's place in the fleet."""

    def __init__(
        self, presence: Presence, settings: StoreSettings, fresh: Callable[[], bool]
    ) -> None:
        self.presence = presence
        self.settings = settings
        self.fresh = fresh  # listening, and nothing announced that the index has not applied
        self.id = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.applied = 0
        self.reported = -1
        self.last_contact = time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, applied: int) -> None:
        self.applied = applied
        await self.presence.beat(self.id, self.host, self.pid, applied)
        self.reported = applied
        self.last_contact = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beat_forever())

    def applied_through(self, position: int) -> None:
        """The index has applied the change log through `position`: tell the fleet now."""
        self.last_contact = time.monotonic()
        if position > self.applied:
            self.applied = position
        if self.applied > self.reported:
            self._wake.set()

    def in_touch(self) -> None:
        """A poll found the index up to date with the store."""
        self.last_contact = time.monotonic()

    def staleness(self) -> float:
        return time.monotonic() - self.last_contact

    async def _beat_forever(self) -> None:
        every = min(1.0, self.settings.node_timeout / 3)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), every)
            self._wake.clear()
            applied = self.applied
            try:
                await self.presence.beat(self.id, self.host, self.pid, applied)
            except Exception as exc:
                log.warning("fleet heartbeat failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            self.reported = max(self.reported, applied)
            if self.fresh():
                # The store answered, the listening connection is up and every change it
                # announced is applied: as good as a poll.
                self.last_contact = time.monotonic()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.presence.leave(self.id)
        except Exception as exc:
            log.warning(
                "could not leave the fleet cleanly (others stop counting this instance "
                "after store.node_timeout): %s",
                exc,
            )


class Barrier:
    """Waits, after a change, until every live instance has applied it."""

    def __init__(self, presence: Presence, settings: StoreSettings) -> None:
        self.presence = presence
        self.settings = settings
        self.latency = Histogram()
        self.live: int | None = None  # live instances, as last counted

    async def wait(self, position: int) -> tuple[int, int | None]:
        """(confirmed, live); live is None when the store could not be asked at all."""
        started = time.monotonic()
        deadline = started + self.settings.propagation_timeout
        confirmed, live = 0, None
        while True:
            try:
                confirmed, live = await self.presence.confirmations(
                    position, self.settings.node_timeout
                )
            except Exception as exc:
                log.warning("cannot confirm propagation of change %d: %s", position, exc)
            else:
                self.live = live
                if confirmed >= live:
                    self.latency.observe(time.monotonic() - started)
                    return confirmed, live
            if time.monotonic() >= deadline:
                log.warning(
                    "change %d confirmed by %d of %s live instances within %.1fs",
                    position,
                    confirmed,
                    "unknown" if live is None else live,
                    self.settings.propagation_timeout,
                )
                self.latency.observe(time.monotonic() - started)
                return confirmed, live
            await asyncio.sleep(BARRIER_POLL)


@web.middleware
async def propagation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: after a request whose write changed the store, wait for the fleet."""
    COMMITTED.set(None)
    response = await handler(request)
    position = COMMITTED.get()
    if position is not None:
        confirmed, live = await request.app[PROPAGATION].wait(position)
        response.headers["X-Gateway-Propagation"] = (
            f"confirmed={confirmed}/{'unknown' if live is None else live}; revision={position}"
        )
    return response
