"""Admin handlers for accounts and their callback-origin allow-lists."""

from __future__ import annotations

import contextlib
import uuid

from aiohttp import web

from gateway import keyservice
from gateway.admin.keys import DOOR, with_signing_secret
from gateway.admin.params import PAGING, Param, paging, parse_query
from gateway.admin.problems import json_response, parse_body
from gateway.admin.render import account_out, key_out, origin_out
from gateway.admin.schemas import AccountCreate, AccountUpdate, OriginCreate
from gateway.admin.state import SETTINGS, STORE
from gateway.errors import NotFoundError, ValidationError
from gateway.origins import normalise_entry
from gateway.store.records import ACTIVE, Account
from gateway.timeutil import now_us

LIST_PARAMS = (
    Param("status", "string", "Only accounts in this status", ("active", "deactivated")),
    *PAGING,
)


async def create_account(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS].current.keys
    body, _ = await parse_body(request, AccountCreate)
    now = now_us()
    account = Account(
        id=body.id or str(uuid.uuid4()),
        name=body.name,
        status=ACTIVE,
        created_at=now,
        updated_at=now,
    )
    secret = None
    new_key = None
    if body.provision_production_key:
        secret, new_key = keyservice.mint(
            prefix=settings.prefix,
            account_id=account.id,
            is_test=False,
            scopes=settings.scopes,
            expires_at=keyservice.default_expiry(now, settings.default_ttl_days),
            now_us=now,
            name="default production key",
            created_by="admin",
        )
    signing_secret = None
    if new_key is not None:
        signing_secret, new_key = with_signing_secret(request, new_key)
    account, record = await request.app[STORE].create_account(
        account, new_key, request.app[DOOR].actor(request)
    )
    key_doc = key_out(record, now, secret, signing_secret) if record is not None else None
    return json_response(account_out(account, key_doc), status=201)


async def list_accounts(request: web.Request) -> web.Response:
    query = parse_query(request, LIST_PARAMS)
    limit, cursor = paging(query)
    items, nxt = await request.app[STORE].list_accounts(
        limit=limit,
        cursor=cursor,
        status=query.get("status"),  # type: ignore[arg-type]
    )
    return json_response({"data": [account_out(a) for a in items], "next_cursor": nxt})


async def get_account(request: web.Request) -> web.Response:
    account = await request.app[STORE].get_account(request.match_info["account_id"])
    if account is None:
        raise NotFoundError("Account not found", title="Account not found")
    return json_response(account_out(account))


async def update_account(request: web.Request) -> web.Response:
    body, _ = await parse_body(request, AccountUpdate)  # null is refused by the schema
    account = await request.app[STORE].update_account(
        request.match_info["account_id"],
        name=body.name,
        status=body.status,
        actor=request.app[DOOR].actor(request),
    )
    return json_response(account_out(account))


async def list_origins(request: web.Request) -> web.Response:
    limit, cursor = paging(parse_query(request, PAGING))
    items, nxt = await request.app[STORE].list_origins(
        request.match_info["account_id"], limit=limit, cursor=cursor
    )
    return json_response({"data": [origin_out(o, at) for o, at in items], "next_cursor": nxt})


async def add_origin(request: web.Request) -> web.Response:
    body, _ = await parse_body(request, OriginCreate)
    try:
        origin = normalise_entry(body.origin)
    except ValueError as exc:
        raise ValidationError([{"field": "origin", "message": str(exc)}]) from None
    stored, at = await request.app[STORE].add_origin(
        request.match_info["account_id"], origin, request.app[DOOR].actor(request)
    )
    return json_response(origin_out(stored, at), status=201)


async def remove_origin(request: web.Request) -> web.Response:
    origin = request.match_info["origin"].lower()
    with contextlib.suppress(ValueError):  # else: stored by an older release, removed as written
        origin = normalise_entry(origin)  # `[0:0::1]:3000` names the stored `[::1]:3000`
    await request.app[STORE].remove_origin(
        request.match_info["account_id"], origin, request.app[DOOR].actor(request)
    )
    return web.Response(status=204)
