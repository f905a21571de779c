"""The console's and the portal's aiohttp applications: one set of pages, two places.

- `create_console_app`: mounted by the admin port at `/ui` (the admin app's propagation and
  request-id middlewares wrap it); every account, signed in with the admin token.
- `create_portal_app`: served by the data plane under `portal.path` (gateway/console/portal.py);
  the account a one-time link opened, and nothing else.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.admin.keys import DOOR, KeyDoor
from gateway.admin.state import SECRET_BOX, SETTINGS, STORE, TOKEN, AdminToken, SettingsRef
from gateway.console import pages
from gateway.console.session import (
    OPEN_HANDLERS,
    PLACE,
    SESSIONS,
    Handler,
    Place,
    console_middleware,
)
from gateway.fleet import PROPAGATION, Barrier, propagation_middleware
from gateway.signing import SecretBox
from gateway.store.postgres import PostgresStore, Presence
from gateway.store.sessions import SessionStore
from gateway.store.sql import SqlStore

CONSOLE_ROOT = "/ui"
CONSOLE_IDLE_SECONDS = 1800.0
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
STATIC: web.AppKey[dict[str, tuple[bytes, str]]] = web.AppKey("static", dict)


def when(rfc3339: str) -> str:
    """`2026-11-25T18:27:02.096070Z` as people read it: `2026-11-25 18:27 UTC` (the exact
    time stays in the <time> element's datetime attribute)."""
    return f"{rfc3339[:10]} {rfc3339[11:16]} UTC"


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The package's static files, read once: (body, content type) by name."""
    folder = resources.files("gateway.console").joinpath("static")
    out = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if suffix in STATIC_TYPES:
            out[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return out


async def static(request: web.Request) -> web.Response:
    found = request.app[STATIC].get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, ctype = found
    return web.Response(body=body, headers={"Content-Type": ctype})


def _base_app(
    settings: SettingsRef, store: SqlStore, box: SecretBox, place: Place, open_: set[Handler]
) -> web.Application:
    middlewares: list[Any] = [console_middleware]
    fleet = place.kind == "portal" and isinstance(store, PostgresStore)
    if fleet:  # as on the admin port: a change returns once every instance has applied it
        middlewares.insert(0, propagation_middleware)
    app = web.Application(middlewares=middlewares)  # body limit: session.read_form
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("gateway.console", "templates"),
        autoescape=True,  # every piece of user-supplied text is escaped
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = when
    # One path segment: unlike Jinja's urlencode, "/" is escaped too (an origin or id with a
    # "/" in it would otherwise name another route).
    env.filters["segment"] = lambda value: quote(str(value), safe="")
    if fleet:
        assert isinstance(store, PostgresStore)
        app[PROPAGATION] = Barrier(Presence(store), settings.current.store)
    app[PLACE] = place
    app[SETTINGS] = settings
    app[STORE] = store
    app[SECRET_BOX] = box
    app[SESSIONS] = SessionStore(store)
    app[STATIC] = _static_files()
    door: KeyDoor = pages.PageDoor()
    app[DOOR] = door
    app[OPEN_HANDLERS] = frozenset({static, *open_})
    return app


def _account_routes(app: web.Application, prefix: str) -> None:
    """The account's API Keys page and its actions, the same in both places."""
    acct = prefix + "/accounts/{account_id}"
    key = acct + "/keys/{key_id}"
    r = app.router
    r.add_get(acct + "/", pages.account_page)
    r.add_post(acct + "/keys", pages.create_key)
    r.add_post(key + "/regenerate", pages.regenerate_key)
    r.add_post(key + "/delete", pages.delete_key)
    r.add_post(key + "/webhook", pages.save_webhook)
    r.add_post(key + "/signing-secret", pages.rotate_signing_secret)
    r.add_post(acct + "/origins", pages.add_origin)
    r.add_post(acct + "/origins/{origin}/remove", pages.remove_origin)
    r.add_get(prefix + "/static/{name}", static)


def create_console_app(
    settings: SettingsRef, store: SqlStore, box: SecretBox, token: AdminToken
) -> web.Application:
    """The operators' console, to be mounted at `CONSOLE_ROOT` on the admin app (whose
    middlewares wrap it: request ids, and in a fleet the propagation barrier)."""
    place = Place(
        kind="console",
        root=CONSOLE_ROOT,
        cookie="keygate_console",
        idle_seconds=CONSOLE_IDLE_SECONDS,
        always_secure=False,
    )
    app = _base_app(settings, store, box, place, {pages.sign_in_page, pages.sign_in})
    app[TOKEN] = token
    r = app.router
    r.add_get("/", pages.accounts_page)
    r.add_get("/sign-in", pages.sign_in_page)
    r.add_post("/sign-in", pages.sign_in)
    r.add_post("/sign-out", pages.sign_out)
    r.add_post("/accounts", pages.create_account)
    r.add_post("/accounts/{account_id}/status", pages.set_account_status)
    _account_routes(app, "")
    return app


def _origin_of(url: str) -> str:
    """`https://API.example.com/base` -> `https://api.example.com` ("" for "")."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def create_portal_app(settings: SettingsRef, store: SqlStore, box: SecretBox) -> web.Application:
    """The customer portal, served by the data plane under `portal.path` (full paths)."""
    portal = settings.current.portal
    public = portal.public_url or ""
    place = Place(
        kind="portal",
        root=portal.path,
        cookie="keygate_portal",
        idle_seconds=portal.session_idle_seconds,
        always_secure=public.startswith("https://"),
        public_origin=_origin_of(public),
    )
    app = _base_app(settings, store, box, place, {pages.enter_page, pages.enter})
    r = app.router
    root = portal.path
    r.add_get(root, pages.portal_home)
    r.add_get(root + "/", pages.portal_home)
    r.add_get(root + "/enter", pages.enter_page)
    r.add_post(root + "/enter", pages.enter)
    r.add_post(root + "/sign-out", pages.sign_out)
    _account_routes(app, root)
    app.freeze()
    return app
