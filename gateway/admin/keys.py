"""The key API's handlers: mint, list, read, rename, regenerate, revoke, delete.

One implementation behind two doors: the admin port (admin token, every key) and the data
plane's self-service endpoints (a `management:all` key, its own account and environment; see
gateway/selfservice.py). What differs is a `KeyDoor` in the app's state; the handlers, schemas,
validation, problem rendering and key rendering are the same."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel

from gateway import keyservice, signing
from gateway.admin.params import PAGING, Param, paging, parse_query
from gateway.admin.problems import json_response, parse_body, request_id
from gateway.admin.render import key_out
from gateway.admin.schemas import KeyCreate, KeyUpdate
from gateway.admin.state import SECRET_BOX, SETTINGS, STORE
from gateway.config import KeySettings, WebhookSettings
from gateway.egress import check_webhook_url
from gateway.errors import NotFoundError, ValidationError
from gateway.store.records import Actor, KeyRecord, NewKey, SigningSecret
from gateway.timeutil import now_us

LIST_PARAMS = (
    Param("account_id", "string", "Only this account's keys"),
    Param("is_test", "boolean", "true: test keys only; false: production keys only"),
    Param("status", "string", "Only keys in this status", ("active", "revoked", "expired")),
    *PAGING,
)


def admin_actor(request: web.Request) -> Actor:
    return Actor(actor="admin", ip=request.remote, request_id=request_id(request))


def check_scopes(scopes: list[str] | None, settings: KeySettings) -> tuple[str, ...]:
    """Omitted = every configured scope; otherwise each must be configured."""
    if scopes is None:
        return settings.scopes
    unknown = [s for s in scopes if s not in settings.scopes]
    if unknown:
        allowed = ", ".join(settings.scopes) or "(none configured)"
        raise ValidationError(
            [{"field": "scopes", "message": f"unknown scope {unknown[0]!r}; allowed: {allowed}"}]
        )
    return tuple(dict.fromkeys(scopes))


def build_key(body: KeyCreate, sent: set[str], settings: KeySettings) -> tuple[str, NewKey]:
    now = now_us()
    scopes = check_scopes(body.scopes, settings)
    default = keyservice.default_expiry(now, settings.default_ttl_days)
    expires_at = keyservice.resolve_expiry(body.expires_at, body.expires_in, sent, now, default)
    return keyservice.mint(
        prefix=settings.prefix,
        account_id=body.account_id,
        is_test=body.is_test,
        scopes=scopes,
        expires_at=expires_at,
        now_us=now,
        name=body.name,
        description=body.description,
        tool_pack_ids=_dedupe(body.tool_pack_ids),
        registered_user_ids=_dedupe(body.registered_user_ids),
        created_by=body.created_by,
        service_account_id=body.service_account_id,
    )


def _dedupe(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(dict.fromkeys(values))


WEBHOOK_FIELDS = ("webhook_url", "webhook_events", "webhook_enabled")


async def webhook_settings(
    body: Any, sent: set[str], settings: WebhookSettings, current: KeyRecord | None = None
) -> dict[str, Any]:
    """The webhook fields a create (`current` None) or an update sets, validated: the URL by
    the egress rules (gateway/egress.py), events deduplicated, `webhook_enabled` true by
    default once there is a URL."""
    out: dict[str, Any] = {}
    url = current.webhook_url if current is not None else None
    if "webhook_url" in sent:
        url = body.webhook_url
        if url is not None:
            await check_webhook_url(url, settings)
        out["webhook_url"] = url
        if "webhook_enabled" not in sent and (
            url is None or current is None or current.webhook_url is None
        ):
            # On by default for a new endpoint; a changed URL keeps the switch as it was.
            out["webhook_enabled"] = url is not None
    events = current.webhook_events if current is not None else None
    if "webhook_events" in sent and body.webhook_events is not None:
        events = tuple(dict.fromkeys(body.webhook_events))
        out["webhook_events"] = events
    elif url is not None and events is None:
        out["webhook_events"] = ("*",)  # a URL without a list hears everything
    if "webhook_enabled" in sent and body.webhook_enabled is not None:
        if body.webhook_enabled and url is None:
            raise ValidationError([{"field": "webhook_enabled", "message": "needs a webhook_url"}])
        out["webhook_enabled"] = body.webhook_enabled
    return out


def with_signing_secret(request: web.Request, new: NewKey) -> tuple[str, NewKey]:
    """A new key's signing secret: the plaintext (answered once) and the key sealed with it."""
    secret = signing.new_signing_secret()
    sealed = request.app[SECRET_BOX].seal(secret, new.id)
    return secret, replace(
        new, signing_secret=sealed, signing_secret_prefix=signing.display_prefix(secret)
    )


def next_signing_secret(request: web.Request, key_id: str) -> tuple[str, SigningSecret]:
    settings = request.app[SETTINGS].current.webhooks
    secret = signing.new_signing_secret()
    return secret, SigningSecret(
        sealed=request.app[SECRET_BOX].seal(secret, key_id),
        prefix=signing.display_prefix(secret),
        previous_until=now_us() + int(settings.rotation_overlap_seconds * 1_000_000),
    )


class KeyDoor(Protocol):
    """What differs between the two doors of the key API: who acts, which keys are visible,
    which may be changed, and how a new key is shaped. Everything else is one implementation."""

    @property
    def create_model(self) -> type[BaseModel]: ...

    @property
    def list_params(self) -> tuple[Param, ...]: ...

    def actor(self, request: web.Request) -> Actor: ...

    def confine(self, request: web.Request, query: dict[str, object]) -> dict[str, Any]: ...

    async def find(self, request: web.Request, *, changing: bool) -> KeyRecord: ...

    def mint(self, request: web.Request, body: Any, sent: set[str]) -> tuple[str, NewKey]: ...


class AdminDoor:
    """The admin port: every key of every account, acting as `admin`."""

    create_model = KeyCreate
    list_params = LIST_PARAMS

    def actor(self, request: web.Request) -> Actor:
        return admin_actor(request)

    def confine(self, request: web.Request, query: dict[str, object]) -> dict[str, Any]:
        is_test = query.get("is_test")
        return {
            "account_id": query.get("account_id"),
            "is_test": is_test if isinstance(is_test, bool) else None,
        }

    async def find(self, request: web.Request, *, changing: bool) -> KeyRecord:
        record = await request.app[STORE].get_key(request.match_info["key_id"])
        if record is None:
            raise NotFoundError("Key not found", title="Key not found")
        return record

    def mint(self, request: web.Request, body: Any, sent: set[str]) -> tuple[str, NewKey]:
        return build_key(body, sent, request.app[SETTINGS].current.keys)


DOOR: web.AppKey[KeyDoor] = web.AppKey("key_door")


async def create_key(request: web.Request) -> web.Response:
    door = request.app[DOOR]
    settings = request.app[SETTINGS].current
    body, sent = await parse_body(request, door.create_model)
    secret, new = door.mint(request, body, sent)
    new = replace(new, **await webhook_settings(body, sent, settings.webhooks))
    signing_secret, new = with_signing_secret(request, new)
    record = await request.app[STORE].create_key(
        new,
        door.actor(request),
        max_production_keys=settings.keys.max_production_keys_per_account,
    )
    return json_response(key_out(record, now_us(), secret, signing_secret), status=201)


async def list_keys(request: web.Request) -> web.Response:
    door = request.app[DOOR]
    query = parse_query(request, door.list_params)
    limit, cursor = paging(query)
    items, nxt = await request.app[STORE].list_keys(
        limit=limit,
        cursor=cursor,
        status=query.get("status"),  # type: ignore[arg-type]
        **door.confine(request, query),
    )
    now = now_us()
    return json_response({"data": [key_out(k, now) for k in items], "next_cursor": nxt})


async def get_key(request: web.Request) -> web.Response:
    record = await request.app[DOOR].find(request, changing=False)
    return json_response(key_out(record, now_us()))


async def update_key(request: web.Request) -> web.Response:
    door = request.app[DOOR]
    body, sent = await parse_body(request, KeyUpdate)  # a null name is refused by the schema
    current = await door.find(request, changing=True)
    changes: dict[str, Any] = {
        field: getattr(body, field) for field in ("name", "description") if field in sent
    }
    webhooks = request.app[SETTINGS].current.webhooks
    changes.update(await webhook_settings(body, sent, webhooks, current))
    record = await request.app[STORE].update_key(current.id, changes, door.actor(request))
    return json_response(key_out(record, now_us()))


async def regenerate_key(request: web.Request) -> web.Response:
    door = request.app[DOOR]
    current = await door.find(request, changing=True)
    prefix_setting = request.app[SETTINGS].current.keys.prefix
    secret, digest, prefix, last4 = keyservice.new_secret(prefix_setting, current.is_test)
    signing_secret, sealed = next_signing_secret(request, current.id)
    record = await request.app[STORE].regenerate_key(
        current.id, digest, prefix, last4, door.actor(request), sealed
    )
    return json_response(key_out(record, now_us(), secret, signing_secret))


async def rotate_signing_secret(request: web.Request) -> web.Response:
    door = request.app[DOOR]
    current = await door.find(request, changing=True)
    signing_secret, sealed = next_signing_secret(request, current.id)
    record = await request.app[STORE].rotate_signing_secret(current.id, sealed, door.actor(request))
    return json_response(key_out(record, now_us(), signing_secret=signing_secret))


async def revoke_key(request: web.Request) -> web.Response:
    door = request.app[DOOR]
    target = await door.find(request, changing=True)
    record = await request.app[STORE].revoke_key(target.id, door.actor(request))
    return json_response(key_out(record, now_us()))


async def delete_key(request: web.Request) -> web.Response:
    await request.app[STORE].delete_key(request.match_info["key_id"], admin_actor(request))
    return web.Response(status=204)
