"""Admin handler that opens the customer portal for one account: a one-time link, the way
Stripe's customer-portal sessions work (the operator's backend decides who may have it)."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.problems import json_response
from gateway.admin.schemas import PortalSessionOut
from gateway.admin.state import SETTINGS, STORE
from gateway.errors import ConflictError, NotFoundError
from gateway.store.records import DEACTIVATED
from gateway.store.sessions import SessionStore
from gateway.store.sql import SqlStore
from gateway.timeutil import to_rfc3339


async def create_portal_session(request: web.Request) -> web.Response:
    portal = request.app[SETTINGS].current.portal
    store = request.app[STORE]
    assert isinstance(store, SqlStore)
    if not portal.enabled or portal.public_url is None:
        raise ConflictError("The customer portal is not enabled (portal.enabled = false).")
    account_id = request.match_info["account_id"]
    account = await store.get_account(account_id)
    if account is None:
        raise NotFoundError("Account not found", title="Account not found")
    if account.status == DEACTIVATED:
        raise ConflictError("The account is deactivated; its portal cannot be opened.")
    token, expires_at = await SessionStore(store).create_link(account_id, portal.link_ttl_seconds)
    # The token travels in the fragment: browsers never send it to a server, so it stays out
    # of access logs, proxies and Referer headers; the page posts it once, on a click, to sign in.
    url = f"{portal.public_url}{portal.path}/enter#{token}"
    doc = PortalSessionOut(url=url, expires_at=to_rfc3339(expires_at) or "")
    return json_response(doc.model_dump(mode="json"), status=201)
