"""The admin API's route table: registered on the app and documented in OpenAPI from this one
list, so no route can exist undocumented or be documented without existing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

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
    # Each error status the handler can answer, with what it means on this route (401, and
    # 413 and 415 on routes with a body, are added by the document's builder).
    errors: Mapping[int, str] = field(default_factory=dict)
    media_type: str = "application/json"
    public: bool = False
    # A write that may log an account, key or origin change, so that with PostgreSQL its answer
    # waits for the fleet and carries X-Gateway-Propagation (gateway/fleet.py). GETs never do.
    propagates: bool = True


async def healthz(request: web.Request) -> web.Response:
    from gateway.admin.problems import json_response

    return json_response({"status": "ok"})


# What a 503 means: the store failed. A read changed nothing; a write is rolled back whole.
READ_FAILED = "The store could not be read; try again later"
WRITE_FAILED = "The store is unavailable; nothing was changed, try again later"
BAD_QUERY = (
    "A query parameter is unknown, repeated or invalid, or `cursor` is not one this list"
    " gave (see `errors`)"
)
NO_ACCOUNT = "No account has this `account_id`"
NO_KEY = "No key has this `key_id`"
KEY_NOT_ACTIVE = "The key is revoked or expired"
NOT_REGENERATED = KEY_NOT_ACTIVE + ": only an active key can be regenerated"
KEY_UPDATE_INVALID = (
    "The body is invalid (see `errors`): e.g. a null or over-long `name`, a refused"
    " `webhook_url`, `webhook_enabled` true without a `webhook_url`"
)


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
            errors={
                400: "The body is invalid (see `errors`): `name` missing, empty or over 255"
                " characters, an `id` not matching its pattern, an unknown field",
                409: "An account with this `id` already exists",
                503: WRITE_FAILED,
            },
        ),
        Route(
            "GET",
            "/admin/v1/accounts",
            accounts.list_accounts,
            "List accounts",
            "accounts",
            response=AccountList,
            query=accounts.LIST_PARAMS,
            errors={400: BAD_QUERY, 503: READ_FAILED},
        ),
        Route(
            "GET",
            acct,
            accounts.get_account,
            "Read an account",
            "accounts",
            response=AccountOut,
            errors={404: NO_ACCOUNT, 503: READ_FAILED},
        ),
        Route(
            "PATCH",
            acct,
            accounts.update_account,
            "Rename, deactivate or reactivate an account",
            "accounts",
            body=AccountUpdate,
            response=AccountOut,
            errors={
                400: "The body is invalid (see `errors`): an empty, null or over-long `name`, a"
                " `status` other than active or deactivated, an unknown field",
                404: NO_ACCOUNT,
                503: WRITE_FAILED,
            },
        ),
        Route(
            "GET",
            acct + "/callback-origins",
            accounts.list_origins,
            "List allowed callback origins",
            "callback origins",
            response=OriginList,
            query=PAGING,
            errors={400: BAD_QUERY, 404: NO_ACCOUNT, 503: READ_FAILED},
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
            errors={
                400: "`origin` is not a host with an optional port, e.g. app.example.com or"
                " localhost:3000 (see `errors`)",
                404: NO_ACCOUNT,
                409: "The origin is already on this account's allow-list",
                503: WRITE_FAILED,
            },
        ),
        Route(
            "DELETE",
            acct + "/callback-origins/{origin}",
            accounts.remove_origin,
            "Remove an allowed callback origin",
            "callback origins",
            status=204,
            errors={
                404: NO_ACCOUNT + ", or the origin is not on its allow-list",
                503: WRITE_FAILED,
            },
        ),
        Route(
            "POST",
            acct + "/portal-sessions",
            portal.create_portal_session,
            "A one-time link into the customer portal for this account (portal.enabled)",
            "portal",
            status=201,
            response=PortalSessionOut,
            propagates=False,
            errors={
                404: NO_ACCOUNT,
                409: "The portal is not enabled (portal.enabled = false), or the account is"
                " deactivated",
                503: WRITE_FAILED,
            },
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
            errors={
                400: "The body is invalid (see `errors`): e.g. a scope not in keys.scopes,"
                " `expires_at` in the past or given with `expires_in`, a refused `webhook_url`",
                404: NO_ACCOUNT,
                409: "A production key would exceed keys.max_production_keys_per_account active"
                " production keys for this account",
                503: WRITE_FAILED,
            },
        ),
        Route(
            "GET",
            "/admin/v1/keys",
            keys.list_keys,
            "List keys",
            "keys",
            response=KeyList,
            query=keys.LIST_PARAMS,
            errors={400: BAD_QUERY, 503: READ_FAILED},
        ),
        Route(
            "GET",
            key,
            keys.get_key,
            "Read a key",
            "keys",
            response=KeyOut,
            errors={404: NO_KEY, 503: READ_FAILED},
        ),
        Route(
            "PATCH",
            key,
            keys.update_key,
            "Change a key's name, description or webhook settings",
            "keys",
            body=KeyUpdate,
            response=KeyOut,
            errors={
                400: KEY_UPDATE_INVALID,
                404: NO_KEY,
                503: WRITE_FAILED,
            },
        ),
        Route(
            "DELETE",
            key,
            keys.delete_key,
            "Delete a key",
            "keys",
            status=204,
            errors={404: NO_KEY, 503: WRITE_FAILED},
        ),
        Route(
            "POST",
            key + "/regenerate",
            keys.regenerate_key,
            "New secret for the same key; the old one stops working at once",
            "keys",
            response=KeyCreated,
            errors={
                404: NO_KEY,
                409: NOT_REGENERATED,
                503: WRITE_FAILED,
            },
        ),
        Route(
            "POST",
            key + "/signing-secret/rotate",
            keys.rotate_signing_secret,
            "New signing secret, shown once; the old one keeps signing for "
            "webhooks.rotation_overlap_seconds",
            "keys",
            response=SigningSecretRotated,
            propagates=False,
            errors={
                404: NO_KEY,
                409: KEY_NOT_ACTIVE + ": only an active key's signing secret can be rotated",
                503: WRITE_FAILED,
            },
        ),
        Route(
            "POST",
            key + "/revoke",
            keys.revoke_key,
            "Revoke a key (idempotent: a revoked key is answered unchanged)",
            "keys",
            response=KeyOut,
            errors={404: NO_KEY, 503: WRITE_FAILED},
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
            propagates=False,
            errors={
                400: "The body is invalid (see `errors`): neither or both of `account_id` and"
                " `key_id`, a key.* `type`, `data` naming account_id, key_id or environment or"
                " over 64 KiB, an `environment` other than the key's",
                404: "No account has this `account_id`, or no key this `key_id`",
                503: WRITE_FAILED,
            },
        ),
        Route(
            "GET",
            "/admin/v1/webhook-deliveries",
            webhooks.list_deliveries,
            "Webhook deliveries, newest first, with their attempts",
            "webhooks",
            response=DeliveryList,
            query=webhooks.LIST_PARAMS,
            errors={400: BAD_QUERY, 503: READ_FAILED},
        ),
        Route(
            "POST",
            "/admin/v1/webhook-deliveries/{delivery_id}/retry",
            webhooks.retry_delivery,
            "Queue a delivery again now (the same webhook-id)",
            "webhooks",
            status=202,
            response=DeliveryOut,
            propagates=False,
            errors={
                404: "No delivery has this `delivery_id`",
                409: "An attempt of this delivery is in flight; retry once it has finished",
                503: WRITE_FAILED,
            },
        ),
        Route(
            "GET",
            "/admin/v1/audit",
            audit.list_audit,
            "The audit trail, newest first",
            "audit",
            response=AuditList,
            query=audit.LIST_PARAMS,
            errors={400: BAD_QUERY, 503: READ_FAILED},
        ),
    )
