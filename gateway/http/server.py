"""The data plane's HTTP/1.1 server side: one `ClientConnection` per socket, one `Exchange`
per request.

Parsing is llhttp (httptools) in strict mode. A connection works on one exchange at a time;
pipelined requests wait in a queue with reading paused. Bodies are never held whole: request
bodies flow to the upstream as they arrive (bounded buffering until it is connected, reading
paused past that), responses flow back as the upstream writes them, with backpressure both ways.
Timeouts are coarse deadlines checked by the context's ticker, not a timer per request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

import orjson
from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser

from gateway.config import ServerSettings
from gateway.http.wire import (
    CONTINUE,
    LAST_CHUNK,
    BadRequest,
    Header,
    RequestHead,
    ResponseHead,
    body_allowed,
    render_headers,
    scan_request,
    status_line,
)
from gateway.http.wire import REASONS as _REASONS
from gateway.index import KeyEntry
from gateway.routes import has_dot_segments

if TYPE_CHECKING:
    from gateway.http.upstream import UpstreamConnection, UpstreamPool

log = logging.getLogger("gateway.http")

# Reasons reading from the client is paused; reading resumes when none is left.
PAUSE_PIPELINE = 1  # a previous request's response is still in progress
PAUSE_BODY = 2  # the upstream is not connected yet and the buffered body is large
PAUSE_UPSTREAM = 4  # the upstream's socket buffer is full
PAUSE_DISPATCH = 8  # dispatch is waiting (e.g. for the key index to catch up)
PAUSE_WRITE = 16  # the client is not reading what we write: read no further requests from it
# A read's worth of slack over the head limits for the coarse guard in data_received.
HEAD_GUARD_SLACK = 256 * 1024

BODY_BUFFER_LIMIT = 256 * 1024
DISCARD_LIMIT = 1024 * 1024  # request body bytes read and dropped after an early response


class Handler(Protocol):
    def dispatch(self, ex: Exchange) -> None: ...
    def finished(self, ex: Exchange) -> None: ...


class HttpContext:
    """Shared by every connection of one data-plane listener: limits, clock, bookkeeping."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, limits: ServerSettings, handler: Handler
    ) -> None:
        self.loop = loop
        self.limits = limits
        self.handler = handler
        self.clock = loop.time()
        self.date = b""
        self.connections: set[ClientConnection] = set()
        self.busy_upstreams: set[UpstreamConnection] = set()
        self.draining = False
        self.trusted_proxies = limits.trusted_proxies
        self.tick_hooks: list[Callable[[float], None]] = []
        self._date_second = -1
        self._rid_prefix = os.urandom(8).hex().encode()
        self._rid_counter = 0
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_every = 0.25
        self.tick()

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
            for hook in self.tick_hooks:
                hook(now)
        except Exception:  # the ticker must survive anything one connection does
            log.exception("data-plane ticker failed")
        finally:
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


class Exchange:
    """One request and its response on a client connection."""

    __slots__ = (
        "body_buffered",
        "body_parts",
        "body_received",
        "bytes_out",
        "close_after",
        "collector",
        "conn",
        "discarding",
        "finished",
        "head",
        "head_request",
        "http11",
        "keep_alive",
        "method",
        "path",
        "principal",
        "query",
        "reason",
        "request_done",
        "request_id",
        "response_chunked",
        "response_done",
        "response_started",
        "started",
        "status",
        "target",
        "upstream",
        "upstream_ms",
        "upstream_started",
        "upstream_status",
    )

    def __init__(
        self,
        conn: ClientConnection,
        method: bytes,
        target: bytes,
        http11: bool,
        keep_alive: bool,
        head: RequestHead,
        request_id: bytes,
    ) -> None:
        self.conn = conn
        self.method = method
        self.target = target
        q = target.find(b"?")
        self.path = target if q < 0 else target[:q]
        self.query = b"" if q < 0 else target[q + 1 :]
        self.http11 = http11
        self.keep_alive = keep_alive
        self.head = head
        self.request_id = request_id
        self.head_request = method == b"HEAD"
        self.started = conn.ctx.loop.time()
        self.body_parts: list[bytes] = []
        self.body_buffered = 0
        self.body_received = 0
        self.request_done = False
        self.discarding = False
        self.collector: tuple[int, Callable[[bytes], None]] | None = None
        self.upstream: UpstreamConnection | None = None
        self.upstream_started = 0.0
        self.upstream_ms = -1.0
        self.upstream_status = 0
        self.response_started = False
        self.response_done = False
        self.response_chunked = False
        self.close_after = not keep_alive
        self.finished = False
        self.status = 0
        self.bytes_out = 0
        self.principal: KeyEntry | None = None
        self.reason: str | None = None

    # -- request body, from the client -------------------------------------------------------

    def on_request_body(self, data: bytes) -> None:
        self.body_received += len(data)
        limit = self.conn.ctx.limits.max_body_size
        if limit and self.body_received > limit:
            self.fail_request(413)
            return
        if self.discarding:
            if self.body_received > DISCARD_LIMIT:
                self.conn.close()
            return
        if self.collector is not None and self.body_received > self.collector[0]:
            self.collector = None
            self.fail_request(413)
            return
        up = self.upstream
        if up is not None and up.transport is not None:
            up.send_body(data, self.head.chunked)
            return
        self.body_parts.append(data)
        self.body_buffered += len(data)
        if self.body_buffered > BODY_BUFFER_LIMIT:
            self.conn.pause(PAUSE_BODY)

    def on_request_end(self) -> None:
        self.request_done = True
        if self.conn.write_paused:
            self.conn.pause(PAUSE_WRITE)  # further bytes can only be new requests
        if self.discarding:
            if self.response_done:
                self.conn.exchange_finished(self)
            return
        if self.collector is not None:
            self._deliver_body()
            return
        up = self.upstream
        if up is not None and up.transport is not None:
            up.send_body_end(self.head.chunked)

    def fail_request(self, status: int) -> None:
        """The request itself is unacceptable mid-body (e.g. too large)."""
        self.reason = self.reason or f"http_{status}"
        if self.response_started:
            self.conn.abort()
            return
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        self.close_after = True
        self.respond_problem(status, None, None)
        self.conn.close()

    def collect(self, limit: int, done: Callable[[bytes], None]) -> None:
        """Read the (small) body in memory for an endpoint the gateway answers itself."""
        self.collector = (limit, done)
        if self.head.expect_continue and not self.request_done and self.http11:
            self.conn.write(CONTINUE)
        if self.request_done:
            self._deliver_body()

    def _deliver_body(self) -> None:
        assert self.collector is not None
        done = self.collector[1]
        self.collector = None
        body = b"".join(self.body_parts)
        self.body_parts = []
        self.body_buffered = 0
        done(body)

    # -- proxying ----------------------------------------------------------------------------

    def proxy(self, pool: UpstreamPool, head: bytes) -> None:
        """Send the request to the upstream: on a pooled connection now, or once connected."""
        if self.head.expect_continue and not self.request_done and self.http11:
            self.conn.write(CONTINUE)
        self.upstream_started = self.conn.ctx.loop.time()
        pool.send(self, head)

    def attach(self, up: UpstreamConnection) -> None:
        """Called by the pool when `up` has taken this exchange and written its head."""
        self.upstream = up
        if self.conn.write_paused:
            up.pause_reading()
        parts = self.body_parts
        if parts:
            self.body_parts = []
            self.body_buffered = 0
            for data in parts:
                up.send_body(data, self.head.chunked)
            self.conn.resume(PAUSE_BODY)
        if self.request_done:
            up.send_body_end(self.head.chunked)

    def on_response_head(self, status: int, reason: bytes, response: ResponseHead) -> None:
        conn = self.conn
        self.upstream_ms = (conn.ctx.loop.time() - self.upstream_started) * 1000.0
        self.upstream_status = status
        self.status = status
        has_body = body_allowed(status, self.head_request)
        parts = [status_line(status, reason), *render_headers(response.kept)]
        if response.content_length is not None:
            parts += (b"Content-Length: ", response.content_length, b"\r\n")
        elif has_body:
            if self.http11:
                self.response_chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.close_after = True  # the end of the body is the end of the connection
        if not self.request_done:
            self.close_after = True  # the upstream answered before the body was sent
        parts += (b"X-Request-Id: ", self.request_id, b"\r\n")
        if self.close_after or conn.closing:
            parts.append(b"Connection: close\r\n\r\n")
        elif not self.http11:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.response_started = True
        conn.write(b"".join(parts))

    def on_response_body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.response_chunked:
            self.conn.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.conn.write(data)

    def on_response_end(self) -> None:
        if self.response_chunked:
            self.conn.write(LAST_CHUNK)
        self.upstream = None
        self.response_done = True
        if self.request_done:
            self.conn.exchange_finished(self)
        else:
            self.discarding = True

    def on_upstream_error(self, status: int, reason: str) -> None:
        """The upstream failed: answer 502/504 if nothing was sent yet, else cut the client off
        so a truncated response can never look complete."""
        self.upstream = None
        self.reason = reason
        if self.response_started:
            self.conn.abort()
            self.finish_log()
            return
        self.respond_problem(status, None, None)

    # -- local answers -----------------------------------------------------------------------

    def respond(self, status: int, headers: list[Header], body: bytes) -> None:
        """A complete response produced by the gateway itself."""
        if self.response_started:
            return
        conn = self.conn
        if not self.request_done:
            if self.head.expect_continue or not self.keep_alive:
                self.close_after = True
            if self.body_parts:
                self.body_parts = []
                self.body_buffered = 0
            conn.resume(PAUSE_BODY)
        parts = [status_line(status), *render_headers(headers)]
        parts += (
            b"Content-Length: %d\r\n" % len(body),
            b"X-Request-Id: ",
            self.request_id,
            b"\r\nDate: ",
            conn.ctx.date,
            b"\r\n",
        )
        if self.close_after or conn.closing:
            parts.append(b"Connection: close\r\n")
        elif not self.http11:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if not self.head_request:
            parts.append(body)
        self.status = status
        self.bytes_out = len(body)
        self.response_started = True
        self.response_done = True
        conn.write(b"".join(parts))
        if self.request_done:
            conn.exchange_finished(self)
        else:
            self.discarding = True

    def respond_problem(
        self,
        status: int,
        detail: str | None,
        title: str | None,
        extra: dict[str, object] | None = None,
    ) -> None:
        body = problem_body(status, detail, title, self.path, self.request_id, extra)
        self.respond(status, [(b"Content-Type", b"application/problem+json")], body)

    def finish_log(self) -> None:
        if not self.finished:
            self.finished = True
            self.conn.ctx.handler.finished(self)


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
        "title": title or _REASONS.get(status, b"Error").decode(),
        "status": status,
        "detail": detail or _DETAILS.get(status, ""),
        "instance": instance.decode("latin-1"),
        "request_id": request_id.decode("latin-1"),
    }
    if extra:
        doc.update(extra)
    return orjson.dumps(doc)


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing and answer `status`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_active",
        "_advancing",
        "_cork",
        "_corked",
        "_fresh",
        "_head_bytes",
        "_head_size",
        "_head_started",
        "_headers",
        "_idle_since",
        "_in_head",
        "_last_read",
        "_paused",
        "_queue",
        "_reading",
        "_url",
        "_write_paused_since",
        "closing",
        "ctx",
        "parser",
        "peer",
        "peer_bytes",
        "transport",
        "trusted",
        "write_paused",
    )

    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)
        self.peer = ""
        self.peer_bytes = b""
        self.trusted = False
        self.closing = False
        self.write_paused = False
        now = ctx.clock
        self._fresh = True  # no request yet: the idle limit is header_timeout, not keep-alive
        self._idle_since = now
        self._head_started = now
        self._last_read = now
        self._write_paused_since = now
        self._url = b""
        self._headers: list[Header] = []
        self._in_head = False
        self._head_bytes = 0
        self._head_size = 0
        self._reading: Exchange | None = None
        self._active: Exchange | None = None
        self._queue: deque[Exchange] = deque()
        self._paused = 0
        self._advancing = False
        self._cork: list[bytes] = []
        self._corked = 0

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = self.transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.peer_bytes = self.peer.encode()
        ctx = self.ctx
        if ctx.trusted_proxies and self.peer:
            try:
                addr = ipaddress.ip_address(self.peer)
            except ValueError:
                addr = None
            self.trusted = addr is not None and any(addr in net for net in ctx.trusted_proxies)
        if len(ctx.connections) >= ctx.limits.max_connections or ctx.draining:
            body = problem_body(503, None, None, b"", ctx.new_request_id())
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s"
                % (len(body), body)
            )
            transport.close()
            return
        ctx.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)
        self.closing = True
        ex = self._active
        self._active = None
        self._queue.clear()
        if ex is not None and not ex.finished:
            if ex.upstream is not None:
                ex.upstream.abandon()
                ex.upstream = None
            if not ex.response_done:
                ex.reason = ex.reason or "client_disconnected"
                ex.status = ex.status or 499
            ex.finish_log()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._last_read = self.ctx.clock
        was_in_head = self._in_head
        self.cork()
        try:
            self.parser.feed_data(data)
            if self._in_head:
                # Still inside a head: bound what the parser holds while a header is partial
                # (the exact limits are checked per header as each one completes).
                self._head_bytes = self._head_bytes + len(data) if was_in_head else len(data)
                limits = self.ctx.limits
                if (
                    self._head_bytes
                    > limits.max_header_size + limits.max_request_line + HEAD_GUARD_SLACK
                ):
                    self._reject(431, "head_too_large")
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Rejected):
                self._reject(cause.status, cause.reason)
            else:
                log.error("data-plane request handling failed", exc_info=cause or exc)
                self._reject(500, "internal_error")
        except HttpParserUpgrade:
            pass  # the upgrade request was handled as a plain one; nothing after it is read
        except HttpParserError as exc:
            self._reject(400, "bad_request: " + str(exc))
        finally:
            self.uncork()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._write_paused_since = self.ctx.clock
        ex = self._active
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading()
        if ex is None or ex.request_done:
            self.pause(PAUSE_WRITE)  # a body still uploading keeps flowing to its upstream

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self._active
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()
        self.resume(PAUSE_WRITE)

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_head = True
        self._fresh = False
        self._head_bytes = 0
        self._head_size = 0
        self._head_started = self.ctx.clock

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.ctx.limits.max_request_line:
            raise _Rejected(414, "request_line_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name, value))
        limits = self.ctx.limits
        self._head_size += len(name) + len(value) + 4
        if len(headers) > limits.max_headers:
            raise _Rejected(431, "too_many_headers")
        if self._head_size > limits.max_header_size:
            raise _Rejected(431, "headers_too_large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        url = self._url
        if not url.startswith(b"/"):
            raise _Rejected(400, "request_target_not_origin_form")
        if b"#" in url:
            raise _Rejected(400, "fragment_in_request_target")
        q = url.find(b"?")
        if has_dot_segments(url if q < 0 else url[:q]):
            raise _Rejected(400, "dot_segment_in_path")
        parser = self.parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise _Rejected(505, "http_version_not_supported")
        http11 = version == "1.1"
        try:
            head = scan_request(self._headers, http11)
        except BadRequest as exc:
            raise _Rejected(exc.status, exc.reason) from None
        limit = self.ctx.limits.max_body_size
        if limit and head.content_length is not None and head.content_length > limit:
            raise _Rejected(413, "body_too_large")
        request_id = head.request_id or self.ctx.new_request_id()
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        ex = Exchange(self, parser.get_method(), url, http11, keep_alive, head, request_id)
        if self.closing:
            return
        self._reading = ex
        if self._active is None:
            self._active = ex
            self.ctx.handler.dispatch(ex)
        else:
            self._queue.append(ex)
            self.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self._reading
        if ex is not None:
            ex.on_request_body(body)

    def on_message_complete(self) -> None:
        ex = self._reading
        self._reading = None
        if ex is not None:
            ex.on_request_end()

    # -- used by exchanges -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._corked:
            self._cork.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def writelines(self, data: tuple[bytes, bytes, bytes]) -> None:
        if self._corked:
            self._cork.extend(data)
        elif self.transport is not None:
            self.transport.writelines(data)

    def cork(self) -> None:
        """Collect writes until `uncork`, so what one read produces leaves in one send
        (a response head and its body, or a burst of pipelined answers)."""
        self._corked += 1

    def uncork(self) -> None:
        self._corked -= 1
        if self._corked or not self._cork:
            return
        parts, self._cork = self._cork, []
        if self.transport is None:
            return
        if len(parts) == 1:
            self.transport.write(parts[0])
        elif sum(map(len, parts)) <= 65536:
            self.transport.write(b"".join(parts))
        else:
            self.transport.writelines(parts)

    def pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def resume(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if not self._paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def close(self) -> None:
        self.closing = True
        if self._cork and self.transport is not None:
            parts, self._cork = self._cork, []
            self.transport.writelines(parts)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self._cork = []
        if self.transport is not None:
            self.transport.abort()

    def exchange_finished(self, ex: Exchange) -> None:
        ex.finish_log()
        if ex is not self._active:
            return
        self._active = None
        if ex.close_after or self.closing:
            self.close()
            return
        if self._advancing:
            return  # the loop below picks up the next one
        self._advancing = True
        try:
            while self._active is None and self._queue and not self.closing:
                nxt = self._queue.popleft()
                self._active = nxt
                if self.write_paused and nxt.request_done:
                    self.pause(PAUSE_WRITE)
                self.ctx.handler.dispatch(nxt)
        finally:
            self._advancing = False
        if self.is_closing():  # a dispatch above may have closed it
            return
        if not self._queue:
            self.resume(PAUSE_PIPELINE)  # also when the next one still needs its body
        if self._active is None:
            if self.ctx.draining:
                self.close()
            else:
                self._idle_since = self.ctx.clock

    def is_closing(self) -> bool:
        return self.closing

    def is_idle(self) -> bool:
        return self._active is None and not self._in_head

    def check(self, now: float) -> None:
        """Ticker: the timeouts of this connection, whatever phase it is in."""
        limits = self.ctx.limits
        if self.write_paused and now - self._write_paused_since >= limits.send_timeout:
            reason = "send_timeout"  # the client stopped reading what we send
            if self._active is not None:
                self._active.reason = reason
            self.abort()
            return
        if self._in_head:
            if now - self._head_started >= limits.header_timeout:
                if self._active is None:
                    self._reject(408, "header_timeout")
                else:  # a pipelined head dawdles behind a long response: no more requests
                    self.closing = True
                    self.pause(PAUSE_PIPELINE)
            return
        active = self._active
        if active is None:
            idle_limit = limits.header_timeout if self._fresh else limits.keepalive_timeout
            if now - self._idle_since >= idle_limit:
                self.close()
            return
        reading = self._reading
        waiting_on_us = self._paused  # any pause of ours: not the client's fault
        if (
            reading is not None
            and not waiting_on_us
            and now - self._last_read >= limits.body_timeout
        ):
            reading.reason = "body_timeout"
            if reading is active and not active.response_started:
                if active.upstream is not None:
                    active.upstream.abandon()
                    active.upstream = None
                active.close_after = True
                active.request_done = True
                active.respond_problem(408, "The request body stopped arriving.", None)
            self.close()

    def drain(self) -> None:
        """Graceful shutdown: finish what is in flight, accept no further requests."""
        if self.is_idle():
            self.close()
        else:
            self.closing = True  # the response in flight says `Connection: close`, then we close

    def _reject(self, status: int, reason: str) -> None:
        """Answer a protocol-level error and close: the connection's framing is not trusted."""
        self._in_head = False
        ex = self._active
        if ex is not None and self._reading is not ex and not ex.response_done:
            # The error is in a later pipelined request: let this response finish, then close.
            self.closing = True
            self.pause(PAUSE_PIPELINE)
            return
        if ex is not None and ex.response_started and not ex.response_done:
            ex.reason = reason
            self.abort()
            return
        if ex is None or ex.response_done:
            rid = self.ctx.new_request_id()
            body = problem_body(status, None, None, self._url[:200].split(b"?")[0], rid)
            self.write(
                status_line(status)
                + b"Content-Type: application/problem+json\r\nContent-Length: %d\r\n"
                b"X-Request-Id: %s\r\nConnection: close\r\n\r\n%s" % (len(body), rid, body)
            )
            self.ctx.handler.finished(_RejectedExchange(self, status, reason, rid))
        elif not ex.response_started:
            if ex.upstream is not None:
                ex.upstream.abandon()
                ex.upstream = None
            ex.close_after = True
            ex.request_done = True
            ex.reason = reason
            ex.respond_problem(status, None, None)
        self.close()


class _RejectedExchange(Exchange):
    """A stand-in for the access log when a request was refused before it became one."""

    def __init__(self, conn: ClientConnection, status: int, reason: str, rid: bytes) -> None:
        super().__init__(conn, b"-", conn._url[:200] or b"-", True, False, RequestHead(), rid)
        self.status = status
        self.reason = reason
        self.finished = True
        self.request_done = self.response_done = True
