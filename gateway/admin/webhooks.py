"""Admin handlers for webhook deliveries: the outbox, readable and retryable."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.params import PAGING, Param, paging, parse_query
from gateway.admin.problems import json_response
from gateway.admin.schemas import DeliveryOut
from gateway.admin.state import STORE
from gateway.errors import NotFoundError
from gateway.store.records import Delivery
from gateway.timeutil import now_us, to_rfc3339

LIST_PARAMS = (
    Param("key_id", "string", "Only deliveries to this key's endpoint"),
    Param("account_id", "string", "Only this account's deliveries"),
    Param("status", "string", "Only deliveries in this state", ("pending", "succeeded", "failed")),
    *PAGING,
)


def delivery_out(d: Delivery) -> dict[str, Any]:
    return DeliveryOut(
        id=d.id,
        key_id=d.key_id,
        account_id=d.account_id,
        environment=d.environment,  # type: ignore[arg-type]
        event_type=d.event_type,
        url=d.url,
        status=d.status,  # type: ignore[arg-type]
        created_at=to_rfc3339(d.created_at) or "",
        next_attempt_at=to_rfc3339(d.next_attempt_at) if d.status == "pending" else None,
        attempts=d.attempt_log,  # type: ignore[arg-type]
    ).model_dump(mode="json")


async def list_deliveries(request: web.Request) -> web.Response:
    query = parse_query(request, LIST_PARAMS)
    limit, cursor = paging(query)
    items, nxt = await request.app[STORE].list_deliveries(
        limit=limit,
        cursor=cursor,
        key_id=query.get("key_id"),  # type: ignore[arg-type]
        account_id=query.get("account_id"),  # type: ignore[arg-type]
        status=query.get("status"),  # type: ignore[arg-type]
    )
    return json_response({"data": [delivery_out(d) for d in items], "next_cursor": nxt})


async def retry_delivery(request: web.Request) -> web.Response:
    delivery_id = request.match_info["delivery_id"]
    store = request.app[STORE]
    if await store.get_delivery(delivery_id) is None:
        raise NotFoundError("Delivery not found", title="Delivery not found")
    return json_response(delivery_out(await store.retry_delivery(delivery_id, now_us())), 202)
