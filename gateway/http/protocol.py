"""The data plane's client side on aiohttp's low-level server (`aiohttp.web.Server`): aiohttp
parses (llhttp), keeps connections alive, pipelines and applies its size limits; this module
adds, through the server's protocol factory and `RequestHandler`'s hooks, what aiohttp has no
knob for:

- a deadline for receiving a request head (`408`), for a stalled body and for a client that
  stops reading what we send, all checked by one coarse ticker rather than a timer each;
- a cap on open connections (`503` and close);
- parse errors answered as problem+json with `Server: keygate`, logged as one warning line
  without the client's bytes (aiohttp's default logs a traceback and answers text);
- graceful drain: idle connections closed, busy ones told `Connection: close`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.config import ServerSettings
from gateway.http.wire import REASONS, status_line

if TYPE_CHECKING:
    from gateway.http.exchange import Exchange
    from gateway.http.upstream import UpstreamConnection

log = logging.getLogger("gateway.http")

SERVER = b"keygate"


class Sent(web.StreamResponse):
    """What a handler hands back to aiohttp once it wrote the whole response itself through
    `request.writer`: nothing is left to prepare or send; only keep-alive is read from it."""

    def __init__(self, keep_alive: bool) -> None:
        super().__init__()
        self._keep = keep_alive

    @property
    def keep_alive(self) -> bool:
        return self._keep

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class PlaneContext:
    """Shared by every connection of one data-plane listener: limits, clock, bookkeeping."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: ServerSettings) -> None:
        self.loop = loop
        self.limits = limits
        self.clock = loop.time()
        self.date = b""
        self.connections: set[PlaneConnection] = set()
        self.busy_upstreams: set[UpstreamConnection] = set()
        self.draining = False
        self.trusted_proxies = limits.trusted_proxies
        self.tick_hooks: list[Callable[[float], None]] = []
        self.on_rejected: Callable[[PlaneConnection, int, str, bytes], None] | None = None
        self.keep = Sent(keep_alive=True)
        self.close = Sent(keep_alive=False)
        self._date_second = -1
        self._rid_prefix = os.urandom(8).hex().encode()
        self._rid_counter = 0
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_every = 0.25
        self.tick()

    def now(self) -> float:
        return self.clock

    def start(self, tick_every: float) -> None:
        self._tick_every = tick_every
        self._schedule()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def _schedule(self) -> None:
        self._ticker = self.loop.call_later(self._tick_every, self._on_tick)

    def _on_tick(self) -> None:
        try:
            self.tick()
            now = self.clock
            for conn in list(self.connections):
                conn.check(now)
            for up in list(self.busy_upstreams):
                up.check_idle(now)
        except Exception:  # the ticker must survive anything one connection does
            log.exception("data-plane ticker failed")
        finally:
            for hook in self.tick_hooks:  # each runs whatever another one did
                try:
                    hook(self.clock)
                except Exception:
                    log.exception("data-plane tick hook failed")
            self._schedule()

    def tick(self) -> None:
        self.clock = self.loop.time()
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self.date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second)).encode()

    def new_request_id(self) -> bytes:
        """32 hex characters: a random per-process prefix and a counter (unique, no syscall)."""
        self._rid_counter += 1
        return self._rid_prefix + b"%016x" % self._rid_counter


_DETAILS = {
    400: "The request could not be parsed.",
    408: "The request head was not received in time.",
    413: "The request body is larger than the gateway accepts.",
    414: "The request line is longer than the gateway accepts.",
    417: "Only 'Expect: 100-continue' is supported.",
    431: "The request headers are larger than the gateway accepts.",
    502: "The upstream service could not be reached or sent an invalid response.",
    503: "The gateway is at its connection limit.",
    504: "The upstream service did not answer in time.",
}


def problem_body(
    status: int,
    detail: str | None,
    title: str | None,
    instance: bytes,
    request_id: bytes,
    extra: dict[str, object] | None = None,
) -> bytes:
    doc: dict[str, object] = {
        "type": "about:blank",
        "title": title or REASONS.get(status, b"Error").decode(),
        "status": status,
        "detail": detail or _DETAILS.get(status, ""),
        "instance": instance.decode("latin-1"),
        "request_id": request_id.decode("latin-1"),
    }
    if extra:
        doc.update(extra)
    return orjson.dumps(doc)


def closing_problem(ctx: PlaneContext, status: int, instance: bytes, rid: bytes) -> bytes:
    """A whole problem+json response that ends the connection."""
    body = problem_body(status, None, None, instance, rid)
    return (
        status_line(status) + b"Content-Type: application/problem+json\r\nContent-Length: %d\r\n"
        b"X-Request-Id: %s\r\nServer: keygate\r\nDate: %s\r\nConnection: close\r\n\r\n%s"
        % (len(body), rid, ctx.date, body)
    )


class PlaneConnection(RequestHandler):
    """aiohttp's per-connection protocol, with the data plane's deadlines and bookkeeping."""

    def __init__(self, manager: PlaneServer, ctx: PlaneContext, **kwargs: Any) -> None:
        super().__init__(manager, loop=ctx.loop, **kwargs)
        self.ctx = ctx
        self.peer = ""
        self.peer_bytes = b""
        self.trusted = False
        self.closing = False  # no further requests: the response in flight says so
        self.exchange: Exchange | None = None
        self.fresh = True  # no request yet: the idle limit is header_timeout, not keep-alive
        now = ctx.clock
        self.idle_since = now
        self.last_read = now
        self.head_started: float | None = None  # bytes of a head not yet dispatched
        self._tail = b""  # the last 4 bytes read: does the stream end at a head's end?
        self.write_paused_since = now
        self._refused = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ctx = self.ctx
        if len(ctx.connections) >= ctx.limits.max_connections or ctx.draining:
            self._refused = True
            body = problem_body(503, None, None, b"", ctx.new_request_id())
            transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
                b"Content-Length: %d\r\nServer: keygate\r\nConnection: close\r\n"
                b"Retry-After: 1\r\n\r\n%s" % (len(body), body)
            )
            transport.close()
            return
        super().connection_made(transport)
        ctx.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.peer_bytes = self.peer.encode()
        if ctx.trusted_proxies and self.peer:
            try:
                addr = ipaddress.ip_address(self.peer)
            except ValueError:
                addr = None
            self.trusted = addr is not None and any(addr in net for net in ctx.trusted_proxies)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self.ctx.connections.discard(self)
        self.closing = True
        ex = self.exchange
        if ex is not None:
            ex.client_gone()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        now = self.ctx.clock
        self.last_read = now
        ex = self.exchange
        tail = self._tail = (self._tail + data[-4:])[-4:]  # no copy of the whole read
        if ex is None or ex.request_done():
            if tail == b"\r\n\r\n":
                self.head_started = None  # the stream is at the end of a head: none pending
            elif self.head_started is None:
                self.head_started = now  # these bytes begin a new request's head
        super().data_received(data)
        # `_messages` is aiohttp's queue of parsed requests (RequestHandler, 3.14): read only.
        if ex is not None and getattr(self, "_messages", None) and not ex.request_done():
            # aiohttp queued a parse error while this request's body was open (a bad chunk in
            # a later read): its payload never learns of it, so tell it, and stop waiting.
            ex.request.content.set_exception(BadHttpMessage("malformed request body"))

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_paused_since = self.ctx.clock

    @property
    def write_paused(self) -> bool:
        return self.writing_paused

    # -- what the handler reports ------------------------------------------------------------

    def begin(self, ex: Exchange) -> None:
        self.exchange = ex
        self.fresh = False
        if not ex.bodyless:
            self.head_started = None  # what follows the head is this request's body

    def end(self, ex: Exchange) -> None:
        if self.exchange is ex:
            self.exchange = None
        self.idle_since = self.ctx.clock

    # -- parse errors ------------------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's hook for requests it could not parse (and for handler failures)."""
        limits = self.ctx.limits
        reason = "bad_request"
        if isinstance(exc, LineTooLong):
            line, limit = exc.args[0], exc.args[1]
            url_line = limit == limits.max_request_line and (
                limit != limits.max_header_size or bytes(line).startswith(b"/")
            )
            status, reason = (
                (414, "request_line_too_long") if url_line else (431, "header_too_large")
            )
        elif isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message):
            status, reason = 431, "too_many_headers"
        elif status == 500:
            reason = "internal_error"
            log.error("data-plane request handling failed", exc_info=exc)
        elif isinstance(exc, BadHttpMessage):
            # One line, without the client's bytes: aiohttp's message quotes them.
            log.warning("refused a request that could not be parsed (%s)", type(exc).__name__)
        if self.transport is not None and request.writer.output_size == 0:
            rid = self.ctx.new_request_id()
            self.transport.write(closing_problem(self.ctx, status, b"", rid))
            if self.ctx.on_rejected is not None:
                self.ctx.on_rejected(self, status, reason, rid)
        else:
            self.abort()  # part of a response went out: cut it, so it never looks complete
        self.closing = True
        return self.ctx.close

    # -- deadlines, from the ticker ----------------------------------------------------------

    def check(self, now: float) -> None:
        limits = self.ctx.limits
        transport = self.transport
        if transport is None:
            return
        if self.writing_paused and now - self.write_paused_since >= limits.send_timeout:
            ex = self.exchange
            if ex is not None:
                ex.reason = "send_timeout"  # the client stopped reading what we send
            self.abort()
            return
        ex = self.exchange
        started = self.head_started
        if started is not None and now - started >= limits.header_timeout:
            if ex is None:
                rid = self.ctx.new_request_id()
                transport.write(closing_problem(self.ctx, 408, b"", rid))
                if self.ctx.on_rejected is not None:
                    self.ctx.on_rejected(self, 408, "header_timeout", rid)
                self.force_close()
            else:  # a pipelined head dawdles behind a long response: no more requests
                self.closing = True
            return
        if ex is None:
            idle_limit = limits.header_timeout if self.fresh else limits.keepalive_timeout
            if started is None and now - self.idle_since >= idle_limit:
                self.force_close()
            return
        if not ex.request_done() and now - self.last_read >= limits.body_timeout:
            if getattr(self, "_reading_paused", False) or getattr(self, "_buffer_paused", False):
                return  # we stopped reading, not the client
            ex.body_stalled()

    def drain(self) -> None:
        """Graceful shutdown: finish what is in flight, accept no further requests."""
        self.closing = True
        if self.exchange is None:
            self.force_close()

    def abort(self) -> None:
        self.closing = True
        transport = self.transport
        if transport is not None:
            transport.abort()


class PlaneRequest(web.Request):
    """The data plane's request: an ordinary `web.Request` (so a door such as the self-service
    API can hand it to an aiohttp application), whose body, once the data plane has read it
    under its own limits, `read()` answers from memory."""

    ATTRS = web.Request.ATTRS | frozenset(["door_body"])
    door_body: bytes | None = None

    async def read(self) -> bytes:
        if self.door_body is not None:
            return self.door_body
        return await super().read()


class PlaneServer(web.Server):
    """`aiohttp.web.Server` whose connections are `PlaneConnection`s."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        ctx: PlaneContext,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, loop=ctx.loop, request_factory=self._plane_request)
        self.ctx = ctx
        self.protocol_kwargs = kwargs

    def __call__(self) -> RequestHandler:
        return PlaneConnection(self, self.ctx, **self.protocol_kwargs)

    def _plane_request(
        self,
        message: Any,
        payload: Any,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> PlaneRequest:
        return PlaneRequest(message, payload, protocol, writer, task, self.ctx.loop)


def protocol_settings(limits: ServerSettings) -> dict[str, Any]:
    """aiohttp's own knobs for the limits it can apply itself."""
    return {
        "keepalive_timeout": limits.keepalive_timeout,
        "max_line_size": limits.max_request_line,
        "max_field_size": limits.max_header_size,
        "max_headers": limits.max_headers,
        "lingering_time": 0,  # a body left unread closes the connection (we said so)
        "access_log": None,  # the gateway writes its own
        "auto_decompress": False,
        "tcp_keepalive": True,
    }
