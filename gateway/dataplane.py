"""The data plane's handler: one coroutine per request on aiohttp's low-level server.

Its way reads top to bottom: refuse what cannot be read one way only (the head), catch up with
the key store if it moved, match routes, authenticate, apply the route's policy (scopes, path
parameters, callback origin), answer the gateway's own endpoints, otherwise build the upstream
request (identity in, credentials and spoofed headers out), stream it to the upstream pool and
the answer back. Also the access log line for every finished exchange.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from gateway import auth
from gateway.config import Settings, UpstreamTarget
from gateway.console.portal import Portal
from gateway.http.exchange import Exchange, answer_head
from gateway.http.protocol import (
    PlaneConnection,
    PlaneContext,
    PlaneServer,
    closing_problem,
    problem_body,
    protocol_settings,
)
from gateway.http.upstream import UpstreamCall, UpstreamError, UpstreamPool
from gateway.http.wire import BadRequest, render_headers, scan_request
from gateway.index import KeyEntry, KeyIndex
from gateway.logs import AccessLog
from gateway.metrics import PlaneMetrics
from gateway.origins import callback_values, origin_allowed
from gateway.routes import CHECKED_PARAMS, Route, RouteTable, has_dot_segments, normalise
from gateway.selfservice import SelfService, insufficient_scope
from gateway.signing import SecretBox
from gateway.store.base import Store
from gateway.sync import IndexSync
from gateway.usage import UsageRecorder

log = logging.getLogger("gateway.dataplane")
UNAUTHORIZED_HEADERS = [(b"Content-Type", b"text/plain"), (b"WWW-Authenticate", b"Bearer")]
UNAUTHORIZED_BODY = b"Unauthorized"
UNAUTHORIZED_HEAD = answer_head(401, UNAUTHORIZED_HEADERS, len(UNAUTHORIZED_BODY))
JSON_HEADERS = [(b"Content-Type", b"application/json")]
AUTH_PATHS = frozenset({b"/v1/auth", b"/v1/auth/"})
DISCARD_LIMIT = 1024 * 1024  # request body bytes read and dropped after an early answer
_HTTP11 = (1, 1)
_HTTP10 = (1, 0)


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
        box: SecretBox,
    ) -> None:
        self.settings = settings
        self.routes = RouteTable(settings.routes)
        self.selfservice = SelfService(settings, store, box)
        self.store, self.box = store, box
        self.portal = Portal(settings, store, box) if settings.portal.enabled else None
        self.index = index
        self.sync = sync
        self.usage = usage
        self.access_log = access_log
        self.ctx = ctx = PlaneContext(loop, settings.server)
        ctx.on_rejected = self._rejected
        self.server = PlaneServer(self.handle, ctx, **protocol_settings(settings.server))
        self.metrics = PlaneMetrics()
        up = settings.upstream
        self.pool = self._pool(up.url, "production")
        self.test_pool = self._pool(up.test_url, "test") if up.test_url is not None else None
        self.preserve_host = up.preserve_host
        self.prefix_len = len(settings.keys.prefix) + 9
        ctx.tick_hooks.append(self._expire_idle)
        ctx.tick_hooks.append(lambda _now: self.access_log.flush())
        # Fleet: seconds since the last confirmed contact with the store (None on one host);
        # past store.max_staleness keyed requests are refused until it catches up.
        self.staleness: Callable[[], float] | None = None
        self.out_of_touch = False
        ctx.tick_hooks.append(self._check_contact)

    def _pool(self, target: UpstreamTarget, name: str) -> UpstreamPool:
        ctx = self.ctx
        return UpstreamPool(
            ctx.loop, ctx.now, ctx.busy_upstreams, target, self.settings.upstream, name
        )

    def reload(self, settings: Settings) -> None:
        """Apply a new configuration without dropping a connection: routes, scopes, upstream,
        timeouts and limits take effect for the next request (aiohttp's parser limits for the
        next connection); requests in flight finish as they started."""
        self.settings = settings
        self.routes = RouteTable(settings.routes)
        self.selfservice.reload(settings)
        if not settings.portal.enabled:
            self.portal = None
        elif self.portal is None or self.portal.settings != settings.portal:
            self.portal = Portal(settings, self.store, self.box)
        else:
            self.portal.reload(settings)
        self.prefix_len = len(settings.keys.prefix) + 9
        ctx = self.ctx
        ctx.limits = settings.server
        ctx.trusted_proxies = settings.server.trusted_proxies
        self.server.protocol_kwargs = protocol_settings(settings.server)
        up = settings.upstream
        self.preserve_host = up.preserve_host
        if up.url == self.pool.target:
            self.pool.settings = up
        else:
            self.pool.retire()
            self.pool = self._pool(up.url, "production")
        if self.test_pool is not None and (
            up.test_url is None or up.test_url != self.test_pool.target
        ):
            self.test_pool.retire()
            self.test_pool = None
        if self.test_pool is not None:
            self.test_pool.settings = up
        elif up.test_url is not None:
            self.test_pool = self._pool(up.test_url, "test")
        self.access_log.reconfigure(settings.log)

    def pools(self) -> list[UpstreamPool]:
        return [p for p in (self.pool, self.test_pool) if p is not None]

    def _check_contact(self, now: float) -> None:
        if self.staleness is None:
            return
        out = self.staleness() > self.settings.store.max_staleness
        if out != self.out_of_touch:
            self.out_of_touch = out
            if out:
                log.error(
                    "no confirmed contact with the store for %.0fs: refusing keyed requests "
                    "with 503 until it is back (public routes keep working)",
                    self.settings.store.max_staleness,
                )
            else:
                log.warning("in touch with the store again: keyed requests are served")

    def _expire_idle(self, now: float) -> None:
        for pool in self.pools():
            pool.expire_idle(now)

    # -- per request -------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        conn = request.protocol
        assert isinstance(conn, PlaneConnection)
        ctx = self.ctx
        try:
            ex = self._exchange(request, conn)
        except BadRequest as exc:
            rid = ctx.new_request_id()
            await request.writer.write(closing_problem(ctx, exc.status, b"", rid))
            self._rejected(conn, exc.status, exc.reason, rid, request)
            return ctx.close
        conn.begin(ex)
        try:
            await self._exchange_with(ex)
            if not ex.close_after and not ex.request_done():
                # Answered without reading the whole body: drop the rest, up to a point.
                ex.close_after = not await ex.discard_body(DISCARD_LIMIT)
        except ConnectionError:
            ex.reason = ex.reason or "client_disconnected"
            ex.close_after = True
            if ex.call is not None:
                ex.call.abandon()
        except asyncio.CancelledError:
            ex.reason = ex.reason or "cancelled"
            if ex.call is not None:
                ex.call.abandon()
            raise
        finally:
            conn.end(ex)
            if not ex.response_started and ex.status == 0:
                ex.status = 499
            self.finished(ex)
        return ctx.close if ex.close_after or conn.closing else ctx.keep

    def _exchange(self, request: web.BaseRequest, conn: PlaneConnection) -> Exchange:
        """The request as the gateway reads it, or BadRequest for what it will not forward."""
        target = request.raw_path.encode("utf-8", "surrogateescape")
        if not target.startswith(b"/"):
            raise BadRequest(400, "request_target_not_origin_form")
        if target.find(b"#") >= 0:
            raise BadRequest(400, "fragment_in_request_target")
        q = target.find(b"?")
        if has_dot_segments(target if q < 0 else target[:q]):
            raise BadRequest(400, "dot_segment_in_path")
        version = request.version
        if version != _HTTP11 and version != _HTTP10:
            raise BadRequest(505, "http_version_not_supported")
        http11 = version == _HTTP11
        limits = self.ctx.limits
        head = scan_request(request.raw_headers, http11, limits.max_header_size)
        if limits.max_body_size and (head.content_length or 0) > limits.max_body_size:
            raise BadRequest(413, "body_too_large")
        request_id = head.request_id or self.ctx.new_request_id()
        return Exchange(request, conn, request.method.encode(), target, http11, head, request_id)

    async def _exchange_with(self, ex: Exchange) -> None:
        if self.portal is not None and self.portal.handles(ex.path):
            # The customer portal (gateway/console/): its own session cookie, no key.
            await self.portal.answer(ex)
            await ex.send_answer()
            return
        if self.sync.stale():
            # A key or account changed: catch up before deciding, so a revocation made before
            # this request arrived is honoured by it.
            await self.sync.refresh()
        matched: list[tuple[Route, dict[str, bytes]]] = []
        if self.routes:
            matched = self.routes.match(ex.method.decode("latin-1"), ex.path)
            if matched and all(route.public for route, _ in matched):
                await self._proxy(ex, self.pool, None)
                return
        if self.out_of_touch:
            ex.reason = "store_out_of_touch"
            ex.respond(
                503,
                [(b"Content-Type", b"application/problem+json"), (b"Retry-After", b"5")],
                problem_body(
                    503,
                    "This gateway has lost touch with the key store, so it cannot tell whether "
                    "a key is still valid. Retry shortly.",
                    None,
                    ex.path,
                    ex.request_id,
                ),
            )
            await ex.send_answer()
            return
        now = time.time()
        principal, reason = auth.authenticate(ex.head.authorization, self.index, now)
        if reason is not None:
            ex.principal = principal
            ex.reason = reason
            ex.respond_prebuilt(401, UNAUTHORIZED_HEAD, UNAUTHORIZED_BODY)
            await ex.send_answer()
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
        elif path.find(b"access-keys") >= 0 and SelfService.handles(normalise(path)):
            await self.selfservice.answer(ex, principal)
        else:
            for route, params in matched:
                if not self._allowed(ex, principal, route, params):
                    break
            else:
                pool = (
                    self.test_pool
                    if principal.is_test and self.test_pool is not None
                    else self.pool
                )
                await self._proxy(ex, pool, principal)
                return
        await ex.send_answer()

    async def _proxy(self, ex: Exchange, pool: UpstreamPool, principal: KeyEntry | None) -> None:
        head = ex.head
        has_body = head.chunked or bool(head.content_length)
        if head.expect_continue:
            await ex.send_continue()
        call = ex.call = pool.call(
            self.upstream_head(ex, pool, principal), ex.method, has_body=has_body
        )
        pump: asyncio.Task[None] | None = None
        if has_body:
            pump = self.ctx.loop.create_task(self._pump(ex, call))
        else:
            call.end(False)
        try:
            await ex.relay(call)
        except UpstreamError as exc:
            detail = None
            if ex.body_error is not None:
                status = {"body_too_large": 413, "body_timeout": 408}.get(ex.body_error, 400)
                if status == 408:
                    detail = "The request body stopped arriving."
                ex.reason = ex.reason or ex.body_error
                ex.close_after = True
            elif exc.reason == "abandoned":
                # The client left before the upstream answered: nobody to answer. Logged as
                # 499 (nginx's "client closed request"), not as an upstream failure.
                ex.reason = ex.reason or "client_disconnected"
                ex.close_after = True
                return
            else:
                status = exc.status
                ex.reason = exc.reason
            ex.respond_problem(status, detail, None)
            await ex.send_answer()
        finally:
            if pump is not None and not pump.done():
                call.abandon()
                pump.cancel()
            ex.call = None

    async def _pump(self, ex: Exchange, call: UpstreamCall) -> None:
        """The request body, from the client to the upstream, as it arrives: reading from the
        client waits while the upstream is not taking it."""
        chunked = ex.head.chunked
        limit = self.ctx.limits.max_body_size
        content = ex.request.content
        try:
            if not await call.ready():
                return
            while True:
                data = await content.readany()
                if not data:
                    break
                ex.body_received += len(data)
                if limit and ex.body_received > limit:
                    ex.body_error = "body_too_large"
                    call.abandon()
                    return
                call.send(data, chunked)
                await call.drained()
            call.end(chunked)
        except asyncio.CancelledError:
            raise
        except Exception:  # a framing error, a stalled body or the client gone: stop here
            ex.body_error = ex.body_error or "bad_request_body"
            ex.close_after = True
            call.abandon()

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

    def _rejected(
        self,
        conn: PlaneConnection,
        status: int,
        reason: str,
        request_id: bytes,
        request: web.BaseRequest | None = None,
    ) -> None:
        """A request refused before it became an exchange (unparseable, head too slow, ...)."""
        self.metrics.observe(status, reason, -1.0, False)
        if not self.access_log.enabled:
            return
        path = b"-"
        if request is not None:
            path = request.raw_path.encode("utf-8", "surrogateescape").split(b"?")[0][:200]
        self.access_log.write(
            {
                "msg": "request",
                "request_id": request_id.decode("latin-1"),
                "method": request.method if request is not None else "-",
                "path": path.decode("latin-1"),
                "status": status,
                "duration_ms": 0.0,
                "bytes_out": 0,
                "bytes_in": 0,
                "client_ip": conn.peer,
                "reason": reason,
            }
        )

    async def close(self) -> None:
        for pool in self.pools():
            await pool.close()
        self.access_log.flush()
