"""The admin port's aiohttp server, as the data plane's: every answer says `Server: keygate`
(aiohttp's default names the Python and aiohttp versions), and a request aiohttp could not
parse is answered as problem+json and logged as one warning line without the client's bytes
(aiohttp's default logs a traceback at ERROR and quotes them, in the log and the answer)."""

from __future__ import annotations

import logging
import os
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from gateway.http.protocol import SERVER, problem_body

log = logging.getLogger("gateway.admin")

SERVER_NAME = SERVER.decode()


async def server_header(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every response the admin application (and the console under it)
    makes, 404s and 405s included."""
    response.headers["Server"] = SERVER_NAME


class AdminConnection(RequestHandler):
    """aiohttp's per-connection protocol. A request aiohttp could not parse never reaches the
    application (nor its `on_response_prepare`): it is answered here."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, BadHttpMessage):  # a failure of ours: aiohttp's log and answer
            response = super().handle_error(request, status, exc, message)
            response.headers["Server"] = SERVER_NAME
            return response
        log.warning(
            "admin port refused a request that could not be parsed (%s)", type(exc).__name__
        )
        rid = os.urandom(16).hex()
        response = web.Response(
            status=status,
            body=problem_body(status, None, None, b"", rid.encode()),
            content_type="application/problem+json",
            headers={"X-Request-Id": rid, "Server": SERVER_NAME},
        )
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A body that cannot be read (a Content-Encoding it does not have, a broken chunk) is
        the client's doing, also when aiohttp finds it draining what a handler left unread
        (after a 401, say): one warning line, not a traceback at ERROR."""
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError):
            log.warning("admin port could not read a request body (%s)", type(exc).__name__)
            return
        super().log_exception(*args, **kw)


class AdminServer(web.Server):
    """`aiohttp.web.Server` whose connections are `AdminConnection`s."""

    def __init__(self, app_server: web.Server, **protocol_kwargs: Any) -> None:
        super().__init__(
            app_server.request_handler,
            request_factory=app_server.request_factory,
            handler_cancellation=app_server.handler_cancellation,
            **{**app_server._kwargs, **protocol_kwargs},
        )

    def __call__(self) -> RequestHandler:
        return AdminConnection(self, loop=self._loop, **self._kwargs)


class AdminRunner(web.AppRunner):
    """`web.AppRunner` that serves its application through an `AdminServer`."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, access_log=None, handle_signals=False, **kwargs)

    async def _make_server(self) -> web.Server:
        # The application's own server starts the application and freezes it; its handler and
        # request factory are then served with AdminConnection as the protocol.
        return AdminServer(await super()._make_server(), access_log=None)
