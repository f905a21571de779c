""" "The store changed, catch up": how a data plane learns that its in-memory key index is
behind, without a query per request. `read()` is called on every request and is a memory load.

- One host (SQLite): the revision counter in a memory-mapped file beside the database
  (gateway/store/revision.py), bumped by every writer after its commit.
- A fleet (PostgreSQL): LISTEN on the channel every change NOTIFYs in its own transaction; the
  payload is the change-log position. After a lost connection it reconnects and reads the
  newest position (the change log is then replayed by the index sync), and `IndexSync`'s poll
  every `store.poll_seconds` is the safety net for anything missed in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway.store.revision import RevisionCounter

if TYPE_CHECKING:
    from gateway.store.postgres import PostgresStore

log = logging.getLogger("gateway.changes")
RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)


class ChangeSignal(Protocol):
    def read(self) -> int:
        """The newest change the store is known to have (compared with what was applied)."""
        ...

    def saw(self, position: int) -> None:
        """A poll found the store at `position`."""
        ...

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class CounterSignal:
    """The single-host signal: the shared memory-mapped revision counter."""

    def __init__(self, counter: RevisionCounter) -> None:
        self.read = counter.read

    def saw(self, position: int) -> None:
        pass  # the counter counts commits, not positions: the poll refreshes by itself

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class NotifySignal:
    """The fleet signal: PostgreSQL LISTEN/NOTIFY on a connection of its own."""

    def __init__(self, store: PostgresStore, channel: str) -> None:
        self.store = store
        self.channel = channel
        self.latest = 0
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_change: Callable[[], None] = lambda: None  # the store moved past what we knew

    def read(self) -> int:
        return self.latest

    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def saw(self, position: int) -> None:
        if position > self.latest:
            self.latest = position
            self.on_change()

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.get_running_loop().create_task(self._keep_listening())

    async def _listen(self) -> None:
        conn = await self.store.connect()
        self._conn = conn  # before anything can fail: a loss from here on is noticed
        self._lost.clear()
        try:
            conn.add_termination_listener(self._terminated)
            await conn.add_listener(self.channel, self._notified)
            # Read after LISTEN: a change committed in between is not missed.
            self.saw(await self.store.latest_change())
            if conn.is_closed():
                raise ConnectionError("the listening connection closed while starting")
        except BaseException:
            self._conn = None
            conn.terminate()
            raise

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            position = int(payload)
        except ValueError:
            return
        self.saw(position)

    def _terminated(self, conn: Any) -> None:
        if conn is self._conn:
            log.warning("change notifications lost (store connection closed); reconnecting")
            self._lost.set()

    async def _keep_listening(self) -> None:
        while True:
            await self._lost.wait()
            old, self._conn = self._conn, None
            if old is not None:
                old.terminate()
            for attempt in range(1_000_000_000):
                await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
                try:
                    await self._listen()
                except Exception as exc:
                    if attempt % 30 == 0:  # at once, then about once a minute
                        log.warning("cannot listen for changes yet: %s", exc)
                    continue
                log.info("listening for changes again (store at change %d)", self.latest)
                break

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
