"""The pages and form actions of the console and the portal.

Every change goes through the admin API's own handlers (gateway/admin/keys.py, accounts.py)
behind `PageDoor`, with the form turned into the JSON body those handlers validate: the same
schemas, egress rules, audit rows, webhook events and revocation guarantee as the API. Only
the actor differs: `admin:console`, or `portal:<session id>` (the session's public id).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import aiohttp_jinja2
import orjson
from aiohttp import web

from gateway.admin import accounts, keys
from gateway.admin.keys import AdminDoor
from gateway.admin.problems import JSON_BODY, request_id
from gateway.admin.render import account_out, audit_out, key_out
from gateway.admin.state import STORE, TOKEN
from gateway.admin.webhooks import delivery_out
from gateway.console.session import (
    CSRF,
    PLACE,
    SESSION,
    SESSIONS,
    Place,
    message,
    read_form,
    see_other,
    session_binding,
    session_cookie,
)
from gateway.errors import ConflictError, NotFoundError, ProblemError
from gateway.store.records import ACTIVE, Actor, KeyRecord
from gateway.timeutil import now_us

log = logging.getLogger("gateway.console")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LIST_LIMIT = 100  # keys of each environment shown on one page
AUDIT_LIMIT = 25
DELIVERY_LIMIT = 10
SEARCH_PAGES = 20  # accounts are searched 500 at a time, this many pages at most
SEARCH_SHOWN = 50


class PageDoor(AdminDoor):
    """The pages' door to the key API: keys of the account named in the URL only (whose
    reach the session middleware has already checked), acting as the console or the portal
    session."""

    def actor(self, request: web.Request) -> Actor:
        session = request[SESSION]
        who = "admin:console" if session.kind == "console" else f"portal:{session.id}"
        return Actor(actor=who, ip=request.remote, request_id=request_id(request))

    async def find(self, request: web.Request, *, changing: bool) -> KeyRecord:
        record = await super().find(request, changing=changing)
        if record.account_id != request.match_info["account_id"]:
            raise NotFoundError("Key not found", title="Key not found")
        return record

    # What the portal's page does not offer, the server does not do either (the console, like
    # the admin API, may do both). The portal's page offers "Create production key" only while
    # the account has no active production key, and Delete on test keys only (a production key
    # is regenerated instead: contract section 10).

    async def check_create(self, request: web.Request, *, production: bool) -> None:
        if request[SESSION].kind != "portal" or not production:
            return
        active, _ = await request.app[STORE].list_keys(
            limit=1,
            cursor=None,
            account_id=request.match_info["account_id"],
            is_test=False,
            status=ACTIVE,
        )
        if active:
            raise ConflictError(
                "The account already has an active production key; regenerate it instead.",
                title="Production key exists",
            )

    def check_delete(self, request: web.Request, record: KeyRecord) -> None:
        if request[SESSION].kind == "portal" and not record.is_test:
            raise ConflictError(
                "Only test keys can be deleted here; regenerate the production key instead.",
                title="Production key",
            )


@dataclass(frozen=True, slots=True)
class Secret:
    label: str
    value: str


@dataclass(frozen=True, slots=True)
class Reveal:
    """A value shown once, in the copy-once dialog."""

    title: str
    note: str
    secrets: tuple[Secret, ...]


def account_url(place: Place, account_id: str) -> str:
    return f"{place.root}/accounts/{quote(account_id, safe='')}/"


async def call(request: web.Request, handler: Handler, body: dict[str, Any] | None = None) -> Any:
    """Run an admin API handler for this request, `body` as its JSON body; its JSON answer."""
    if body is not None:
        request[JSON_BODY] = orjson.dumps(body)
    response = await handler(request)
    assert isinstance(response, web.Response)
    raw = cast(bytes | None, response.body)
    return orjson.loads(raw) if raw else None


def problem_text(exc: ProblemError) -> str:
    fields = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in exc.errors or [])
    return f"{exc.detail} {fields}".strip() if fields else exc.detail


async def form_text(request: web.Request, name: str) -> str:
    value = (await read_form(request)).get(name, "")
    return value.strip() if isinstance(value, str) else ""


# -- the account's API Keys page (console and portal) -----------------------------------------


async def render_account(
    request: web.Request,
    account_id: str,
    *,
    reveal: Reveal | None = None,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    store = request.app[STORE]
    place = request.app[PLACE]
    account = await store.get_account(account_id)
    if account is None:
        raise NotFoundError("There is no such account.", title="Account not found")
    now = now_us()
    production, _ = await store.list_keys(
        limit=LIST_LIMIT, cursor=None, account_id=account_id, is_test=False
    )
    test, _ = await store.list_keys(
        limit=LIST_LIMIT, cursor=None, account_id=account_id, is_test=True
    )
    deliveries = {}
    for record in (*production, *test):  # by key: the outbox is indexed by key, not account
        items, _ = await store.list_deliveries(limit=DELIVERY_LIMIT, cursor=None, key_id=record.id)
        deliveries[record.id] = [delivery_out(d) for d in items]
    origins, _ = await store.list_origins(account_id, limit=500, cursor=None)
    audit = {}
    for environment in ("production", "test"):
        entries, _ = await store.list_audit(
            limit=AUDIT_LIMIT, cursor=None, environment=environment, account_id=account_id
        )
        audit[environment] = [audit_out(e) for e in entries]
    base = account_url(place, account_id)
    context = {
        "place": place,
        "csrf": request[CSRF],
        "account": account_out(account),
        "base": base,
        "production": [key_out(k, now) for k in production],
        "test": [key_out(k, now) for k in test],
        "has_active_production": any(k.status(now) == ACTIVE for k in production),
        "deliveries": deliveries,
        "origins": [o for o, _ in origins],
        "audit": audit,
        "reveal": reveal,
        "error": error,
    }
    return aiohttp_jinja2.render_template("account.html", request, context, status=status)


def action(
    fn: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A form action: a refusal by the API's own rules shows the page again with its reason."""

    async def run(request: web.Request) -> web.Response:
        try:
            return await fn(request)
        except ProblemError as exc:
            if exc.status == 404 and isinstance(exc, NotFoundError):
                raise
            return await render_account(
                request, request.match_info["account_id"], error=problem_text(exc), status=400
            )

    run.__name__ = fn.__name__
    return run


async def account_page(request: web.Request) -> web.Response:
    return await render_account(request, request.match_info["account_id"])


def _back(request: web.Request) -> web.Response:
    return see_other(account_url(request.app[PLACE], request.match_info["account_id"]))


@action
async def create_key(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    production = await form_text(request, "environment") == "production"
    await PageDoor().check_create(request, production=production)
    body: dict[str, Any] = {"account_id": account_id, "is_test": production is False}
    name = await form_text(request, "name")
    if name:
        body["name"] = name
    doc = await call(request, keys.create_key, body)
    reveal = Reveal(
        f"New {'production' if production else 'test'} key “{doc['name']}”",
        "Copy it now: this is the only time it is shown. The gateway keeps only its hash.",
        (Secret("API key", doc["key"]), Secret("Signing secret", doc["signing_secret"])),
    )
    return await render_account(request, account_id, reveal=reveal)


@action
async def regenerate_key(request: web.Request) -> web.Response:
    doc = await call(request, keys.regenerate_key)
    reveal = Reveal(
        f"Regenerated “{doc['name']}”",
        "The old key stopped working when you confirmed. Copy the new one now: this is the "
        "only time it is shown.",
        (Secret("API key", doc["key"]), Secret("Signing secret", doc["signing_secret"])),
    )
    return await render_account(request, request.match_info["account_id"], reveal=reveal)


@action
async def delete_key(request: web.Request) -> web.Response:
    door = PageDoor()
    record = await door.find(request, changing=True)
    door.check_delete(request, record)
    await request.app[STORE].delete_key(record.id, door.actor(request))
    return _back(request)


@action
async def save_webhook(request: web.Request) -> web.Response:
    form = await read_form(request)
    url = await form_text(request, "webhook_url")
    body: dict[str, Any] = {"webhook_url": url or None}
    if url:
        events = (await form_text(request, "webhook_events")).replace(",", " ").split()
        body["webhook_events"] = events or ["*"]
        body["webhook_enabled"] = form.get("webhook_enabled") == "on"
    await call(request, keys.update_key, body)
    return _back(request)


@action
async def rotate_signing_secret(request: web.Request) -> web.Response:
    doc = await call(request, keys.rotate_signing_secret)
    reveal = Reveal(
        f"New signing secret for “{doc['name']}”",
        "Copy it now: this is the only time it is shown. The previous secret keeps signing "
        "deliveries beside it for the overlap period.",
        (Secret("Signing secret", doc["signing_secret"]),),
    )
    return await render_account(request, request.match_info["account_id"], reveal=reveal)


@action
async def add_origin(request: web.Request) -> web.Response:
    await call(request, accounts.add_origin, {"origin": await form_text(request, "origin")})
    return _back(request)


@action
async def remove_origin(request: web.Request) -> web.Response:
    await call(request, accounts.remove_origin)
    return _back(request)


# -- console only: accounts, sign-in ------------------------------------------------------------


async def accounts_page(request: web.Request) -> web.Response:
    return await render_accounts(request)


async def render_accounts(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.Response:
    store = request.app[STORE]
    query = request.query.get("q", "").strip()
    needle = query.casefold()
    found: list[dict[str, Any]] = []
    cursor = None
    for _ in range(SEARCH_PAGES):
        items, cursor = await store.list_accounts(limit=500, cursor=cursor)
        found += [
            account_out(a)
            for a in items
            if needle in a.id.casefold() or needle in a.name.casefold()
        ]
        if cursor is None or len(found) > SEARCH_SHOWN:
            break
    context = {
        "place": request.app[PLACE],
        "csrf": request[CSRF],
        "query": query,
        "accounts": found[:SEARCH_SHOWN],
        "more": len(found) > SEARCH_SHOWN or cursor is not None,
        "error": error,
    }
    return aiohttp_jinja2.render_template("accounts.html", request, context, status=status)


async def create_account(request: web.Request) -> web.Response:
    form = await read_form(request)
    body: dict[str, Any] = {
        "name": await form_text(request, "name"),
        "provision_production_key": form.get("provision_production_key") == "on",
    }
    if ident := await form_text(request, "id"):
        body["id"] = ident
    try:
        doc = await call(request, accounts.create_account, body)
    except ProblemError as exc:
        return await render_accounts(request, error=problem_text(exc), status=400)
    reveal = None
    if (key := doc.get("production_key")) is not None:
        reveal = Reveal(
            f"Production key of “{doc['name']}”",
            "Copy it now: this is the only time it is shown.",
            (Secret("API key", key["key"]), Secret("Signing secret", key["signing_secret"])),
        )
    return await render_account(request, doc["id"], reveal=reveal)


@action
async def set_account_status(request: web.Request) -> web.Response:
    status = await form_text(request, "status")
    await call(request, accounts.update_account, {"status": status})
    return _back(request)


async def sign_in_page(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template(
        "sign_in.html", request, {"place": request.app[PLACE], "error": None}
    )


async def sign_in(request: web.Request) -> web.Response:
    place = request.app[PLACE]
    token = await form_text(request, "token")
    if not token or not request.app[TOKEN].check(f"Bearer {token}"):
        log.warning("console sign-in refused from %s", request.remote)
        return aiohttp_jinja2.render_template(
            "sign_in.html",
            request,
            {"place": place, "error": "That is not the admin token."},
            status=401,
        )
    value, session = await request.app[SESSIONS].create_session(
        "console",
        None,
        place.idle_seconds,
        bound_to=session_binding(request),
        replacing=request.cookies.get(place.cookie, ""),  # one browser, one session
    )
    log.info("console session %s began from %s", session.id, request.remote)
    return see_other(f"{place.root}/", session_cookie(request, place, value))


async def sign_out(request: web.Request) -> web.Response:
    place = request.app[PLACE]
    await request.app[SESSIONS].end_session(
        request.cookies.get(place.cookie, ""), bound_to=session_binding(request)
    )
    cookie = session_cookie(request, place, "")
    if place.kind == "console":
        return see_other(f"{place.root}/sign-in", cookie)
    response = message(request, 200, "Signed out", "You have signed out of the API keys page.")
    response.headers.add("Set-Cookie", cookie)
    return response


# -- portal only: the one-time link ----------------------------------------------------------


async def enter_page(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("enter.html", request, {"place": request.app[PLACE]})


async def enter(request: web.Request) -> web.Response:
    place = request.app[PLACE]
    sessions = request.app[SESSIONS]
    token = await form_text(request, "token")
    account_id = await sessions.redeem_link(token) if token else None
    account = await request.app[STORE].get_account(account_id) if account_id else None
    if account is None or account.status != ACTIVE:
        return message(
            request,
            403,
            "Link used or expired",
            "This link has already been used or has expired; each link opens the page once. "
            "Open the API keys page again from the application that sent you here.",
        )
    value, session = await sessions.create_session(
        "portal",
        account.id,
        place.idle_seconds,
        replacing=request.cookies.get(place.cookie, ""),  # one browser, one session
    )
    log.info("portal session %s began for account %s", session.id, account.id)
    return see_other(account_url(place, account.id), session_cookie(request, place, value))


async def portal_home(request: web.Request) -> web.Response:
    account_id = request[SESSION].account_id
    assert account_id is not None
    return see_other(account_url(request.app[PLACE], account_id))
