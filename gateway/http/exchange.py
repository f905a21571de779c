"""One request and its response on the data plane, as the handler works on it: the parsed head,
what the gateway decided (principal, refusal reason, a local answer), the upstream call, and
the figures the access log and the metrics need. Writing goes through aiohttp's
`request.writer`, which applies the client's backpressure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.http.protocol import SERVER, PlaneConnection, problem_body
from gateway.http.upstream import UpstreamCall, UpstreamError
from gateway.http.wire import Header, RequestHead, ResponseHead, render_headers, status_line
from gateway.index import KeyEntry

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def answer_head(status: int, headers: list[Header], length: int) -> bytes:
    """The fixed start of a response the gateway makes itself, up to the request id."""
    return b"".join(
        (
            status_line(status),
            *render_headers(headers),
            b"Content-Length: %d\r\nX-Request-Id: " % length,
        )
    )


class BodyStalled(Exception):
    """The client stopped sending the request body (body_timeout)."""


class Exchange:
    __slots__ = (
        "answer",
        "body_error",
        "body_received",
        "bodyless",
        "bytes_out",
        "call",
        "close_after",
        "conn",
        "continued",
        "finished",
        "head",
        "head_request",
        "http11",
        "method",
        "path",
        "principal",
        "query",
        "reason",
        "request",
        "request_id",
        "response_started",
        "started",
        "status",
        "target",
        "upstream_ms",
        "upstream_status",
    )

    def __init__(
        self,
        request: web.BaseRequest,
        conn: PlaneConnection,
        method: bytes,
        target: bytes,
        http11: bool,
        head: RequestHead,
        request_id: bytes,
    ) -> None:
        self.request = request
        self.conn = conn
        self.method = method
        self.target = target
        q = target.find(b"?")
        self.path = target if q < 0 else target[:q]
        self.query = b"" if q < 0 else target[q + 1 :]
        self.http11 = http11
        self.head = head
        self.request_id = request_id
        self.head_request = method == b"HEAD"
        self.bodyless = not (head.chunked or head.content_length)
        self.started = conn.ctx.loop.time()
        tokens = head.connection_tokens
        # An upgrade is not tunnelled: the request goes on as a plain one, and the connection
        # ends with it, so nothing the client sends after it is read as HTTP by one side only.
        self.close_after = not request.keep_alive or (tokens is not None and b"upgrade" in tokens)
        self.answer: tuple[int, bytes, bytes] | None = None  # status, answer_head, body
        self.call: UpstreamCall | None = None
        self.body_error: str | None = None  # why the request body could not be relayed
        self.body_received = 0
        self.bytes_out = 0
        self.status = 0
        self.upstream_ms = -1.0
        self.upstream_status = 0
        self.response_started = False
        self.continued = False
        self.finished = False
        self.principal: KeyEntry | None = None
        self.reason: str | None = None

    # -- state ---------------------------------------------------------------------------------

    def request_done(self) -> bool:
        return self.bodyless or self.request.content.is_eof()

    def client_gone(self) -> None:
        """The client's connection closed: nothing we send can arrive any more."""
        if self.call is not None:
            self.call.abandon()
        if not self.response_started:
            self.reason = self.reason or "client_disconnected"

    def body_stalled(self) -> None:
        """The ticker saw no body byte for body_timeout: stop waiting for it."""
        self.reason = "body_timeout"
        self.body_error = "body_timeout"
        self.close_after = True
        self.request.content.set_exception(BodyStalled())
        if self.call is not None:
            self.call.abandon()

    # -- local answers ---------------------------------------------------------------------------

    def respond(self, status: int, headers: list[Header], body: bytes) -> None:
        """A complete response produced by the gateway itself, written by `send_answer`."""
        self.answer = (status, answer_head(status, headers, len(body)), body)

    def respond_prebuilt(self, status: int, head: bytes, body: bytes) -> None:
        """`respond` with the head's fixed start built once (see `answer_head`)."""
        self.answer = (status, head, body)

    def respond_problem(
        self,
        status: int,
        detail: str | None,
        title: str | None,
        extra: dict[str, object] | None = None,
    ) -> None:
        body = problem_body(status, detail, title, self.path, self.request_id, extra)
        self.respond(status, [(b"Content-Type", b"application/problem+json")], body)

    async def read_body(self, limit: int) -> bytes | None:
        """The (small) body of a request the gateway answers itself; None after answering 413
        or when it did not arrive."""
        await self.send_continue()
        content = self.request.content
        parts: list[bytes] = []
        try:
            while True:
                data = await content.readany()
                if not data:
                    break
                self.body_received += len(data)
                if self.body_received > limit:
                    self.close_after = True
                    self.respond_problem(413, None, None)
                    return None
                parts.append(data)
        except Exception:
            self.close_after = True
            if self.answer is None:
                status = 408 if self.body_error == "body_timeout" else 400
                self.reason = self.reason or f"http_{status}"
                detail = "The request body stopped arriving." if status == 408 else None
                self.respond_problem(status, detail, None)
            return None
        return b"".join(parts)

    async def discard_body(self, limit: int) -> bool:
        """Read and drop the rest of a body the gateway answered without (up to `limit`
        bytes), so the connection can serve the next request. False: close it instead."""
        content = self.request.content
        dropped = 0
        try:
            while dropped <= limit:
                data = await content.readany()
                if not data:
                    return True
                dropped += len(data)
                self.body_received += len(data)
        except Exception:
            return False
        return False

    async def send_continue(self) -> None:
        if self.head.expect_continue and self.http11 and not self.continued:
            self.continued = True
            if not self.request_done():
                await self.request.writer.write(CONTINUE)

    def _connection_header(self) -> bytes:
        conn = self.conn
        if self.close_after or conn.closing or conn.ctx.draining:
            self.close_after = True
            return b"Connection: close\r\n"
        if not self.http11:
            return b"Connection: keep-alive\r\n"
        return b""

    async def send_answer(self) -> None:
        assert self.answer is not None
        status, head, body = self.answer
        if not self.request_done() and (
            not self.request.keep_alive or (self.head.expect_continue and not self.continued)
        ):
            self.close_after = True  # the body will not come, or not be read: close after
        parts = [
            head,
            self.request_id,
            b"\r\nServer: keygate\r\nDate: ",
            self.conn.ctx.date,
            b"\r\n",
            self._connection_header(),
            b"\r\n",
        ]
        if not self.head_request:
            parts.append(body)
        self.status = status
        self.bytes_out = len(body)
        self.response_started = True
        if self.put(b"".join(parts)):
            await self.request.writer.drain()

    async def write(self, data: bytes) -> None:
        """Write a head (with what body is at hand) straight to the transport, and wait while
        the client is not reading: aiohttp's writer drains only past 64 KiB per response, so
        a flood of small pipelined answers must wait here."""
        if self.put(data):
            await self.request.writer.drain()

    def put(self, data: bytes) -> bool:
        """`write` without the wait: True when the caller must drain before writing more."""
        conn = self.conn
        transport = conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client connection is closed")
        transport.write(data)
        self.request.writer.output_size += len(data)  # aiohttp's "a response went out" mark
        return conn.writing_paused

    # -- relaying the upstream's response --------------------------------------------------------

    def response_head(
        self, status: int, reason: bytes, response: ResponseHead
    ) -> tuple[bytes, bool]:
        """The head the client gets, and whether the body is re-chunked."""
        has_body = not (self.head_request or status < 200 or status in (204, 304))
        chunked = False
        parts = [status_line(status, reason), *render_headers(response.kept)]
        if response.content_length is not None:
            parts += (b"Content-Length: ", response.content_length, b"\r\n")
        elif has_body:
            if self.http11:
                chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.close_after = True  # the end of the body is the end of the connection
        if not self.request_done():
            self.close_after = True  # the upstream answered before the body was sent
        parts += (b"X-Request-Id: ", self.request_id, b"\r\n")
        if not response.has_server:
            parts.append(b"Server: " + SERVER + b"\r\n")
        parts += (self._connection_header(), b"\r\n")
        return b"".join(parts), chunked

    async def relay(self, call: UpstreamCall) -> None:
        """Stream the upstream's response to the client. Raises UpstreamError before the head
        went out (the caller answers 502/504); after that, a failure cuts the connection."""
        got = call.response_now()
        while got is None:
            await call.waiter()
            got = call.response_now()
        status, reason, response = got
        self.upstream_ms = (self.conn.ctx.loop.time() - call.started) * 1000.0
        self.upstream_status = self.status = status
        head, chunked = self.response_head(status, reason, response)
        writer: AbstractStreamWriter = self.request.writer
        chunks, done = call.available()
        self.response_started = True
        if done:  # the whole response is here: one write
            size = sum(map(len, chunks))
            self.bytes_out = size
            if chunked:
                framing = [b"%x\r\n" % size, *chunks, b"\r\n"] if size else []
                chunks = [*framing, b"0\r\n\r\n"]
            if self.put(b"".join((head, *chunks)) if chunks else head):
                await writer.drain()
            return
        await self.write(b"".join((head, *chunks)) if chunks and not chunked else head)
        if chunked:
            writer.enable_chunking()
            for data in chunks:
                self.bytes_out += len(data)
                await writer.write(data)
        else:
            self.bytes_out += sum(map(len, chunks))
        try:
            while True:
                data = await call.read()
                if not data:
                    break
                self.bytes_out += len(data)
                await writer.write(data)
        except UpstreamError as exc:
            self.reason = exc.reason if exc.reason != "abandoned" else self.reason
            self.close_after = True
            self.conn.abort()  # a truncated body must never look complete
            return
        await writer.write_eof()
