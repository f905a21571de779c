"""Self-service keys on the data plane (contract section 4): `/api/v1/access-keys/...` for keys
holding `management:all`, confined to the caller's account and environment.

The second door of the key API: the handlers are the admin API's own (gateway/admin/keys.py),
served by an aiohttp `Application` with the same problem middleware and documented by the same
OpenAPI generator; `SelfServiceDoor` says what differs. The data plane authenticates the key,
checks the scope and reads the (small) body with its own limits, then hands the request to
that application.

A key minted here must fit inside the key that asked for it (scopes, tool packs, registered
users, expiry; null = unrestricted only under an unrestricted parent) and records it as
`parent_key_id`. The caller may read every key of its account and environment, but regenerate
or revoke only itself and the keys minted under it: a leaked management key can never take over
(or lock out) a key it did not make, and revoking it revokes everything it made, in the same
transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from gateway import keyservice
from gateway.admin import keys
from gateway.admin.openapi import ApiInfo, build_openapi
from gateway.admin.params import PAGING, Param
from gateway.admin.problems import API_NAME, REQUEST_ID, problems_middleware, request_id
from gateway.admin.routes import BAD_QUERY, KEY_UPDATE_INVALID, NOT_REGENERATED, Route
from gateway.admin.schemas import ChildKeyCreate, KeyCreated, KeyList, KeyOut, KeyUpdate
from gateway.admin.state import SECRET_BOX, SETTINGS, STORE, SettingsRef
from gateway.config import Settings
from gateway.errors import NotFoundError, ProblemError, ValidationError
from gateway.fleet import PROPAGATION, Barrier, propagation_middleware
from gateway.http.exchange import Exchange
from gateway.http.protocol import PlaneRequest
from gateway.index import NEVER, KeyEntry
from gateway.signing import SecretBox
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore, Presence
from gateway.store.records import Actor, KeyRecord, NewKey
from gateway.timeutil import now_us

log = logging.getLogger("gateway.selfservice")
PREFIX = (b"api", b"v1", b"access-keys")
MANAGEMENT_SCOPE = "management:all"
BODY_LIMIT = 64 * 1024
MAX_LINEAGE = 64  # parent links followed when checking that a key descends from the caller
CALLER: web.RequestKey[KeyEntry] = web.RequestKey("caller", KeyEntry)
PEER: web.RequestKey[str] = web.RequestKey("peer", str)


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


class SelfServiceDoor:
    """The data plane's door: the caller's account and environment only; changes only to the
    caller and the keys minted under it; new keys never wider than the caller."""

    create_model = ChildKeyCreate
    list_params: tuple[Param, ...] = (
        Param("status", "string", "Only keys in this status", ("active", "revoked", "expired")),
        *PAGING,
    )

    def actor(self, request: web.Request) -> Actor:
        return Actor(
            actor=f"key:{request[CALLER].id}",
            ip=request.get(PEER) or None,
            request_id=request_id(request),
        )

    def confine(self, request: web.Request, query: dict[str, object]) -> dict[str, Any]:
        caller = request[CALLER]
        return {"account_id": caller.account.id, "is_test": caller.is_test}

    async def find(self, request: web.Request, *, changing: bool) -> KeyRecord:
        caller = request[CALLER]
        store = request.app[STORE]
        target = await store.get_key(request.match_info["key_id"])
        if (
            target is None
            or target.account_id != caller.account.id
            or target.is_test != caller.is_test
        ):
            raise NotFoundError("Key not found", title="Key not found")  # other worlds do not exist
        if not changing:
            return target
        record: KeyRecord | None = target
        for _ in range(MAX_LINEAGE):
            if record is None:
                break
            if record.id == caller.id:
                return target
            record = await store.get_key(record.parent_key_id) if record.parent_key_id else None
        raise ProblemError(
            "A management key may change, regenerate or revoke only itself and the keys minted "
            "under it.",
            status=403,
            title="Insufficient scope",
            type="urn:gateway:problem:insufficient-scope",
        )

    def mint(self, request: web.Request, body: Any, sent: set[str]) -> tuple[str, NewKey]:
        caller = request[CALLER]
        settings = request.app[SETTINGS].current
        now = now_us()
        limits = child_key_limits(body, sent, caller, settings, now)
        return keyservice.mint(
            prefix=settings.keys.prefix,
            account_id=caller.account.id,
            is_test=caller.is_test,
            now_us=now,
            name=body.name,
            description=body.description,
            created_by=f"key:{caller.id}",
            service_account_id=body.service_account_id,
            parent_key_id=caller.id,
            **limits,
        )


def routes() -> tuple[Route, ...]:
    """The self-service API as documented (with the trailing slash; it is optional)."""
    base = "/api/v1/access-keys/"
    key = base + "{key_id}/"
    scope = "The calling key lacks the scope management:all"
    changing = scope + ", or it neither is this key nor minted it (directly or not)"
    missing = "No key has this `key_id` in the caller's account and environment"
    # The data plane fails closed: past store.max_staleness without the store, keyed requests
    # are refused (with Retry-After) before they reach these handlers.
    stale = (
        ", or this gateway has been out of contact with the store for longer than"
        " store.max_staleness (with Retry-After)"
    )
    read_failed = "The store could not be read" + stale
    write_failed = "The store is unavailable (nothing was changed)" + stale
    return (
        Route(
            "GET",
            base,
            keys.list_keys,
            "List the keys of the caller's account and environment",
            "self-service",
            response=KeyList,
            query=SelfServiceDoor.list_params,
            errors={400: BAD_QUERY, 403: scope, 503: read_failed},
        ),
        Route(
            "POST",
            base,
            keys.create_key,
            "Mint a key under the caller, never wider than it (plaintext returned once)",
            "self-service",
            body=ChildKeyCreate,
            status=201,
            response=KeyCreated,
            errors={
                400: "The body is invalid (see `errors`): e.g. scopes or lists wider than the"
                " caller's, an expiry after the caller's, a refused `webhook_url`",
                403: scope,
                409: "The caller stopped being active meanwhile, or a production key would"
                " exceed keys.max_production_keys_per_account",
                503: write_failed,
            },
        ),
        Route(
            "GET",
            key,
            keys.get_key,
            "Read a key",
            "self-service",
            response=KeyOut,
            errors={403: scope, 404: missing, 503: read_failed},
        ),
        Route(
            "PATCH",
            key,
            keys.update_key,
            "Change a key's name, description or webhook settings",
            "self-service",
            body=KeyUpdate,
            response=KeyOut,
            errors={
                400: KEY_UPDATE_INVALID,
                403: changing,
                404: missing,
                503: write_failed,
            },
        ),
        Route(
            "POST",
            key + "regenerate/",
            keys.regenerate_key,
            "New secret for the same key; the old one stops working at once",
            "self-service",
            response=KeyCreated,
            errors={
                403: changing,
                404: missing,
                409: NOT_REGENERATED,
                503: write_failed,
            },
        ),
        Route(
            "POST",
            key + "revoke/",
            keys.revoke_key,
            "Revoke a key and every key minted under it (idempotent)",
            "self-service",
            response=KeyOut,
            errors={403: changing, 404: missing, 503: write_failed},
        ),
    )


INFO = ApiInfo(
    title="Gateway self-service key API",
    description="Served on the data plane for keys with the scope management:all, confined to "
    "the calling key's account and environment. Errors are application/problem+json "
    "(RFC 9457). A trailing slash is optional on every path.",
    scheme="managementKey",
    unauthorized="Missing, malformed, unknown, revoked or expired key",
    body_limit="Body larger than 64 KiB",
)


def openapi() -> dict[str, Any]:
    return build_openapi(routes(), INFO)


def create_selfservice_app(settings: Settings, store: Store, box: SecretBox) -> web.Application:
    middlewares: list[Any] = [problems_middleware]
    if isinstance(store, PostgresStore):  # fleet: as on the admin port, wait for the others
        middlewares.insert(0, propagation_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=BODY_LIMIT)
    if isinstance(store, PostgresStore):
        app[PROPAGATION] = Barrier(Presence(store), settings.store)
    app[SETTINGS] = SettingsRef(settings)
    app[STORE] = store
    app[SECRET_BOX] = box
    door: keys.KeyDoor = SelfServiceDoor()
    app[keys.DOOR] = door
    app[API_NAME] = "self-service"
    for route in routes():
        for path in (route.path, route.path.rstrip("/")):
            app.router.add_route(route.method, path, route.handler)
    app.freeze()
    return app


class SelfService:
    """The data plane's side of the door: scope check, body, hand-over, answer."""

    def __init__(self, settings: Settings, store: Store, box: SecretBox) -> None:
        self.app = create_selfservice_app(settings, store, box)

    @staticmethod
    def handles(segments: list[bytes]) -> bool:
        return tuple(segments[:3]) == PREFIX

    def reload(self, settings: Settings) -> None:
        self.app[SETTINGS].current = settings

    async def answer(self, ex: Exchange, caller: KeyEntry) -> None:
        """Answer (through `ex.respond`) one self-service request."""
        if MANAGEMENT_SCOPE not in caller.scopes:
            insufficient_scope(ex, [MANAGEMENT_SCOPE])
            return
        body = await ex.read_body(BODY_LIMIT)  # the data plane's limits, 408 and 100-continue
        if body is None:
            return
        original = ex.request
        assert isinstance(original, PlaneRequest)
        if "Expect" in original.headers:
            # Answered by `read_body` already: aiohttp's dispatch must not answer it again.
            kept = CIMultiDict(original.headers)
            kept.popall("Expect")
            request = original.clone(headers=kept, client_max_size=BODY_LIMIT)
        else:
            request = original.clone(client_max_size=BODY_LIMIT)
        request.door_body = body
        request[REQUEST_ID] = ex.request_id.decode("latin-1")
        request[CALLER] = caller
        request[PEER] = ex.conn.peer
        # aiohttp's own dispatch (router, middlewares) for an application that is not served
        # by a runner of its own: the one private entry point this module relies on.
        response = await self.app._handle(request)
        if not isinstance(response, web.Response) or not isinstance(response.body, bytes | None):
            log.error("self-service handler answered %r, not a complete response", response)
            ex.respond_problem(500, "Internal error.", None)
            return
        headers = CIMultiDict(response.headers)
        for name in ("Content-Length", "X-Request-Id", "Server", "Date"):
            headers.popall(name, None)
        ex.respond(
            response.status,
            [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            response.body or b"",
        )
