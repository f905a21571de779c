"""Admin handlers for accounts."""

from __future__ import annotations

import uuid

from aiohttp import web

from gateway import keyservice
from gateway.admin.keys import admin_actor
from gateway.admin.problems import json_response, parse_body
from gateway.admin.render import account_out, key_out
from gateway.admin.schemas import AccountCreate
from gateway.admin.state import SETTINGS, STORE
from gateway.store.records import ACTIVE, Account
from gateway.timeutil import now_us


async def create_account(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS].keys
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
    account, record = await request.app[STORE].create_account(
        account, new_key, admin_actor(request)
    )
    key_doc = key_out(record, now, secret) if record is not None else None
    return json_response(account_out(account, key_doc), status=201)
