"""Admin handlers for keys: mint with the full validation of contract section 5."""

from __future__ import annotations

from aiohttp import web

from gateway import keyservice
from gateway.admin.problems import json_response, parse_body, request_id
from gateway.admin.render import key_out
from gateway.admin.schemas import KeyCreate
from gateway.admin.state import SETTINGS, STORE
from gateway.config import KeySettings
from gateway.errors import ValidationError
from gateway.store.records import Actor, NewKey
from gateway.timeutil import now_us, parse_rfc3339


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


def resolve_expiry(body: KeyCreate, sent: set[str], now: int, ttl_days: int) -> int | None:
    if "expires_at" in sent and "expires_in" in sent:
        raise ValidationError(
            [{"field": "expires_in", "message": "give expires_at or expires_in, not both"}]
        )
    if body.expires_in is not None:
        return now + body.expires_in * 1_000_000
    if "expires_at" in sent:
        if body.expires_at is None:
            return None  # explicitly never
        at = parse_rfc3339(body.expires_at)
        if at <= now:
            raise ValidationError([{"field": "expires_at", "message": "must be in the future"}])
        return at
    return keyservice.default_expiry(now, ttl_days)


def build_key(body: KeyCreate, sent: set[str], settings: KeySettings) -> tuple[str, NewKey]:
    now = now_us()
    scopes = check_scopes(body.scopes, settings)
    expires_at = resolve_expiry(body, sent, now, settings.default_ttl_days)
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


async def create_key(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS].keys
    body, sent = await parse_body(request, KeyCreate)
    secret, new = build_key(body, sent, settings)
    record = await request.app[STORE].create_key(
        new, admin_actor(request), max_production_keys=settings.max_production_keys_per_account
    )
    return json_response(key_out(record, now_us(), secret), status=201)
