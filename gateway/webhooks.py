"""Delivering webhook events from the outbox (contract section 9).

The sender runs beside the admin API (in every instance of a fleet). It claims due deliveries
with a lease, signs each with the key's signing secret (and, during a rotation's overlap, the
previous one too) in the Standard Webhooks format using the reference library, POSTs it with
aiohttp's client (no redirects, a timeout, at most 64 KiB of the answer read), and records the
attempt: `succeeded` on a 2xx, else again after the next step of `webhooks.retry_schedule`, and
`failed` after the last. The egress rules are applied again to the address actually connected
to (a resolver that refuses private answers), so a name re-pointed since it was saved cannot
reach inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from standardwebhooks import Webhook

from gateway.config import WebhookSettings
from gateway.egress import address_allowed, split_url
from gateway.errors import ProblemError, StoreError
from gateway.signing import SecretBox
from gateway.store.records import Delivery
from gateway.store.sql import SqlStore
from gateway.timeutil import now_us, to_rfc3339

log = logging.getLogger("gateway.webhooks")
READ_LIMIT = 64 * 1024
_NUMERIC = re.compile(r"[0-9.]+")
IDLE = 1.0  # longest sleep between looks at the outbox (for what other processes queue)
BATCH = 20
EXPIRY_LOOK = 1.0  # seconds between looks for keys whose expiry notice is due
EXPIRY_BATCH = 100


class Refused(Exception):
    """This delivery cannot be made (the egress rules refuse its address, the key is gone or
    its webhook switched off): failed at once, no retries."""


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp does, then refuses the lot if any answer is not allowed."""

    def __init__(self, settings: Callable[[], WebhookSettings]) -> None:
        self._settings = settings
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            address = ipaddress.ip_address(answer["host"].split("%")[0])
            if not address_allowed(address, self._settings().allow_networks):
                raise OSError(f"{host} resolves to a refused address")
        return answers

    async def close(self) -> None:
        await self._inner.close()


class Sender:
    def __init__(self, store: SqlStore, box: SecretBox, settings: WebhookSettings) -> None:
        self.store = store
        self.box = box
        self.settings = settings
        self.outcomes = {"succeeded": 0, "retried": 0, "failed": 0}
        self.depth = 0  # pending deliveries (outbox depth), as last counted
        self.oldest_age = 0.0  # seconds the oldest pending delivery has waited
        self._counted = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        store.on_queued = self._wake.set  # this process queued something: send it now

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(lambda: self.settings),
                use_dns_cache=False,
                force_close=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    async def run_forever(self) -> None:
        """Send what is due, then sleep until the next delivery is due, this process queues
        one, or IDLE passes (another process, or instance, may have queued one)."""
        while True:
            wait = IDLE
            try:
                if time.monotonic() - self._counted >= 2.0:
                    self._counted = time.monotonic()
                    self.depth, oldest = await self.store.outbox_stats()
                    self.oldest_age = 0.0 if oldest is None else (now_us() - oldest) / 1e6
                self._wake.clear()
                if await self.send_due():
                    continue
                due = await self.store.next_delivery_at()
                if due is not None:
                    # (a floor: a row another claimant is taking looks due until it commits)
                    wait = min(IDLE, max(0.02, (due - now_us()) / 1e6))
            except StoreError as exc:
                log.warning("webhook outbox unavailable: %s", exc)
            except Exception:  # the sender must outlive anything one delivery does
                log.exception("webhook sender failed; going on")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def watch_expiry_forever(self) -> None:
        """Raise key.expiring and key.expired when they fall due (each once, fleet-wide)."""
        while True:
            try:
                warning = int(self.settings.expiry_warning_days * 86400 * 1_000_000)
                while await self.store.raise_expiry_events(now_us(), warning) >= EXPIRY_BATCH:
                    pass  # a backlog (many keys, or a long stop): keep going until done
            except StoreError as exc:
                log.warning("cannot look for expiring keys: %s", exc)
            except Exception:
                log.exception("expiry watch failed; going on")
            await asyncio.sleep(EXPIRY_LOOK)

    async def send_due(self) -> int:
        # The lease outlasts an attempt (timeout) with room to record it.
        lease = int((self.settings.timeout * 2 + 5) * 1_000_000)
        token = uuid.uuid4().hex
        due = await self.store.claim_deliveries(now_us(), lease, BATCH, token)
        if due:
            await asyncio.gather(*(self.deliver(d, token) for d in due), return_exceptions=True)
        return len(due)

    async def deliver(self, delivery: Delivery, token: str) -> None:
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        final = False
        try:
            status_code = await self._attempt(delivery)
        except Refused as exc:
            error, final = f"refused: {exc}", True
        except TimeoutError:
            error = f"no answer within {self.settings.timeout:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            error = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
        except Exception as exc:  # e.g. a secret that no longer opens: say what, never how
            log.error("webhook delivery %s: %s", delivery.id, exc.__class__.__name__)
            error = f"internal error ({exc.__class__.__name__})"
        attempt: dict[str, Any] = {
            "at": to_rfc3339(now_us()),
            "status_code": status_code,
            "error": error,
            "duration_ms": round((time.monotonic() - started) * 1000.0, 1),
        }
        schedule = self.settings.retry_schedule
        if status_code is not None and 200 <= status_code < 300:
            outcome, next_at = "succeeded", None
        elif not final and delivery.attempts < len(schedule):
            outcome = "pending"
            next_at = now_us() + int(schedule[delivery.attempts] * 1_000_000)
        else:
            outcome, next_at = "failed", None
        if not await self.store.finish_attempt(delivery.id, token, attempt, outcome, next_at):
            return  # the lease was lost (an admin retry, or it ran out): not ours to record
        self.outcomes["retried" if outcome == "pending" else outcome] += 1
        if outcome == "failed":
            log.warning(
                "webhook delivery %s to key %s failed for good after %d attempts",
                delivery.id,
                delivery.key_id,
                delivery.attempts + 1,
            )

    async def _attempt(self, delivery: Delivery) -> int:
        target = await self.store.webhook_target(delivery.key_id)
        if target is None:
            raise Refused("the key no longer exists")
        if not target.enabled or target.url is None:
            raise Refused("the key's webhook is switched off")
        url = target.url  # where the key's webhook points now, not when the event was queued
        try:
            host, _ = split_url(url, self.settings)
        except ProblemError as exc:
            raise Refused("the URL is no longer allowed") from exc
        # aiohttp takes any all-digits-and-dots host (2130706433, 127.1, 0177.0.0.1) for an
        # address and skips the resolver: only a canonical address may be a literal here.
        if _NUMERIC.fullmatch(host) or ":" in host:
            try:
                literal = ipaddress.ip_address(host)
            except ValueError:
                raise Refused(f"{host} is not a canonical address") from None
            if not address_allowed(literal, self.settings.allow_networks):
                raise Refused(f"{host} is not a public address")
        if target.sealed is None:
            raise Refused("the key has no signing secret (rotate it to get one)")
        secrets = [self.box.open(target.sealed, delivery.key_id)]
        until = target.previous_until
        if target.previous is not None and until is not None and until > now_us():
            secrets.append(self.box.open(target.previous, delivery.key_id))
        timestamp = datetime.now(UTC)
        signature = " ".join(
            Webhook(secret).sign(delivery.id, timestamp, delivery.body) for secret in secrets
        )
        headers = {
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signature,
            "Content-Type": "application/json",
            "User-Agent": "keygate-webhooks",
        }
        async with self.session().post(
            url,
            data=delivery.body.encode(),
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
        ) as resp:
            await resp.content.read(READ_LIMIT)  # no more than this of an answer, ever
            return resp.status

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
