"""Write-behind of `last_used_*`: the hot path stores a tuple in a dict; a background task
writes the newest use of each key every `store.usage_flush_seconds` and once more at shutdown."""

from __future__ import annotations

import asyncio
import logging

from gateway.store.base import Store

log = logging.getLogger("gateway.usage")


class UsageRecorder:
    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._pending: dict[str, tuple[float, str, bytes | None]] = {}
        self.oldest_pending = 0.0

    def record(self, key_id: str, now: float, ip: str, user_agent: bytes | None) -> None:
        pending = self._pending
        if not pending:
            self.oldest_pending = now
        pending[key_id] = (now, ip, user_agent)

    def lag(self, now: float) -> float:
        """Seconds the oldest unwritten use has been waiting."""
        return now - self.oldest_pending if self._pending else 0.0

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        oldest = self.oldest_pending
        rows = [
            (
                key_id,
                int(at * 1_000_000),
                ip or None,
                None if ua is None else ua[:512].decode("utf-8", "replace"),
            )
            for key_id, (at, ip, ua) in batch.items()
        ]
        try:
            await self.store.record_usage(rows)
        except BaseException as exc:  # cancelled at shutdown too: the final flush retries it
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("usage flush failed, will retry: %s", exc)
            for key_id, value in batch.items():  # newer uses recorded meanwhile win
                self._pending.setdefault(key_id, value)
            self.oldest_pending = min(oldest, self.oldest_pending) if self._pending else oldest
            if not isinstance(exc, Exception):
                raise

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
