"""The admin API's route table: registered on the app and documented in OpenAPI from this one
list, so no route can exist undocumented or be documented without existing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from gateway.admin import accounts, audit, keys, portal, webhooks
from gateway.admin.params import PAGING, Param
from gateway.admin.schemas import (
    AccountCreate,
    AccountList,
    AccountOut,
    AccountUpdate,
    AuditList,
    DeliveryList,
    DeliveryOut,
    EventAccepted,
    EventCreate,
    Health,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    KeyUpdate,
    OriginCreate,
    OriginList,
    OriginOut,
    PortalSessionOut,
    SigningSecretRotated,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    status: int = 200
    response: type[BaseModel] | None = None  # None with status 204: no body
    query: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"
    public: bool = False


async def healthz(request: web.Request) -> web.Response:
    from gateway.admin.problems import json_response

    return json_response({"status": "ok"})


def api_routes(
    openapi: Handler, metrics: Handler, selfservice_openapi: Handler
) -> tuple[Route, ...]:
    acct = "/admin/v1/accounts/{account_id}"
    key = "/admin/v1/keys/{key_id}"
    return (
        Route(
            "GET",
            "/healthz",
            healthz,
            "Liveness (no token needed)",
            "operations",
            response=Health,
            public=True,
        ),
        Route(
            "GET", "/metrics", metrics, "Prometheus metrics", "operations", media_type="text/plain"
        ),
        Route("GET", "/admin/v1/openapi.json", openapi, "This document", "operations"),
        Route(
            "GET",
            "/admin/v1/self-service/openapi.json",
            selfservice_openapi,
            "The OpenAPI document of the self-service key API on the data plane",
            "operations",
        ),
        Route(
            "POST",
            "/admin/v1/accounts",
            accounts.create_account,
            "Create an account",
            "accounts",
            body=AccountCreate,
            status=201,
            response=AccountOut,
            errors=(400, 409),
        ),
        Route(
            "GET",
            "/admin/v1/accounts",
            accounts.list_accounts,
            "List accounts",
            "accounts",
            response=AccountList,
            query=accounts.LIST_PARAMS,
            errors=(400,),
        ),
        Route(
            "GET",
            acct,
            accounts.get_account,
            "Read an account",
            "accounts",
            response=AccountOut,
            errors=(404,),
        ),
        Route(
            "PATCH",
            acct,
            accounts.update_account,
            "Rename, deactivate or reactivate an account",
            "accounts",
            body=AccountUpdate,
            response=AccountOut,
            errors=(400, 404),
        ),
        Route(
            "GET",
            acct + "/callback-origins",
            accounts.list_origins,
            "List allowed callback origins",
            "callback origins",
            response=OriginList,
            query=PAGING,
            errors=(400, 404),
        ),
        Route(
            "POST",
            acct + "/callback-origins",
            accounts.add_origin,
            "Allow a callback origin",
            "callback origins",
            body=OriginCreate,
            status=201,
            response=OriginOut,
            errors=(400, 404, 409),
        ),
        Route(
            "DELETE",
            acct + "/callback-origins/{origin}",
            accounts.remove_origin,
            "Remove an allowed callback origin",
            "callback origins",
            status=204,
            errors=(404,),
        ),
        Route(
            "POST",
            acct + "/portal-sessions",
            portal.create_portal_session,
            "A one-time link into the customer portal for this account (portal.enabled)",
            "portal",
            status=201,
            response=PortalSessionOut,
            errors=(404, 409),
        ),
        Route(
            "POST",
            "/admin/v1/keys",
            keys.create_key,
            "Create a key (plaintext returned once)",
            "keys",
            body=KeyCreate,
            status=201,
            response=KeyCreated,
            errors=(400, 404, 409),
        ),
        Route(
            "GET",
            "/admin/v1/keys",
            keys.list_keys,
            "List keys",
            "keys",
            response=KeyList,
            query=keys.LIST_PARAMS,
            errors=(400,),
        ),
        Route("GET", key, keys.get_key, "Read a key", "keys", response=KeyOut, errors=(404,)),
        Route(
            "PATCH",
            key,
            keys.update_key,
            "Change a key's name, description or webhook settings",
            "keys",
            body=KeyUpdate,
            response=KeyOut,
            errors=(400, 404),
        ),
        Route("DELETE", key, keys.delete_key, "Delete a key", "keys", status=204, errors=(404,)),
        Route(
            "POST",
            key + "/regenerate",
            keys.regenerate_key,
            "New secret for the same key; the old one stops working at once",
            "keys",
            response=KeyCreated,
            errors=(404, 409),
        ),
        Route(
            "POST",
            key + "/signing-secret/rotate",
            keys.rotate_signing_secret,
            "New signing secret, shown once; the old one keeps signing for "
            "webhooks.rotation_overlap_seconds",
            "keys",
            response=SigningSecretRotated,
            errors=(404,),
        ),
        Route(
            "POST",
            key + "/revoke",
            keys.revoke_key,
            "Revoke a key",
            "keys",
            response=KeyOut,
            errors=(404,),
        ),
        Route(
            "POST",
            "/admin/v1/events",
            webhooks.publish_event,
            "Raise an event for the keys of an account (or one key) that listen for it",
            "webhooks",
            body=EventCreate,
            status=202,
            response=EventAccepted,
            errors=(400, 404),
        ),
        Route(
            "GET",
            "/admin/v1/webhook-deliveries",
            webhooks.list_deliveries,
            "Webhook deliveries, newest first, with their attempts",
            "webhooks",
            response=DeliveryList,
            query=webhooks.LIST_PARAMS,
            errors=(400,),
        ),
        Route(
            "POST",
            "/admin/v1/webhook-deliveries/{delivery_id}/retry",
            webhooks.retry_delivery,
            "Queue a delivery again now (the same webhook-id)",
            "webhooks",
            status=202,
            response=DeliveryOut,
            errors=(404,),
        ),
        Route(
            "GET",
            "/admin/v1/audit",
            audit.list_audit,
            "The audit trail, newest first",
            "audit",
            response=AuditList,
            query=audit.LIST_PARAMS,
            errors=(400,),
        ),
    )
