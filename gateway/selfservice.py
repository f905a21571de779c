"""Self-service keys on the data plane (contract section 4): `/api/v1/access-keys/...` for keys
holding `management:all`, confined to the caller's account and environment.

A key minted here must fit inside the key that asked for it (scopes, tool packs, registered
users, expiry; null = unrestricted only under an unrestricted parent) and records it as
`parent_key_id`. The caller may read every key of its account and environment, but regenerate
or revoke only itself and the keys minted under it: a leaked management key can never take over
(or lock out) a key it did not make, and revoking it revokes everything it made, in the same
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from gateway import keyservice
from gateway.admin.problems import validate_json
from gateway.admin.render import key_out
from gateway.admin.schemas import ChildKeyCreate
from gateway.config import Settings
from gateway.errors import NotFoundError, ProblemError, StoreError, ValidationError
from gateway.http.exchange import Exchange
from gateway.http.protocol import problem_body
from gateway.index import NEVER, KeyEntry
from gateway.store.base import Store
from gateway.store.records import Actor, KeyRecord
from gateway.timeutil import now_us

log = logging.getLogger("gateway.selfservice")

PREFIX = (b"api", b"v1", b"access-keys")
MANAGEMENT_SCOPE = "management:all"
BODY_LIMIT = 64 * 1024
MAX_LINEAGE = 64  # parent links followed when checking that a key descends from the caller
JSON = [(b"Content-Type", b"application/json")]


def insufficient_scope(ex: Exchange, scopes: tuple[str, ...] | list[str]) -> None:
    needed = " or ".join(scopes)
    ex.reason = "insufficient_scope"
    ex.respond_problem(
        403,
        f"This key lacks the scope this endpoint requires: {needed}.",
        "Insufficient scope",
        {"type": "urn:gateway:problem:insufficient-scope", "required_scopes": list(scopes)},
    )


def _subset_error(
    field: str,
    child: tuple[str, ...] | None,
    parent: tuple[str, ...] | None,
) -> dict[str, str] | None:
    if parent is None:
        return None
    if child is None:
        return {
            "field": field,
            "message": "cannot be unrestricted (null) under a restricted parent",
        }
    extra = [v for v in child if v not in parent]
    if extra:
        return {"field": field, "message": f"{extra[0]!r} is not in the parent key's {field}"}
    return None


def child_key_limits(
    body: ChildKeyCreate, sent: set[str], parent: KeyEntry, settings: Settings, now: int
) -> dict[str, Any]:
    """The child's scopes, lists and expiry: inherited when omitted, else a subset of the
    parent's. Raises ValidationError naming the offending field."""
    errors: list[dict[str, str]] = []
    scopes = parent.scopes if body.scopes is None else tuple(dict.fromkeys(body.scopes))
    if "scopes" in sent and body.scopes is None:
        errors.append({"field": "scopes", "message": "must be a list (omit it to inherit)"})
    elif (err := _subset_error("scopes", scopes, parent.scopes)) is not None:
        errors.append(err)
    lists: dict[str, tuple[str, ...] | None] = {}
    for field in ("tool_pack_ids", "registered_user_ids"):
        inherited: tuple[str, ...] | None = getattr(parent, field)
        if field in sent:
            given = getattr(body, field)
            value = None if given is None else tuple(dict.fromkeys(given))
        else:
            value = inherited
        if (err := _subset_error(field, value, inherited)) is not None:
            errors.append(err)
        lists[field] = value
    parent_expiry = None if parent.expires_at == NEVER else int(parent.expires_at * 1_000_000)
    default = keyservice.default_expiry(now, settings.keys.default_ttl_days)
    if parent_expiry is not None and (default is None or default > parent_expiry):
        default = parent_expiry
    expires_at = keyservice.resolve_expiry(body.expires_at, body.expires_in, sent, now, default)
    if parent_expiry is not None and (expires_at is None or expires_at > parent_expiry):
        field = "expires_in" if "expires_in" in sent else "expires_at"
        errors.append({"field": field, "message": "must not be later than the parent key's expiry"})
    if errors:
        raise ValidationError(errors)
    return {"scopes": scopes, "expires_at": expires_at, **lists}


class SelfService:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    @staticmethod
    def handles(segments: list[bytes]) -> bool:
        return tuple(segments[:3]) == PREFIX

    async def handle(self, ex: Exchange, caller: KeyEntry, segments: list[bytes]) -> None:
        """Answer (through `ex.respond`) one self-service request."""
        if MANAGEMENT_SCOPE not in caller.scopes:
            insufficient_scope(ex, [MANAGEMENT_SCOPE])
            return
        rest = segments[3:]
        method = ex.method
        op: Callable[[Exchange, KeyEntry, str, bytes], Awaitable[tuple[int, Any]]]
        allowed: bytes
        key_id = ""
        if not rest:
            allowed = b"GET, POST"
            op = self._list if method == b"GET" else self._create
            ok = method in (b"GET", b"POST")
        elif len(rest) == 1:
            allowed = b"GET"
            op, ok = self._get, method == b"GET"
            key_id = rest[0].decode("utf-8", "replace")
        elif len(rest) == 2 and rest[1] in (b"regenerate", b"revoke"):
            allowed = b"POST"
            op = self._regenerate if rest[1] == b"regenerate" else self._revoke
            ok = method == b"POST"
            key_id = rest[0].decode("utf-8", "replace")
        else:
            ex.respond_problem(404, "No self-service endpoint matches this path.", None)
            return
        if not ok:
            ex.respond(
                405,
                [(b"Content-Type", b"application/problem+json"), (b"Allow", allowed)],
                _problem_bytes(ex, 405, f"{method.decode()} is not allowed here.", None),
            )
            return

        body = await ex.read_body(BODY_LIMIT)
        if body is not None:
            await self._answer(ex, op, caller, key_id, body)

    async def _answer(
        self,
        ex: Exchange,
        op: Callable[[Exchange, KeyEntry, str, bytes], Awaitable[tuple[int, Any]]],
        caller: KeyEntry,
        key_id: str,
        body: bytes,
    ) -> None:
        try:
            status, doc = await op(ex, caller, key_id, body)
        except ProblemError as exc:
            extra: dict[str, object] = {"type": exc.type}
            if exc.errors is not None:
                extra["errors"] = exc.errors
            ex.respond_problem(exc.status, exc.detail, exc.title, extra)
            return
        except StoreError as exc:
            log.error("self-service store error: %s", exc)
            ex.respond_problem(503, "The key store is unavailable; nothing was changed.", None)
            return
        except Exception:
            log.exception("self-service request failed")
            ex.respond_problem(500, "Internal error.", None)
            return
        ex.respond(status, JSON, orjson.dumps(doc))

    # -- operations --------------------------------------------------------------------------

    def _actor(self, ex: Exchange, caller: KeyEntry) -> Actor:
        return Actor(
            actor=f"key:{caller.id}", ip=ex.conn.peer or None, request_id=ex.request_id.decode()
        )

    async def _target(self, caller: KeyEntry, key_id: str) -> KeyRecord:
        record = await self.store.get_key(key_id)
        if (
            record is None
            or record.account_id != caller.account.id
            or record.is_test != caller.is_test
        ):
            raise NotFoundError("Key not found", title="Key not found")  # other worlds do not exist
        return record

    async def _list(self, ex: Exchange, caller: KeyEntry, _: str, body: bytes) -> tuple[int, Any]:
        query = _query(ex.query, {"limit", "cursor", "status"})
        limit_text = query.get("limit", "50")
        if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= 500:
            raise ValidationError([{"field": "limit", "message": "must be between 1 and 500"}])
        status = query.get("status")
        if status is not None and status not in ("active", "revoked", "expired"):
            raise ValidationError(
                [{"field": "status", "message": "must be active, revoked or expired"}]
            )
        items, nxt = await self.store.list_keys(
            limit=int(limit_text),
            cursor=query.get("cursor"),
            account_id=caller.account.id,
            is_test=caller.is_test,
            status=status,
        )
        now = now_us()
        return 200, {"data": [key_out(k, now) for k in items], "next_cursor": nxt}

    async def _get(
        self, ex: Exchange, caller: KeyEntry, key_id: str, body: bytes
    ) -> tuple[int, Any]:
        return 200, key_out(await self._target(caller, key_id), now_us())

    async def _create(self, ex: Exchange, caller: KeyEntry, _: str, body: bytes) -> tuple[int, Any]:
        parsed, sent = validate_json(body, ChildKeyCreate)
        now = now_us()
        limits = child_key_limits(parsed, sent, caller, self.settings, now)
        keys = self.settings.keys
        secret, new = keyservice.mint(
            prefix=keys.prefix,
            account_id=caller.account.id,
            is_test=caller.is_test,
            now_us=now,
            name=parsed.name,
            description=parsed.description,
            created_by=f"key:{caller.id}",
            service_account_id=parsed.service_account_id,
            parent_key_id=caller.id,
            **limits,
        )
        record = await self.store.create_key(
            new, self._actor(ex, caller), max_production_keys=keys.max_production_keys_per_account
        )
        return 201, key_out(record, now_us(), secret)

    async def _checked_target(self, caller: KeyEntry, key_id: str) -> KeyRecord:
        """A key the caller may regenerate or revoke: itself or one minted under it."""
        target = await self._target(caller, key_id)
        record: KeyRecord | None = target
        for _ in range(MAX_LINEAGE):
            if record is None:
                break
            if record.id == caller.id:
                return target
            record = (
                await self.store.get_key(record.parent_key_id) if record.parent_key_id else None
            )
        raise ProblemError(
            "A management key may regenerate or revoke only itself and the keys minted under it.",
            status=403,
            title="Insufficient scope",
            type="urn:gateway:problem:insufficient-scope",
        )

    async def _regenerate(
        self, ex: Exchange, caller: KeyEntry, key_id: str, body: bytes
    ) -> tuple[int, Any]:
        target = await self._checked_target(caller, key_id)
        secret, digest, prefix, last4 = keyservice.new_secret(
            self.settings.keys.prefix, target.is_test
        )
        record = await self.store.regenerate_key(
            target.id, digest, prefix, last4, self._actor(ex, caller)
        )
        return 200, key_out(record, now_us(), secret)

    async def _revoke(
        self, ex: Exchange, caller: KeyEntry, key_id: str, body: bytes
    ) -> tuple[int, Any]:
        target = await self._checked_target(caller, key_id)
        record = await self.store.revoke_key(target.id, self._actor(ex, caller))
        return 200, key_out(record, now_us())


def _query(raw: bytes, allowed: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
        if name not in allowed:
            raise ValidationError([{"field": name, "message": "unknown query parameter"}])
        if name in out:
            raise ValidationError([{"field": name, "message": "given more than once"}])
        out[name] = value
    return out


def _problem_bytes(ex: Exchange, status: int, detail: str, title: str | None) -> bytes:
    return problem_body(status, detail, title, ex.path, ex.request_id)
