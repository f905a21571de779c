"""The portal's door on the data plane: requests under `portal.path` (no key needed there) are
read with the data plane's limits and handed to the portal's aiohttp application, the way the
self-service endpoints are (gateway/selfservice.py)."""

from __future__ import annotations

import logging

from aiohttp import web
from multidict import CIMultiDict

from gateway.admin.problems import REQUEST_ID
from gateway.admin.state import SETTINGS, SettingsRef
from gateway.config import Settings
from gateway.console.app import create_portal_app
from gateway.console.session import BODY_LIMIT
from gateway.http.exchange import Exchange
from gateway.http.protocol import PlaneRequest
from gateway.signing import SecretBox
from gateway.store.base import Store
from gateway.store.sql import SqlStore

log = logging.getLogger("gateway.console")


class Portal:
    def __init__(self, settings: Settings, store: Store, box: SecretBox) -> None:
        assert isinstance(store, SqlStore)  # sessions and links are rows in the same database
        self.app = create_portal_app(SettingsRef(settings), store, box)
        self.settings = settings.portal
        self._prefix = settings.portal.path.encode()

    def handles(self, path: bytes) -> bool:
        prefix = self._prefix
        return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == 47)

    def reload(self, settings: Settings) -> None:
        self.app[SETTINGS].current = settings

    async def answer(self, ex: Exchange) -> None:
        """Answer (through `ex.respond`) one portal request."""
        body = await ex.read_body(BODY_LIMIT)
        if body is None:
            return
        original = ex.request
        assert isinstance(original, PlaneRequest)
        headers = CIMultiDict(original.headers)
        headers.popall("Expect", None)  # answered by `read_body` already
        request = original.clone(headers=headers, client_max_size=BODY_LIMIT, remote=ex.conn.peer)
        request.door_body = body
        request[REQUEST_ID] = ex.request_id.decode("latin-1")
        # aiohttp's own dispatch for an application without a runner of its own (as in
        # gateway/selfservice.py).
        response = await self.app._handle(request)
        if not isinstance(response, web.Response) or not isinstance(response.body, bytes | None):
            log.error("portal handler answered %r, not a complete response", response)
            ex.respond_problem(500, "Internal error.", None)
            return
        out = CIMultiDict(response.headers)
        for name in ("Content-Length", "Server", "Date"):
            out.popall(name, None)
        ex.respond(
            response.status,
            [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out.items()],
            response.body or b"",
        )
