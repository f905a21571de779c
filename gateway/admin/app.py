"""create_admin_app(): wiring only — middleware order, routes, state."""

from __future__ import annotations

from aiohttp import web

from gateway import __version__
from gateway.admin import accounts, keys
from gateway.admin.problems import Handler, json_response, problems_middleware, unauthorized
from gateway.admin.state import SETTINGS, STORE, TOKEN, AdminToken
from gateway.config import Settings
from gateway.store.base import Store

PUBLIC_PATHS = frozenset({"/healthz"})


@web.middleware
async def token_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in PUBLIC_PATHS and not request.app[TOKEN].check(
        request.headers.get("Authorization")
    ):
        return unauthorized()
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


def create_admin_app(settings: Settings, store: Store, token: AdminToken) -> web.Application:
    app = web.Application(middlewares=[problems_middleware, token_middleware])
    app[SETTINGS] = settings
    app[STORE] = store
    app[TOKEN] = token
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/admin/v1/accounts", accounts.create_account)
    app.router.add_post("/admin/v1/keys", keys.create_key)
    return app
