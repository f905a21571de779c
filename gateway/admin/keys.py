"""The key API's handlers: mint, list, read, rename, regenerate, revoke, delete.

One implementation behind two doors: the admin port (admin token, every key) and the data
plane's self-service endpoints (a `management:all` key, its own account and environment; see
gateway/selfservice.py). What differs is a `KeyDoor` in the app's state; the handlers, schemas,
validation, problem rendering and key rendering are the same."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel

from gateway import keyservice
from gateway.admin.params import PAGING, Param, paging, parse_query
from gateway.admin.problems import json_response, parse_body, request_id
from gateway.admin.render import key_out
from gateway.admin.schemas import KeyCreate, KeyUpdate
from gateway.admin.state import SETTINGS, STORE
from gateway.config import KeySettings
from gateway.errors import NotFoundError, ValidationError
from gateway.store.records import Actor, KeyRecord, NewKey
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
    settings = request.app[SETTINGS].current.keys
    body, sent = await parse_body(request, door.create_model)
    secret, new = door.mint(request, body, sent)
    record = await request.app[STORE].create_key(
        new, door.actor(request), max_production_keys=settings.max_production_keys_per_account
    )
    return json_response(key_out(record, now_us(), secret), status=201)


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
    body, sent = await parse_body(request, KeyUpdate)  # a null name is refused by the schema
    changes: dict[str, str | None] = {
        field: getattr(body, field) for field in ("name", "description") if field in sent
    }
    record = await request.app[STORE].update_key(
        request.match_info["key_id"], changes, admin_actor(request)
    )
    return json_response(key_out(record, now_us()))


async def regenerate_key(request: web.Request) -> web.Response:
    door = request.app[DOOR]
    current = await door.find(request, changing=True)
    prefix_setting = request.app[SETTINGS].current.keys.prefix
    secret, digest, prefix, last4 = keyservice.new_secret(prefix_setting, current.is_test)
    record = await request.app[STORE].regenerate_key(
        current.id, digest, prefix, last4, door.actor(request)
    )
    return json_response(key_out(record, now_us(), secret))


async def revoke_key(request: web.Request) -> web.Response:
    door = request.app[DOOR]
    target = await door.find(request, changing=True)
    record = await request.app[STORE].revoke_key(target.id, door.actor(request))
    return json_response(key_out(record, now_us()))


async def delete_key(request: web.Request) -> web.Response:
    await request.app[STORE].delete_key(request.match_info["key_id"], admin_actor(request))
    return web.Response(status=204)
