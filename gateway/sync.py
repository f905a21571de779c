"""Keeps the in-memory key index coherent with the store, in every worker.

Per request the data plane asks `stale()`: one read of the change signal (gateway/changes.py).
When it has moved, the request waits while the change log is read and applied (one refresh in
flight at a time; every waiting request resumes when it lands). A poll of the change log every
`store.poll_seconds` is the safety net for a signal that never came (a writer that died between
commit and bump, a notification lost with its connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.changes import ChangeSignal
from gateway.index import KeyIndex
from gateway.store.base import Store

log = logging.getLogger("gateway.sync")
RETRY_DELAY = 0.1  # seconds between refresh attempts while the store cannot be read


class IndexSync:
    def __init__(self, store: Store, index: KeyIndex, signal: ChangeSignal) -> None:
        self.store = store
        self.index = index
        self.signal = signal
        self._read = signal.read
        self.seen = signal.read()
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[Callable[[], None]] = []
        self.failures = 0
        self._retry_at = 0.0
        # Fleet hooks (gateway/fleet.py): the index applied through a position; a poll found
        # it up to date.
        self.on_applied: Callable[[int], None] = lambda position: None
        self.on_contact: Callable[[], None] = lambda: None

    async def load(self) -> None:
        """Full snapshot (start-up, or when the change log no longer reaches back far enough)."""
        self.seen = self._read()
        await self.store.snapshot(self.index)
        self.on_applied(self.index.seq)

    def stale(self) -> bool:
        if self._read() == self.seen:
            return False
        # After a failed refresh, requests go on from memory for RETRY_DELAY, then the next
        # one tries again: the store being unreadable must not take the data plane down.
        return not self.failures or time.monotonic() >= self._retry_at

    async def stop(self) -> None:
        """Cancel a refresh in flight (shutting down: the store is about to close)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def catch_up(self) -> None:
        """Apply what the store has now, without waiting for a request to ask (fleet)."""
        self.when_fresh(lambda: None)

    def when_fresh(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the index has caught up with the revision counter."""
        self._waiters.append(callback)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def refresh(self) -> None:
        """Catch up now (used by the poller and by tests)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        self.when_fresh(wake)
        await done

    async def _refresh(self) -> None:
        try:
            for _ in range(100):
                target = self._read()
                changes = await self.store.changes_since(self.index.seq)
                if changes is None:
                    await self.store.snapshot(self.index)
                else:
                    self.index.apply(changes)
                self.seen = target
                if self._read() == target:
                    break
            self.failures = 0
            self.on_applied(self.index.seq)
        except Exception as exc:
            self.failures += 1
            self._retry_at = time.monotonic() + RETRY_DELAY
            log.error("key index refresh failed (serving from memory, retrying): %s", exc)
        finally:
            self._task = None
            waiters, self._waiters = self._waiters, []
            for callback in waiters:
                try:
                    callback()
                except Exception:
                    log.exception("resuming a request after index refresh failed")

    async def poll_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                latest = await self.store.latest_change()
            except Exception as exc:
                log.warning("change-log poll failed: %s", exc)
                continue
            self.signal.saw(latest)
            if latest != self.index.seq:
                await self.refresh()
            else:
                self.on_contact()
