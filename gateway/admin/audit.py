"""Admin handler for the audit trail: newest first, production and test kept apart."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.params import PAGING, Param, paging, parse_query
from gateway.admin.problems import json_response
from gateway.admin.render import audit_out
from gateway.admin.state import STORE

ACTIONS = (
    "account.created",
    "account.updated",
    "key.created",
    "key.updated",
    "key.regenerated",
    "key.signing_secret_rotated",
    "key.revoked",
    "key.deleted",
    "callback_origin.added",
    "callback_origin.removed",
    "event.published",
)

LIST_PARAMS = (
    Param("account_id", "string", "Only this account's entries"),
    Param("environment", "string", "production (default) or test", ("production", "test")),
    Param("action", "string", "Only this action", ACTIONS),
    Param("since", "date-time", "Only entries at or after this time (RFC 3339)"),
    *PAGING,
)


async def list_audit(request: web.Request) -> web.Response:
    query = parse_query(request, LIST_PARAMS)
    limit, cursor = paging(query)
    since = query.get("since")
    items, nxt = await request.app[STORE].list_audit(
        limit=limit,
        cursor=cursor,
        environment=str(query.get("environment", "production")),
        account_id=query.get("account_id"),  # type: ignore[arg-type]
        action=query.get("action"),  # type: ignore[arg-type]
        since_us=since if isinstance(since, int) else None,
    )
    return json_response({"data": [audit_out(e) for e in items], "next_cursor": nxt})
