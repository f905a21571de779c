"""Admin handlers for webhook deliveries: the outbox, readable and retryable."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.admin.keys import admin_actor
from gateway.admin.params import PAGING, Param, paging, parse_query
from gateway.admin.problems import json_response, parse_body
from gateway.admin.schemas import DeliveryOut, EventCreate
from gateway.admin.state import STORE
from gateway.errors import NotFoundError, ValidationError
from gateway.store.records import Delivery
from gateway.timeutil import now_us, to_rfc3339

LIST_PARAMS = (
    Param("key_id", "string", "Only deliveries to this key's endpoint"),
    Param("account_id", "string", "Only this account's deliveries"),
    Param("status", "string", "Only deliveries in this state", ("pending", "succeeded", "failed")),
    Param("event_id", "string", "Only the deliveries of this event"),
    *PAGING,
)


def delivery_out(d: Delivery) -> dict[str, Any]:
    return DeliveryOut(
        id=d.id,
        event_id=d.event_id,
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
        event_id=query.get("event_id"),  # type: ignore[arg-type]
    )
    return json_response({"data": [delivery_out(d) for d in items], "next_cursor": nxt})


async def retry_delivery(request: web.Request) -> web.Response:
    delivery_id = request.match_info["delivery_id"]
    store = request.app[STORE]
    if await store.get_delivery(delivery_id) is None:
        raise NotFoundError("Delivery not found", title="Delivery not found")
    return json_response(delivery_out(await store.retry_delivery(delivery_id, now_us())), 202)


EVENT_DATA_LIMIT = 64 * 1024
RESERVED_DATA = ("account_id", "key_id", "environment")


async def publish_event(request: web.Request) -> web.Response:
    """An event the upstream raises, queued for every key of the account (or the one key) whose
    webhook is enabled and listens for its type."""
    body, _ = await parse_body(request, EventCreate)
    problems = []
    if body.account_id is None and body.key_id is None:
        problems.append(
            {
                "field": "account_id",
                "message": "is required: give account_id (every key of the account) or key_id"
                " (one key)",
            }
        )
    elif body.account_id is not None and body.key_id is not None:
        problems.append({"field": "account_id", "message": "give account_id or key_id, not both"})
    if body.type.startswith("key."):
        problems.append({"field": "type", "message": "key.* events are raised by the gateway"})
    for name in RESERVED_DATA:
        if name in body.data:
            problems.append({"field": f"data.{name}", "message": "is set by the gateway"})
    try:
        if len(orjson.dumps(body.data)) > EVENT_DATA_LIMIT:
            problems.append({"field": "data", "message": "must be at most 64 KiB as JSON"})
    except orjson.JSONEncodeError:  # what JSON allows but a 64-bit integer does not hold
        problems.append({"field": "data", "message": "integers must fit in 64 bits"})
    if problems:
        raise ValidationError(problems)
    event_id, queued = await request.app[STORE].publish_event(
        body.type,
        body.data,
        account_id=body.account_id,
        key_id=body.key_id,
        environment=body.environment,
        actor=admin_actor(request),
    )
    return json_response({"id": event_id, "deliveries": queued}, 202)
