"""create_admin_app(): wiring only — middleware order, routes from the route table, state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway import selfservice
from gateway.admin.keys import DOOR, AdminDoor, KeyDoor
from gateway.admin.listener import server_header
from gateway.admin.openapi import build_openapi
from gateway.admin.problems import Handler, json_response, problems_middleware, unauthorized
from gateway.admin.routes import Route, api_routes
from gateway.admin.state import SECRET_BOX, SETTINGS, STORE, TOKEN, AdminToken, SettingsRef
from gateway.config import Settings
from gateway.fleet import PROPAGATION, Barrier, propagation_middleware
from gateway.signing import SecretBox
from gateway.store.base import Store

MetricsSource = Callable[[], bytes]
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
SELF_OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("selfservice_openapi")
METRICS: web.AppKey[MetricsSource] = web.AppKey("metrics")
PUBLIC: web.AppKey[frozenset[str]] = web.AppKey("public_paths")
CONSOLE_ROOT = "/ui"  # the web console (gateway/console/): its own sign-in and session cookie


@web.middleware
async def token_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    console = path == CONSOLE_ROOT or path.startswith(CONSOLE_ROOT + "/")
    if (
        path not in request.app[PUBLIC]
        and not console
        and not request.app[TOKEN].check(request.headers.get("Authorization"))
    ):
        return unauthorized()
    return await handler(request)


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def selfservice_openapi(request: web.Request) -> web.Response:
    return json_response(request.app[SELF_OPENAPI])


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS](),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def routes() -> tuple[Route, ...]:
    return api_routes(openapi, metrics, selfservice_openapi)


def create_admin_app(
    settings: Settings,
    store: Store,
    token: AdminToken,
    metrics_source: Callable[[], bytes],
    box: SecretBox,
    barrier: Barrier | None = None,
    console: Callable[[SettingsRef], web.Application] | None = None,
) -> web.Application:
    middlewares = [problems_middleware, token_middleware]
    if barrier is not None:  # fleet: a change returns once the other instances applied it
        middlewares.insert(0, propagation_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=1024**2)
    app.on_response_prepare.append(server_header)
    if barrier is not None:
        app[PROPAGATION] = barrier
    table = routes()
    app[SETTINGS] = SettingsRef(settings)
    app[STORE] = store
    app[SECRET_BOX] = box
    app[TOKEN] = token
    app[METRICS] = metrics_source
    app[OPENAPI] = build_openapi(table)
    app[SELF_OPENAPI] = selfservice.openapi()
    door: KeyDoor = AdminDoor()
    app[DOOR] = door
    app[PUBLIC] = frozenset(r.path for r in table if r.public)
    for route in table:
        app.router.add_route(route.method, route.path, route.handler)
    if console is not None:  # built by the caller: admin and console do not import each other
        app.router.add_get(CONSOLE_ROOT, to_console)
        app.add_subapp(CONSOLE_ROOT, console(app[SETTINGS]))
    return app


async def to_console(request: web.Request) -> web.Response:
    return web.Response(status=308, headers={"Location": CONSOLE_ROOT + "/"})
