"""The upstream side: a keep-alive connection pool per upstream origin, speaking HTTP/1.1
directly over asyncio transports with llhttp parsing the responses.

One `UpstreamConnection` carries one exchange at a time. It is returned to the pool only when
the response was complete, the request fully sent and the upstream agreed to keep it alive.
An idempotent request that finds a pooled connection already closed by the upstream, before
any response byte, is retried once on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import TYPE_CHECKING, cast

from httptools import HttpParserError, HttpResponseParser

from gateway.config import UpstreamSettings, UpstreamTarget
from gateway.http.server import PAUSE_UPSTREAM
from gateway.http.wire import Header, scan_response

if TYPE_CHECKING:
    from gateway.http.server import ClientConnection, Exchange, HttpContext

log = logging.getLogger("gateway.upstream")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_body_waiting",
        "_finished",
        "_head_done",
        "_headers",
        "_interim",
        "_paused_conn",
        "_reason",
        "_trailing",
        "exchange",
        "idle_limit",
        "idle_since",
        "last_active",
        "parser",
        "pool",
        "read_paused",
        "request_head",
        "response_seen",
        "reused",
        "sent_all",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.request_head = b""
        self.reused = False
        self.sent_all = False
        self.response_seen = False
        self.read_paused = False
        self.last_active = 0.0
        self.idle_since = 0.0
        self._headers: list[Header] = []
        self._reason = b""
        self._interim = False
        self._head_done = False
        self._body_waiting = False
        self._finished: bool | None = None  # set (to "reusable") when a response completes
        self._trailing = False  # bytes after a complete response: the connection is spent
        self._paused_conn: ClientConnection | None = None
        self.idle_limit = pool.settings.pool_idle_timeout

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.forget(self)
        ex = self.exchange
        if ex is None:
            return
        if exc is None and self._head_done and self._body_waiting and not self._interim:
            # A response without Content-Length or chunking ends when the connection closes
            # cleanly; a reset is a truncation, handled as an error below.
            self._complete(reusable=False)
            return
        self.exchange = None
        self._release_client()
        self.pool.ctx.busy_upstreams.discard(self)
        if not self.response_seen and self.reused and self.pool.retry(ex, self):
            return
        ex.on_upstream_error(502, "upstream_closed" if exc is None else "upstream_reset")

    def data_received(self, data: bytes) -> None:
        self.last_active = self.pool.ctx.clock
        self.response_seen = True
        ex = self.exchange
        if ex is None:  # bytes nobody asked for: this connection cannot be trusted any more
            if self.transport is not None:
                self.transport.abort()
            return
        conn = ex.conn
        conn.cork()
        try:
            self.parser.feed_data(data)
            if self._head_done and ex.head_request and self._finished is None:
                # llhttp cannot be told a HEAD response has no body; the head is the reply.
                self._finished = self.parser.should_keep_alive()
                self.parser = HttpResponseParser(self)
        except HttpParserError as exc:
            if self._finished is None:
                self._fail(502, "upstream_malformed: " + str(exc))
                return
            self._trailing = True  # garbage after a complete response
        finally:
            # Completion waits until this read is parsed: the connection goes back to the
            # pool only if nothing followed the response, and never mid-parse.
            if self._finished is not None:
                reusable = self._finished and not self._trailing
                self._finished = None
                self._complete(reusable=reusable)
            conn.uncork()

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            self._paused_conn = ex.conn
            ex.conn.pause(PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        self._release_client()

    def _release_client(self) -> None:
        conn = self._paused_conn
        if conn is not None:
            self._paused_conn = None
            conn.resume(PAUSE_UPSTREAM)

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._finished is not None:
            self._trailing = True  # a second response to one request
        self._headers = []
        self._head_done = False

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise HttpParserError("unexpected 101 Switching Protocols")
            self._interim = True  # 100 Continue, 103 Early Hints: the gateway handles these itself
            return
        if ex is None:
            raise HttpParserError("response without a request")
        response = scan_response(self._headers)
        self._headers = []
        self._head_done = True
        if response.keepalive_timeout is not None:
            self.idle_limit = min(self.pool.settings.pool_idle_timeout, response.keepalive_timeout)
        self._body_waiting = response.content_length is None and not response.chunked
        ex.on_response_head(status, self._reason, response)

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.exchange is not None and not self.exchange.head_request:
            self._finished = self.parser.should_keep_alive()  # completed after this read

    # -- used by the exchange ----------------------------------------------------------------

    def start(self, ex: Exchange, head: bytes) -> None:
        assert self.transport is not None
        self.exchange = ex
        self.request_head = head
        self.sent_all = False
        self.response_seen = False
        self._head_done = False
        self._body_waiting = False
        self._interim = False
        self._finished = None
        self._trailing = False
        self.last_active = self.pool.ctx.clock
        self.pool.ctx.busy_upstreams.add(self)
        self.transport.write(head)
        ex.attach(self)

    def send_body(self, data: bytes, chunked: bool) -> None:
        t = self.transport
        if t is None:
            return
        if chunked:
            t.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            t.write(data)

    def send_body_end(self, chunked: bool) -> None:
        if chunked and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")
        self.sent_all = True
        self.last_active = self.pool.ctx.clock

    def pause_reading(self) -> None:
        if self.transport is not None and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def abandon(self) -> None:
        """The client went away or the request was refused mid-way: drop this connection."""
        self.exchange = None
        self._release_client()
        self.pool.ctx.busy_upstreams.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def check_idle(self, now: float) -> None:
        """Ticker: 504 (or a cut-off stream) after read_timeout without a byte from upstream."""
        if self.exchange is None or not self.sent_all or self.read_paused:
            return
        if now - self.last_active >= self.pool.settings.read_timeout:
            self._fail(504, "upstream_timeout")

    # -- internals ---------------------------------------------------------------------------

    def _complete(self, reusable: bool) -> None:
        ex = self.exchange
        self.exchange = None
        self._head_done = False
        self._body_waiting = False
        self._release_client()
        self.pool.ctx.busy_upstreams.discard(self)
        if self.read_paused:
            self.resume_reading()
        if ex is None:
            return
        if reusable and self.sent_all and self.transport is not None:
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.close()
        ex.on_response_end()

    def _fail(self, status: int, reason: str) -> None:
        ex = self.exchange
        self.exchange = None
        self._release_client()
        self.pool.ctx.busy_upstreams.discard(self)
        if self.transport is not None:
            self.transport.abort()
        if ex is not None:
            ex.on_upstream_error(status, reason)


class UpstreamPool:
    """Keep-alive connections to one upstream origin, most recently used first."""

    def __init__(
        self, ctx: HttpContext, target: UpstreamTarget, settings: UpstreamSettings, name: str
    ) -> None:
        self.ctx = ctx
        self.target = target
        self.settings = settings
        self.name = name
        self.authority = target.authority.encode("ascii")
        self.base_path = target.base_path.encode("ascii")
        self.idle: list[UpstreamConnection] = []
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if target.scheme == "https" else None
        )
        self._connecting: set[asyncio.Task[None]] = set()
        self.retired = False  # replaced by a reload: serve what is in flight, pool nothing

    def send(self, ex: Exchange, head: bytes) -> None:
        idle = self.idle
        while idle:
            up = idle.pop()
            if up.transport is not None and not up.transport.is_closing():
                up.reused = True
                up.start(ex, head)
                return
        self._connect(ex, head)

    def retry(self, ex: Exchange, failed: UpstreamConnection) -> bool:
        """A reused connection died before answering: resend once on a fresh one if safe."""
        if ex.method not in IDEMPOTENT or ex.body_received or not ex.request_done:
            return False
        if ex.conn.transport is None:
            return False
        log.debug("retrying %s on a fresh upstream connection", ex.method.decode())
        self._connect(ex, failed.request_head)
        return True

    def _connect(self, ex: Exchange, head: bytes) -> None:
        task = self.ctx.loop.create_task(self._open(ex, head))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _open(self, ex: Exchange, head: bytes) -> None:
        loop = self.ctx.loop
        t = self.target
        try:
            _, up = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self),
                    t.host,
                    t.port,
                    ssl=self._ssl,
                    server_hostname=t.host if self._ssl else None,
                ),
                timeout=self.settings.connect_timeout,
            )
        except TimeoutError:
            ex.on_upstream_error(504, "upstream_connect_timeout")
            return
        except (OSError, ssl.SSLError) as exc:
            log.warning("upstream %s unreachable: %s", self.name, exc.__class__.__name__)
            ex.on_upstream_error(502, "upstream_unreachable")
            return
        transport = up.transport
        if transport is None:
            ex.on_upstream_error(502, "upstream_closed")
            return
        if ex.conn.transport is None or ex.finished or ex.response_started:
            transport.close()  # the client left, or was already answered, meanwhile
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up.start(ex, head)

    def retire(self) -> None:
        self.retired = True
        for up in self.idle:
            if up.transport is not None:
                up.transport.close()
        self.idle = []

    def release(self, up: UpstreamConnection) -> None:
        if len(self.idle) >= self.settings.pool_size or self.ctx.draining or self.retired:
            if up.transport is not None:
                up.transport.close()
            return
        up.idle_since = self.ctx.clock
        self.idle.append(up)

    def forget(self, up: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(up)

    def expire_idle(self, now: float) -> None:
        """Close pooled connections idle longer than pool_idle_timeout (or the upstream's own
        `Keep-Alive: timeout`)."""
        keep = []
        for up in self.idle:
            if now - up.idle_since >= up.idle_limit and up.transport is not None:
                up.transport.close()
            else:
                keep.append(up)
        self.idle = keep

    async def close(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        for up in self.idle:
            if up.transport is not None:
                up.transport.close()
        self.idle = []
