"""The upstream leg: a keep-alive HTTP/1.1 client over asyncio transports, llhttp (httptools)
parsing the responses. It knows nothing of the server side: a caller hands it a request head
and feeds it the body; it hands back a response head and a body stream. Backpressure both
ways: `drained()` waits while the upstream is not taking the body, and response bytes the
caller has not read pause reading from the upstream.

One `UpstreamConnection` carries one `UpstreamCall` at a time and goes back to its pool only
when the response was complete, the request fully sent and the upstream agreed to keep it
alive. An idempotent request without a body that finds a pooled connection already closed by
the upstream, before any response byte, is sent once more on a fresh connection.

aiohttp's own client measured 3.5x slower on this path (loadtests/README.md), hence this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import cast

from httptools import HttpParserError, HttpResponseParser

from gateway.config import UpstreamSettings, UpstreamTarget
from gateway.http.wire import Header, ResponseHead, scan_response

log = logging.getLogger("gateway.upstream")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
READ_HIGH = 256 * 1024  # unread response bytes past which reading from the upstream pauses
READ_LOW = 64 * 1024


class UpstreamError(Exception):
    """The upstream failed this call: `status` is what the client should get (502 or 504)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UpstreamCall:
    """One request on the upstream and its response, as the caller sees it."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_done",
        "_error",
        "_head",
        "_waiter",
        "_write_waiter",
        "can_retry",
        "conn",
        "head_request",
        "pool",
        "request_head",
        "sent_all",
        "started",
    )

    def __init__(self, pool: UpstreamPool, head: bytes, method: bytes, can_retry: bool) -> None:
        self.pool = pool
        self.request_head = head
        self.head_request = method == b"HEAD"
        self.can_retry = can_retry and method in IDEMPOTENT
        self.conn: UpstreamConnection | None = None
        self.sent_all = False
        self.started = pool.loop.time()
        self._head: tuple[int, bytes, ResponseHead] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None

    # -- the request body --------------------------------------------------------------------

    async def ready(self) -> bool:
        """Wait until the head went out on a connection; False if the call failed first."""
        while self.conn is None:
            if self._error is not None or self._done:
                return False
            await self._wait()
        return True

    def send(self, data: bytes, chunked: bool) -> None:
        self.can_retry = False
        conn = self.conn
        if conn is not None and conn.transport is not None:
            if chunked:
                conn.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
            else:
                conn.transport.write(data)
            if not conn.write_paused:
                conn.last_active = self.pool.clock()

    async def drained(self) -> None:
        """Wait while the upstream is not taking what we send (or until the call failed)."""
        conn = self.conn
        if conn is None or not conn.write_paused or self._error is not None:
            return
        if self._write_waiter is None:
            self._write_waiter = self.pool.loop.create_future()
        await self._write_waiter

    def end(self, chunked: bool) -> None:
        conn = self.conn
        if chunked and conn is not None and conn.transport is not None:
            conn.transport.write(b"0\r\n\r\n")
        self.sent_all = True
        if conn is not None:
            conn.last_active = self.pool.clock()

    # -- the response ------------------------------------------------------------------------

    def response_now(self) -> tuple[int, bytes, ResponseHead] | None:
        """The response head if it is here (UpstreamError if it never will be), else None:
        the caller awaits `waiter()` and asks again (no coroutine call per request)."""
        if self._head is None and self._error is not None:
            raise self._error
        return self._head

    def waiter(self) -> asyncio.Future[None]:
        return self._wait()

    def available(self) -> tuple[list[bytes], bool]:
        """What the upstream already sent, without waiting, and whether that is all."""
        chunks = list(self._chunks)
        self._chunks.clear()
        self._consumed(self._buffered)
        return chunks, self._done

    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end; UpstreamError if it is cut short."""
        while not self._chunks:
            if self._done:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()
        data = self._chunks.popleft()
        self._consumed(len(data))
        return data

    def abandon(self) -> None:
        """The caller gives up (the client left, or was answered otherwise): drop the
        connection, which can no longer be trusted to be at a message boundary."""
        if self._done and self.conn is None:
            return
        self._fail(UpstreamError(502, "abandoned"))
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.release_call()
            if conn.transport is not None:
                conn.transport.abort()

    # -- from the connection -----------------------------------------------------------------

    def _wait(self) -> asyncio.Future[None]:
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = self.pool.loop.create_future()
        return waiter

    # Two near-identical wakers on purpose: a shared helper costs a call on every request.
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter = self._write_waiter
        if waiter is not None:
            self._write_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _consumed(self, size: int) -> None:
        self._buffered -= size
        conn = self.conn
        if conn is not None and conn.read_paused and self._buffered <= READ_LOW:
            conn.resume_reading()

    def on_head(self, status: int, reason: bytes, head: ResponseHead) -> None:
        self._head = (status, reason, head)

    def on_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        conn = self.conn
        if self._buffered > READ_HIGH and conn is not None:
            conn.pause_reading()

    def on_end(self) -> None:
        self._done = True
        self.conn = None
        self._wake()
        self._wake_writer()

    def _fail(self, error: UpstreamError) -> None:
        if self._done:
            return
        self._error = error
        self._wake()
        self._wake_writer()

    def on_error(self, error: UpstreamError, conn: UpstreamConnection) -> None:
        self.conn = None
        if (
            self.can_retry
            and conn.reused
            and not conn.response_seen
            and self.sent_all
            and self._head is None
            and error.reason in ("upstream_closed", "upstream_reset")
        ):
            self.can_retry = False
            log.debug("retrying on a fresh upstream connection")
            self.pool.connect(self)
            return
        self._fail(error)


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_finished",
        "_head_done",
        "_headers",
        "_interim",
        "_reason",
        "_trailing",
        "_waiting_close",
        "call",
        "idle_limit",
        "idle_since",
        "last_active",
        "parser",
        "pool",
        "read_paused",
        "response_seen",
        "reused",
        "transport",
        "write_paused",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.call: UpstreamCall | None = None
        self.reused = False
        self.response_seen = False
        self.read_paused = False
        self.write_paused = False
        self.last_active = 0.0
        self.idle_since = 0.0
        self._headers: list[Header] = []
        self._reason = b""
        self._interim = False
        self._head_done = False
        self._waiting_close = False  # a response that ends when the connection does
        self._finished: bool | None = None  # set (to "reusable") when a response completes
        self._trailing = False  # bytes after a complete response: the connection is spent
        self.idle_limit = pool.settings.pool_idle_timeout

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.forget(self)
        call = self.call
        if call is None:
            return
        if exc is None and self._head_done and self._waiting_close and not self._interim:
            # A response without Content-Length or chunking ends when the connection closes
            # cleanly; a reset is a truncation, handled as an error below.
            self._complete(reusable=False)
            return
        self.release_call()
        call.on_error(
            UpstreamError(502, "upstream_closed" if exc is None else "upstream_reset"), self
        )

    def data_received(self, data: bytes) -> None:
        self.last_active = self.pool.clock()
        self.response_seen = True
        call = self.call
        if call is None:  # bytes nobody asked for: this connection cannot be trusted any more
            if self.transport is not None:
                self.transport.abort()
            return
        try:
            self.parser.feed_data(data)
            if self._head_done and call.head_request and self._finished is None:
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
        if self.call is call:
            call._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.call is not None:
            self.call._wake_writer()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._finished is not None:
            self._trailing = True  # a second response to one request: stop reading here
            raise HttpParserError("a response after the complete one")
        self._headers = []
        self._head_done = False

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        call = self.call
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise HttpParserError("unexpected 101 Switching Protocols")
            self._interim = True  # 100 Continue, 103 Early Hints: not relayed
            return
        if call is None:
            raise HttpParserError("response without a request")
        response = scan_response(self._headers)
        self._headers = []
        self._head_done = True
        if response.keepalive_timeout is not None:
            self.idle_limit = min(self.pool.settings.pool_idle_timeout, response.keepalive_timeout)
        self._waiting_close = response.content_length is None and not response.chunked
        call.on_head(status, self._reason, response)

    def on_body(self, body: bytes) -> None:
        call = self.call
        if call is not None:
            if call.head_request:
                self._trailing = True  # a body after a HEAD response's head: never relayed
                return
            call.on_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.call is not None and not self.call.head_request:
            self._finished = self.parser.should_keep_alive()  # completed after this read

    # -- used by the call and the pool ---------------------------------------------------------

    def start(self, call: UpstreamCall) -> None:
        assert self.transport is not None
        self.call = call
        call.conn = self
        self.response_seen = False
        self._head_done = False
        self._waiting_close = False
        self._interim = False
        self._finished = None
        self._trailing = False
        self.last_active = self.pool.clock()
        self.pool.busy.add(self)
        self.transport.write(call.request_head)
        call._wake()

    def release_call(self) -> None:
        self.call = None
        self.pool.busy.discard(self)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def check_idle(self, now: float) -> None:
        """Ticker: 504 (or a cut-off stream) after read_timeout without progress: no byte from
        the upstream once the request was sent, or while it takes none of the body."""
        call = self.call
        if call is None or self.read_paused or not (call.sent_all or self.write_paused):
            return
        if now - self.last_active >= self.pool.settings.read_timeout:
            self._fail(504, "upstream_timeout")

    # -- internals ---------------------------------------------------------------------------

    def _complete(self, reusable: bool) -> None:
        call = self.call
        self.release_call()
        self._head_done = False
        self._waiting_close = False
        if self.read_paused:
            self.resume_reading()
        if call is None:
            return
        if reusable and call.sent_all and self.transport is not None:
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.close()
        call.on_end()

    def _fail(self, status: int, reason: str) -> None:
        call = self.call
        self.release_call()
        if self.transport is not None:
            self.transport.abort()
        if call is not None:
            call.conn = None
            call._fail(UpstreamError(status, reason))


class UpstreamPool:
    """Keep-alive connections to one upstream origin, most recently used first."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        busy: set[UpstreamConnection],
        target: UpstreamTarget,
        settings: UpstreamSettings,
        name: str,
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.busy = busy  # connections with a call in flight (the read_timeout ticker's list)
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
        self.draining = False
        self.retired = False  # replaced by a reload: serve what is in flight, pool nothing

    def call(self, head: bytes, method: bytes, *, has_body: bool) -> UpstreamCall:
        """Send `head` on a pooled connection now, or on a new one once connected."""
        call = UpstreamCall(self, head, method, can_retry=not has_body)
        idle = self.idle
        while idle:
            up = idle.pop()
            if up.transport is not None and not up.transport.is_closing():
                up.reused = True
                up.start(call)
                return call
        self.connect(call)
        return call

    def connect(self, call: UpstreamCall) -> None:
        task = self.loop.create_task(self._open(call))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _open(self, call: UpstreamCall) -> None:
        t = self.target
        try:
            _, up = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: UpstreamConnection(self),
                    t.host,
                    t.port,
                    ssl=self._ssl,
                    server_hostname=t.host if self._ssl else None,
                ),
                timeout=self.settings.connect_timeout,
            )
        except TimeoutError:
            call._fail(UpstreamError(504, "upstream_connect_timeout"))
            return
        except (OSError, ssl.SSLError) as exc:
            log.warning("upstream %s unreachable: %s", self.name, exc.__class__.__name__)
            call._fail(UpstreamError(502, "upstream_unreachable"))
            return
        transport = up.transport
        if transport is None:
            call._fail(UpstreamError(502, "upstream_closed"))
            return
        if call._error is not None or call._done:
            transport.close()  # the caller gave up meanwhile
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up.start(call)

    def retire(self) -> None:
        self.retired = True
        for up in self.idle:
            if up.transport is not None:
                up.transport.close()
        self.idle = []

    def release(self, up: UpstreamConnection) -> None:
        if len(self.idle) >= self.settings.pool_size or self.draining or self.retired:
            if up.transport is not None:
                up.transport.close()
            return
        up.idle_since = self.clock()
        self.idle.append(up)

    def forget(self, up: UpstreamConnection) -> None:
        self.busy.discard(up)
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
