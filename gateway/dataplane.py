"""The data plane's policy: authenticate each exchange, answer the gateway's own endpoints,
otherwise build the upstream request (identity in, credentials and spoofed headers out) and
hand it to the right upstream pool. Also the access log line for every finished exchange.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from gateway import auth
from gateway.config import Settings
from gateway.http.server import PAUSE_DISPATCH, ClientConnection, Exchange, HttpContext
from gateway.http.upstream import UpstreamPool
from gateway.http.wire import render_headers
from gateway.index import KeyEntry, KeyIndex
from gateway.logs import AccessLog
from gateway.metrics import PlaneMetrics
from gateway.origins import callback_values, origin_allowed
from gateway.routes import CHECKED_PARAMS, Route, RouteTable, normalise
from gateway.selfservice import SelfService, insufficient_scope
from gateway.store.base import Store
from gateway.sync import IndexSync
from gateway.usage import UsageRecorder

UNAUTHORIZED_HEADERS = [(b"Content-Type", b"text/plain"), (b"WWW-Authenticate", b"Bearer")]
UNAUTHORIZED_BODY = b"Unauthorized"
JSON_HEADERS = [(b"Content-Type", b"application/json")]
AUTH_PATHS = frozenset({b"/v1/auth", b"/v1/auth/"})


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        index: KeyIndex,
        sync: IndexSync,
        usage: UsageRecorder,
        access_log: AccessLog,
        loop: asyncio.AbstractEventLoop,
        store: Store,
    ) -> None:
        self.settings = settings
        self.routes = RouteTable(settings.routes)
        self.selfservice = SelfService(settings, store)
        self.index = index
        self.sync = sync
        self.usage = usage
        self.access_log = access_log
        self.ctx = HttpContext(loop, settings.server, self)
        self.metrics = PlaneMetrics()
        up = settings.upstream
        self.pool = UpstreamPool(self.ctx, up.url, up, "production")
        self.test_pool = (
            UpstreamPool(self.ctx, up.test_url, up, "test") if up.test_url is not None else None
        )
        self.preserve_host = up.preserve_host
        self.prefix_len = len(settings.keys.prefix) + 9
        self.ctx.tick_hooks.append(self._expire_idle)
        self.ctx.tick_hooks.append(lambda _now: self.access_log.flush())

    def reload(self, settings: Settings) -> None:
        """Apply a new configuration without dropping a connection: routes, scopes, upstream,
        timeouts and limits take effect for the next request; requests in flight finish as
        they started."""
        self.settings = settings
        self.routes = RouteTable(settings.routes)
        self.selfservice.settings = settings
        self.prefix_len = len(settings.keys.prefix) + 9
        ctx = self.ctx
        ctx.limits = settings.server
        ctx.trusted_proxies = settings.server.trusted_proxies
        up = settings.upstream
        self.preserve_host = up.preserve_host
        if up.url == self.pool.target:
            self.pool.settings = up
        else:
            self.pool.retire()
            self.pool = UpstreamPool(ctx, up.url, up, "production")
        if self.test_pool is not None and (
            up.test_url is None or up.test_url != self.test_pool.target
        ):
            self.test_pool.retire()
            self.test_pool = None
        if self.test_pool is not None:
            self.test_pool.settings = up
        elif up.test_url is not None:
            self.test_pool = UpstreamPool(ctx, up.test_url, up, "test")
        self.access_log.reconfigure(settings.log)

    def protocol(self) -> ClientConnection:
        return ClientConnection(self.ctx)

    def pools(self) -> list[UpstreamPool]:
        return [p for p in (self.pool, self.test_pool) if p is not None]

    def _expire_idle(self, now: float) -> None:
        for pool in self.pools():
            pool.expire_idle(now)

    # -- per request -------------------------------------------------------------------------

    def dispatch(self, ex: Exchange) -> None:
        if self.sync.stale():
            # A key or account changed: catch up before deciding, so a revocation made before
            # this request arrived is honoured by it.
            conn = ex.conn
            conn.pause(PAUSE_DISPATCH)

            def resume() -> None:
                conn.resume(PAUSE_DISPATCH)
                if conn.transport is not None and not ex.finished:
                    self._dispatch(ex)

            self.sync.when_fresh(resume)
            return
        self._dispatch(ex)

    def _dispatch(self, ex: Exchange) -> None:
        matched: list[tuple[Route, dict[str, bytes]]] = []
        if self.routes:
            matched = self.routes.match(ex.method.decode("latin-1"), ex.path)
            if matched and all(route.public for route, _ in matched):
                ex.proxy(self.pool, self.upstream_head(ex, self.pool, None))
                return
        now = time.time()
        principal, reason = auth.authenticate(ex.head.authorization, self.index, now)
        if reason is not None:
            ex.principal = principal
            ex.reason = reason
            ex.respond(401, UNAUTHORIZED_HEADERS, UNAUTHORIZED_BODY)
            return
        assert principal is not None
        ex.principal = principal
        self.usage.record(principal.id, now, ex.conn.peer, ex.head.user_agent)
        path = ex.path
        if path in AUTH_PATHS:
            body = orjson.dumps(
                {"account_id": principal.account.id, "message": "Authentication successful"}
            )
            ex.respond(200, JSON_HEADERS, body)
            return
        if b"access-keys" in path:
            segments = normalise(path)
            if SelfService.handles(segments):
                self.selfservice.start(ex, principal, segments)
                return
        for route, params in matched:
            if not self._allowed(ex, principal, route, params):
                return
        pool = self.test_pool if principal.is_test and self.test_pool is not None else self.pool
        ex.proxy(pool, self.upstream_head(ex, pool, principal))

    def _allowed(
        self, ex: Exchange, principal: KeyEntry, route: Route, params: dict[str, bytes]
    ) -> bool:
        """Scopes (any of), path parameters within the key's lists, callback origin."""
        if route.scopes and not any(s in principal.scopes for s in route.scopes):
            insufficient_scope(ex, route.scopes)
            return False
        for name, value in params.items():
            field = CHECKED_PARAMS.get(name)
            if field is None:
                continue
            allowed: tuple[str, ...] | None = getattr(principal, field)
            if allowed is not None and value.decode("utf-8", "replace") not in allowed:
                ex.reason = f"{name}_not_allowed"
                ex.respond_problem(404, "No such resource for this key.", None)
                return False
        if route.callback_param is not None:
            values = callback_values(ex.query, route.callback_param)
            if values is None or not all(
                origin_allowed(v, principal.account.origins) for v in values
            ):
                ex.reason = "unauthorized_origin"
                ex.respond_problem(
                    403,
                    f"The {route.callback_param} is not on this account's list of allowed "
                    "callback origins.",
                    "unauthorized origin",
                    {"type": "urn:gateway:problem:unauthorized-origin"},
                )
                return False
        return True

    def upstream_head(self, ex: Exchange, pool: UpstreamPool, principal: KeyEntry | None) -> bytes:
        """The request head the upstream receives."""
        head = ex.head
        conn = ex.conn
        target = pool.base_path + ex.target if pool.base_path else ex.target
        parts = [ex.method, b" ", target, b" HTTP/1.1\r\n", *render_headers(head.kept)]
        host = head.host if self.preserve_host and head.host else pool.authority
        parts += (b"Host: ", host, b"\r\nX-Forwarded-For: ")
        if conn.trusted and head.xff:
            parts += (b", ".join(head.xff), b", ")
        parts += (conn.peer_bytes, b"\r\nX-Forwarded-Proto: ")
        parts.append(head.xfp if conn.trusted and head.xfp else b"http")
        forwarded_host = head.xfh if conn.trusted and head.xfh else head.host
        if forwarded_host:
            parts += (b"\r\nX-Forwarded-Host: ", forwarded_host)
        parts.append(b"\r\n")
        if conn.trusted and head.forwarded:
            parts += render_headers(head.forwarded)
        if principal is not None:
            parts.append(principal.identity_headers())
        parts += (b"X-Request-Id: ", ex.request_id, b"\r\n")
        if head.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        elif head.content_length is not None:
            parts.append(b"Content-Length: %d\r\n\r\n" % head.content_length)
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    # -- after each exchange -----------------------------------------------------------------

    def finished(self, ex: Exchange) -> None:
        self.metrics.observe(ex.status, ex.reason, ex.upstream_ms, ex.status == 401)
        if not self.access_log.enabled:
            return
        p = ex.principal
        fields: dict[str, Any] = {
            "msg": "request",
            "request_id": ex.request_id.decode("latin-1"),
            "method": ex.method.decode("latin-1"),
            "path": ex.path.decode("latin-1")[:1024],
            "status": ex.status,
            "duration_ms": round((self.ctx.loop.time() - ex.started) * 1000.0, 3),
            "bytes_out": ex.bytes_out,
            "bytes_in": ex.body_received,
            "client_ip": ex.conn.peer,
        }
        if p is not None:
            fields["account_id"] = p.account.id
            fields["key_id"] = p.id
            fields["environment"] = p.environment
        if p is not None or ex.reason is not None:
            prefix = auth.presented_prefix(ex.head.authorization, self.prefix_len)
            if prefix is not None:
                fields["key_prefix"] = prefix
        if ex.upstream_status:
            fields["upstream_status"] = ex.upstream_status
            fields["upstream_ms"] = round(ex.upstream_ms, 3)
        if ex.reason is not None:
            fields["reason"] = ex.reason
        self.access_log.write(fields)

    async def close(self) -> None:
        await self.selfservice.close()
        for pool in self.pools():
            await pool.close()
        self.access_log.flush()
