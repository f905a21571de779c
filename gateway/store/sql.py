"""The store's logic, written once for every SQL database: what each admin change writes (the
row, its audit row and its change-log row, in one transaction), what the data plane's index
reads (a snapshot, the change log after a position), pagination and the audit trail.

A dialect supplies connections and transactions (`SQLiteStore`, `PostgresStore`); statements
are written with `?` placeholders in the SQL both databases accept. Times are integer
microseconds (UTC); lists are JSON text.
"""

from __future__ import annotations

import abc
import base64
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from gateway.errors import ConflictError, NotFoundError, StoreError, ValidationError
from gateway.store.records import (
    ACTIVE,
    DEACTIVATED,
    Account,
    Actor,
    AuditEntry,
    ChangeSet,
    Delivery,
    KeyRecord,
    KeyRow,
    NewKey,
    SigningSecret,
    SnapshotSink,
    WebhookTarget,
)
from gateway.timeutil import now_us, to_rfc3339

_KEY_COLUMNS = (
    "id, account_id, name, description, key_prefix, key_last4, scopes, tool_pack_ids, "
    "registered_user_ids, is_test, expires_at, created_at, updated_at, created_by, "
    "service_account_id, parent_key_id, last_used_at, last_used_ip, last_used_user_agent, "
    "revoked_at, signing_secret_prefix, webhook_url, webhook_events, webhook_enabled"
)
# The KeyRow the index is built from, in its order.
_AUTH_KEY_COLUMNS = (
    "id, account_id, key_hash, scopes, tool_pack_ids, registered_user_ids, is_test, expires_at,"
    " revoked_at IS NOT NULL"
)
_SNAPSHOT_BATCH = 5000
# The newest change-log position, also when pruning has emptied the log.
LATEST_CHANGE = (
    "SELECT CASE WHEN m > p THEN m ELSE p END FROM (SELECT"
    " coalesce((SELECT max(seq) FROM changes), 0) AS m,"
    " coalesce((SELECT value FROM meta WHERE name = 'changes_pruned_through'), 0) AS p) AS t"
)
_ACCOUNT_COLUMNS = "id, name, status, created_at, updated_at"
# Expiry notices fan out to every listening key of an account: one transaction queues about
# this many deliveries at most, so the write lock is never held long.
MAX_QUEUED_PER_TX = 1000


def environment_of(is_test: bool) -> str:
    return "test" if is_test else "production"


def encode_cursor(*parts: int | str) -> str:
    raw = orjson.dumps(list(parts))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, shape: Sequence[type]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != len(shape)
        or not all(type(p) is t for p, t in zip(parts, shape, strict=True))
        or any(isinstance(p, int) and not -(2**63) <= p < 2**63 for p in parts)
        or any(isinstance(p, str) and "\x00" in p for p in parts)
    ):
        raise ValidationError([{"field": "cursor", "message": "invalid cursor"}])
    return parts


def _json_list(values: Iterable[str] | None) -> str | None:
    return None if values is None else orjson.dumps(list(values)).decode()


def _key_record(row: Sequence[Any]) -> KeyRecord:
    return KeyRecord(
        id=row[0],
        account_id=row[1],
        name=row[2],
        description=row[3],
        key_prefix=row[4],
        key_last4=row[5],
        scopes=tuple(orjson.loads(row[6])),
        tool_pack_ids=None if row[7] is None else tuple(orjson.loads(row[7])),
        registered_user_ids=None if row[8] is None else tuple(orjson.loads(row[8])),
        is_test=bool(row[9]),
        expires_at=row[10],
        created_at=row[11],
        updated_at=row[12],
        created_by=row[13],
        service_account_id=row[14],
        parent_key_id=row[15],
        last_used_at=row[16],
        last_used_ip=row[17],
        last_used_user_agent=row[18],
        revoked_at=row[19],
        signing_secret_prefix=row[20],
        webhook_url=row[21],
        webhook_events=None if row[22] is None else tuple(orjson.loads(row[22])),
        webhook_enabled=bool(row[23]),
    )


def _account(row: Sequence[Any]) -> Account:
    return Account(id=row[0], name=row[1], status=row[2], created_at=row[3], updated_at=row[4])


class SchemaBehind(StoreError):
    """The store's schema is older than this gateway's and migrating was not asked for."""

    def __init__(self, where: str, found: int, latest: int) -> None:
        self.found, self.latest = found, latest
        super().__init__(
            f"{where} is at schema version {found}, this gateway needs {latest}: run "
            "`gateway migrate --config FILE` (or set store.migrate_on_start = true)"
        )


def check_version(
    where: str, found: int, latest: int, migrate: str, compatible_from: int | None = None
) -> bool:
    """Whether to migrate from `found`: refuses an older schema if the caller requires the
    current one, and a newer one unless the store says code of `latest` still runs on it
    (`compatible_from`, written by the release that migrated it: expand-only migrations)."""
    if found > latest:
        if compatible_from is not None and compatible_from <= latest:
            logging.getLogger("gateway.store").warning(
                "%s has schema version %d, newer than this gateway's %d, and says gateways of"
                " schema %d and later still run on it: serving",
                where,
                found,
                latest,
                compatible_from,
            )
            return False
        raise StoreError(
            f"{where} has schema version {found}, newer than this gateway knows ({latest}):"
            " upgrade the gateway"
        )
    if found < latest and migrate == "require":
        raise SchemaBehind(where, found, latest)
    return found < latest and migrate == "apply"


# Stored in `meta` by each migration: the oldest schema whose gateway still runs on the store.
COMPATIBLE_FROM_SQL = (
    "INSERT INTO meta (name, value) VALUES ('compatible_from', ?)"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
READ_COMPATIBLE_FROM = "SELECT value FROM meta WHERE name = 'compatible_from'"


class Tx(abc.ABC):
    """An open write transaction: statements plus the audit and change-log bookkeeping."""

    def __init__(self, actor: Actor | None) -> None:
        self.actor = actor
        self.changed = False
        self.queued = 0  # webhook deliveries this transaction put in the outbox
        self.now = now_us()

    @abc.abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abc.abstractmethod
    async def one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    @abc.abstractmethod
    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    async def changed_entity(
        self, entity: str, entity_id: str, key_hash: bytes | None = None
    ) -> None:
        await self.execute(
            "INSERT INTO changes (entity, entity_id, key_hash, at) VALUES (?, ?, ?, ?)",
            (entity, entity_id, key_hash, self.now),
        )
        self.changed = True

    async def key_changing(self, key_id: str) -> None:
        """Log a key change with the digest the key has now: call before modifying it."""
        row = await self.one("SELECT key_hash FROM api_keys WHERE id = ?", (key_id,))
        await self.changed_entity("key", key_id, bytes(row[0]) if row else None)

    async def audit(
        self,
        action: str,
        *,
        account_id: str | None,
        key_id: str | None = None,
        environment: str = "production",
        details: dict[str, Any] | None = None,
    ) -> None:
        actor = self.actor or Actor(actor="system")
        await self.execute(
            "INSERT INTO audit_log (id, at, action, actor, account_id, key_id, environment, ip,"
            " request_id, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(uuid.uuid4()),
                self.now,
                action,
                actor.actor,
                account_id,
                key_id,
                environment,
                actor.ip,
                actor.request_id,
                orjson.dumps(details or {}).decode(),
            ),
        )

    async def raise_event(
        self,
        event_type: str,
        *,
        account_id: str,
        is_test: bool,
        data: dict[str, Any],
        subject: str | None = None,
        only: str | None = None,
    ) -> tuple[str, int]:
        """Queue `event_type` for every live key of the account (or `only` that key), in the
        same environment, whose webhook is enabled and lists the type (or "*"): one outbox row
        each, in this transaction, so the event exists exactly when the change does. A
        revoked or expired key hears nothing more, except news of itself (`subject`). The
        event's id and the number queued."""
        event_id = "evt_" + uuid.uuid4().hex
        account = await self.one("SELECT status FROM accounts WHERE id = ?", (account_id,))
        if account is None or account[0] != ACTIVE:  # a deactivated account's keys hear nothing
            return event_id, 0
        live = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
        sql = (
            "SELECT id, webhook_url, webhook_events FROM api_keys WHERE account_id = ?"
            " AND is_test = ? AND webhook_enabled = 1 AND webhook_url IS NOT NULL"
        )
        params: list[Any] = [account_id, int(is_test)]
        if only is not None:
            sql += " AND id = ?"
            params.append(only)
        if subject is not None:
            sql += f" AND (id = ? OR ({live}))"
            params.extend((subject, self.now))
        else:
            sql += f" AND {live}"
            params.append(self.now)
        rows = await self.all(sql, params)
        environment = environment_of(is_test)
        queued = 0
        for target_id, url, events_json in rows:
            events = orjson.loads(events_json) if events_json else ["*"]
            if "*" not in events and event_type not in events:
                continue
            body = orjson.dumps(
                {
                    "type": event_type,
                    "timestamp": to_rfc3339(self.now),
                    "data": {
                        **data,
                        "account_id": account_id,
                        "key_id": target_id,
                        "environment": environment,
                    },
                }
            ).decode()
            await self.execute(
                "INSERT INTO webhook_deliveries (id, event_id, key_id, account_id, environment,"
                " event_type, url, body, created_at, status, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                (
                    "msg_" + uuid.uuid4().hex,
                    event_id,
                    target_id,
                    account_id,
                    environment,
                    event_type,
                    url,
                    body,
                    self.now,
                    self.now,
                ),
            )
            queued += 1
        self.queued += queued
        return event_id, queued


class IndexRead(abc.ABC):
    """One read-only transaction of the data plane's index: a consistent view."""

    @abc.abstractmethod
    async def one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    @abc.abstractmethod
    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    @abc.abstractmethod
    def batches(self, sql: str, size: int) -> AsyncIterator[list[Any]]: ...


class SqlStore(abc.ABC):
    """Everything the `Store` protocol asks, over a dialect's `_write`, `_index_read`, `_one`
    and `_all`."""

    # Called after a commit that put webhook deliveries in the outbox (the sender's wake-up).
    on_queued: Callable[[], None] | None = None

    def _committed(self, tx: Tx) -> None:
        if tx.queued and self.on_queued is not None:
            self.on_queued()

    # The schema version found on opening, and the one the store is at now.
    schema_found = 0
    schema_version = 0

    @abc.abstractmethod
    async def open(self, migrate: str = "apply") -> None:
        """Connect, and with `migrate`: "apply" bring the schema up to date (safe with other
        processes doing the same); "require" refuse (SchemaBehind) a store with migrations
        pending; "skip" only read the version (`gateway store check`)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def _write(
        self, actor: Actor | None, *, ordered: bool = True
    ) -> AbstractAsyncContextManager[Tx]:
        """A write transaction, committed when the block ends (rolled back on an exception).
        Ordered ones are serialised, so change-log positions commit in order; a write that
        logs no change (usage) may pass `ordered=False`."""

    @abc.abstractmethod
    def _index_read(self) -> AbstractAsyncContextManager[IndexRead]: ...

    async def _imported(self, tx: Tx) -> None:
        """After rows with their own sequence numbers were copied in (`gateway store copy`).
        SQLite's AUTOINCREMENT follows explicit values by itself."""
        del tx

    @abc.abstractmethod
    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    @abc.abstractmethod
    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    # -- data-plane index --------------------------------------------------------------------

    async def snapshot(self, sink: SnapshotSink) -> None:
        """Every key and account, consistent as of one change-log position, streamed into
        `sink` in batches."""
        async with self._index_read() as r:
            row = await r.one(LATEST_CHANGE)
            seq = int(row[0]) if row else 0
            accounts = [
                (a[0], a[1] == ACTIVE) for a in await r.all("SELECT id, status FROM accounts")
            ]
            grouped: dict[str, set[str]] = {}
            for o in await r.all("SELECT account_id, origin FROM callback_origins"):
                grouped.setdefault(o[0], set()).add(o[1])
            sink.begin_load(accounts, {a: frozenset(o) for a, o in grouped.items()})
            async for batch in r.batches(
                f"SELECT {_AUTH_KEY_COLUMNS} FROM api_keys", _SNAPSHOT_BATCH
            ):
                sink.add_keys(cast(list[KeyRow], batch))
            sink.end_load(seq)

    async def changes_since(self, seq: int) -> ChangeSet | None:
        """Current rows of everything changed after `seq`; None when the log no longer
        reaches back that far and the caller must take a fresh snapshot."""
        async with self._index_read() as r:
            row = await r.one("SELECT value FROM meta WHERE name = 'changes_pruned_through'")
            if row is not None and int(row[0]) > seq:
                return None
            rows = await r.all(
                "SELECT seq, entity, entity_id, key_hash FROM changes WHERE seq > ? ORDER BY seq",
                (seq,),
            )
            if not rows:
                return ChangeSet(seq=seq, keys={}, old_hashes={}, accounts={})
            old_hashes: dict[str, set[bytes]] = {}
            for c in rows:
                if c[1] == "key" and c[3] is not None:
                    old_hashes.setdefault(c[2], set()).add(bytes(c[3]))
            key_ids = sorted({c[2] for c in rows if c[1] == "key"})
            account_ids = sorted({c[2] for c in rows if c[1] == "account"})
            keys: dict[str, KeyRow | None] = dict.fromkeys(key_ids)
            accounts: dict[str, bool | None] = dict.fromkeys(account_ids)
            for chunk in _chunks(key_ids, 500):
                marks = ",".join("?" * len(chunk))
                for k in await r.all(
                    f"SELECT {_AUTH_KEY_COLUMNS} FROM api_keys WHERE id IN ({marks})", chunk
                ):
                    keys[k[0]] = cast(KeyRow, tuple(k))
            for chunk in _chunks(account_ids, 500):
                marks = ",".join("?" * len(chunk))
                for a in await r.all(
                    f"SELECT id, status FROM accounts WHERE id IN ({marks})", chunk
                ):
                    accounts[a[0]] = a[1] == ACTIVE
            origins: dict[str, frozenset[str]] = {}
            for account_id in sorted({c[2] for c in rows if c[1] == "origin"}):
                found = await r.all(
                    "SELECT origin FROM callback_origins WHERE account_id = ?", (account_id,)
                )
                origins[account_id] = frozenset(o[0] for o in found)
            return ChangeSet(
                seq=int(rows[-1][0]),
                keys=keys,
                old_hashes=old_hashes,
                accounts=accounts,
                origins=origins,
            )

    async def latest_change(self) -> int:
        async with self._index_read() as r:
            row = await r.one(LATEST_CHANGE)
        return int(row[0]) if row else 0

    async def prune_changes(self, older_than_us: int) -> int:
        """Forget change-log rows older than the cut-off (workers that far behind reload)."""
        async with self._write(None) as tx:
            row = await tx.one(
                "SELECT coalesce(max(seq), 0) FROM changes WHERE at < ?", (older_than_us,)
            )
            through = int(row[0]) if row else 0
            if through:
                await tx.execute("DELETE FROM changes WHERE seq <= ?", (through,))
                await tx.execute(
                    "UPDATE meta SET value = CASE WHEN value < ? THEN ? ELSE value END"
                    " WHERE name = 'changes_pruned_through'",
                    (through, through),
                )
        return through

    async def record_usage(self, rows: Sequence[tuple[str, int, str | None, str | None]]) -> None:
        """Write-behind of last-use information: (key_id, at, ip, user_agent), newest wins."""
        if not rows:
            return
        async with self._write(None, ordered=False) as tx:
            await tx.executemany(
                "UPDATE api_keys SET last_used_at = ?, last_used_ip = ?,"
                " last_used_user_agent = ? WHERE id = ?"
                " AND (last_used_at IS NULL OR last_used_at < ?)",
                # In key order: two instances flushing the same keys never deadlock. A NUL
                # cannot be in a stored id (PostgreSQL text cannot hold one): such rows match
                # no key anywhere and are left out.
                [
                    (at, ip, agent, key_id, at)
                    for key_id, at, ip, agent in sorted(rows)
                    if "\x00" not in key_id + (ip or "") + (agent or "")
                ],
            )

    # -- accounts ----------------------------------------------------------------------------

    async def create_account(
        self, account: Account, key: NewKey | None, actor: Actor
    ) -> tuple[Account, KeyRecord | None]:
        async with self._write(actor) as tx:
            exists = await tx.one("SELECT 1 FROM accounts WHERE id = ?", (account.id,))
            if exists:
                raise ConflictError(f"an account with id {account.id!r} already exists")
            await tx.execute(
                f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (account.id, account.name, account.status, account.created_at, account.updated_at),
            )
            await tx.changed_entity("account", account.id)
            await tx.audit(
                "account.created",
                account_id=account.id,
                details={"name": account.name, "production_key_provisioned": key is not None},
            )
            record = await self._insert_key(tx, key) if key is not None else None
        return account, record

    async def get_account(self, account_id: str) -> Account | None:
        row = await self._one(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,)
        )
        return _account(row) if row else None

    async def list_accounts(
        self, *, limit: int, cursor: str | None, status: str | None = None
    ) -> tuple[list[Account], str | None]:
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        rows, nxt = await self._newest_first(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts", where, params, cursor, limit, created=3
        )
        return [_account(r) for r in rows], nxt

    async def _newest_first(
        self,
        select: str,
        where: list[str],
        params: list[Any],
        cursor: str | None,
        limit: int,
        *,
        created: int,
    ) -> tuple[list[Any], str | None]:
        """One page of `select` (id first, created_at at column `created`), newest first,
        keyset-paginated on (created_at, id)."""
        if cursor:
            after, ident = decode_cursor(cursor, (int, str))
            where = [*where, "(created_at < ? OR (created_at = ? AND id < ?))"]
            params = [*params, after, after, ident]
        sql = select
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = await self._all(sql, [*params, limit + 1])
        page = rows[:limit]
        nxt = encode_cursor(page[-1][created], page[-1][0]) if len(rows) > limit else None
        return page, nxt

    async def update_account(
        self, account_id: str, *, name: str | None, status: str | None, actor: Actor
    ) -> Account:
        async with self._write(actor) as tx:
            row = await tx.one(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,)
            )
            if row is None:
                raise NotFoundError("Account not found", title="Account not found")
            current = _account(row)
            changes: dict[str, dict[str, str]] = {}
            if name is not None and name != current.name:
                changes["name"] = {"from": current.name, "to": name}
            if status is not None and status != current.status:
                if status not in (ACTIVE, DEACTIVATED):
                    raise ValidationError(
                        [{"field": "status", "message": "must be active or deactivated"}]
                    )
                changes["status"] = {"from": current.status, "to": status}
            if not changes:
                return current
            await tx.execute(
                "UPDATE accounts SET name = ?, status = ?, updated_at = ? WHERE id = ?",
                (name or current.name, status or current.status, tx.now, account_id),
            )
            await tx.changed_entity("account", account_id)
            await tx.audit("account.updated", account_id=account_id, details={"changes": changes})
            row = await tx.one(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,)
            )
        return _account(row)

    # -- keys --------------------------------------------------------------------------------

    async def _insert_key(self, tx: Tx, key: NewKey) -> KeyRecord:
        await tx.execute(
            "INSERT INTO api_keys (id, account_id, name, description, key_hash, key_prefix,"
            " key_last4, scopes, tool_pack_ids, registered_user_ids, is_test, expires_at,"
            " created_at, updated_at, created_by, service_account_id, parent_key_id,"
            " signing_secret, signing_secret_prefix, webhook_url, webhook_events,"
            " webhook_enabled)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.id,
                key.account_id,
                key.name,
                key.description,
                key.key_hash,
                key.key_prefix,
                key.key_last4,
                _json_list(key.scopes),
                _json_list(key.tool_pack_ids),
                _json_list(key.registered_user_ids),
                int(key.is_test),
                key.expires_at,
                key.created_at,
                key.created_at,
                key.created_by,
                key.service_account_id,
                key.parent_key_id,
                key.signing_secret,
                key.signing_secret_prefix,
                key.webhook_url,
                _json_list(key.webhook_events),
                int(key.webhook_enabled),
            ),
        )
        await tx.changed_entity("key", key.id, key.key_hash)
        await tx.audit(
            "key.created",
            account_id=key.account_id,
            key_id=key.id,
            environment=environment_of(key.is_test),
            details={
                "name": key.name,
                "key_prefix": key.key_prefix,
                "scopes": list(key.scopes),
                "tool_pack_ids": None if key.tool_pack_ids is None else list(key.tool_pack_ids),
                "registered_user_ids": (
                    None if key.registered_user_ids is None else list(key.registered_user_ids)
                ),
                "expires_at": to_rfc3339(key.expires_at),
                "is_test": key.is_test,
                "parent_key_id": key.parent_key_id,
                "webhook_url": url_origin(key.webhook_url),
            },
        )
        row = await tx.one(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key.id,))
        record = _key_record(row)
        await tx.raise_event(
            "key.created",
            account_id=key.account_id,
            is_test=key.is_test,
            data={"key": _event_key(record)},
        )
        return record

    async def create_key(
        self, key: NewKey, actor: Actor, *, max_production_keys: int = 0
    ) -> KeyRecord:
        async with self._write(actor) as tx:
            row = await tx.one("SELECT status FROM accounts WHERE id = ?", (key.account_id,))
            if row is None:
                raise NotFoundError("Account not found", title="Account not found")
            if key.parent_key_id is not None:
                parent = await tx.one(
                    f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key.parent_key_id,)
                )
                if parent is None or _key_record(parent).status(tx.now) != ACTIVE:
                    raise ConflictError(
                        "the parent key is no longer active", title="Parent key not active"
                    )
            if max_production_keys and not key.is_test:
                count = await tx.one(
                    "SELECT count(*) FROM api_keys WHERE account_id = ? AND is_test = 0"
                    " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                    (key.account_id, tx.now),
                )
                if count and int(count[0]) >= max_production_keys:
                    raise ConflictError(
                        f"account already has {int(count[0])} active production key(s); "
                        f"the limit is {max_production_keys}",
                        title="Production key limit reached",
                    )
            return await self._insert_key(tx, key)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self._one(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return _key_record(row) if row else None

    async def _locked_key(self, tx: Tx, key_id: str) -> KeyRecord:
        row = await tx.one(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        if row is None:
            raise NotFoundError("Key not found", title="Key not found")
        return _key_record(row)

    async def list_keys(
        self,
        *,
        limit: int,
        cursor: str | None,
        account_id: str | None = None,
        is_test: bool | None = None,
        status: str | None = None,
    ) -> tuple[list[KeyRecord], str | None]:
        where: list[str] = []
        params: list[Any] = []
        if account_id is not None:
            where.append("account_id = ?")
            params.append(account_id)
        if is_test is not None:
            where.append("is_test = ?")
            params.append(int(is_test))
        if status is not None:
            now = now_us()
            if status == "revoked":
                where.append("revoked_at IS NOT NULL")
            elif status == "expired":
                where.append("revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?")
                params.append(now)
            else:
                where.append("revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)")
                params.append(now)
        rows, nxt = await self._newest_first(
            f"SELECT {_KEY_COLUMNS} FROM api_keys", where, params, cursor, limit, created=11
        )
        return [_key_record(r) for r in rows], nxt

    async def update_key(self, key_id: str, changes: dict[str, Any], actor: Actor) -> KeyRecord:
        """Rename, re-describe, or change the webhook settings (`webhook_url`,
        `webhook_events` as a tuple, `webhook_enabled`)."""
        async with self._write(actor) as tx:
            key = await self._locked_key(tx, key_id)
            diff = {
                field: {"from": getattr(key, field), "to": value}
                for field, value in changes.items()
                if getattr(key, field) != value
            }
            if not diff:
                return key
            assignments = ", ".join(f"{field} = ?" for field in diff)
            await tx.key_changing(key_id)
            await tx.execute(
                f"UPDATE api_keys SET {assignments}, updated_at = ? WHERE id = ?",
                [*(_column_value(changes[f]) for f in diff), tx.now, key_id],
            )
            if "webhook_url" in diff or "webhook_enabled" in diff:
                row = await tx.one(
                    "SELECT webhook_enabled, webhook_url FROM api_keys WHERE id = ?", (key_id,)
                )
                if row[0] and row[1] is None:  # a concurrent change removed the URL
                    raise ValidationError(
                        [{"field": "webhook_enabled", "message": "needs a webhook_url"}]
                    )
            for field, entry in diff.items():  # JSON-friendly audit details
                for end in ("from", "to"):
                    if isinstance(entry[end], tuple):
                        entry[end] = list(entry[end])
                    elif field == "webhook_url":
                        entry[end] = url_origin(entry[end])
            await tx.audit(
                "key.updated",
                account_id=key.account_id,
                key_id=key_id,
                environment=environment_of(key.is_test),
                details={"changes": diff},
            )
            return await self._locked_key(tx, key_id)

    async def regenerate_key(
        self,
        key_id: str,
        key_hash: bytes,
        key_prefix: str,
        key_last4: str,
        actor: Actor,
        signing: SigningSecret | None = None,
    ) -> KeyRecord:
        """Same id and settings, new secret; the old secret stops working at commit. With
        `signing`, a new signing secret too (the old one signs on until its overlap ends)."""
        async with self._write(actor) as tx:
            key = await self._locked_key(tx, key_id)
            status = key.status(tx.now)
            if status != ACTIVE:
                raise ConflictError(f"a {status} key cannot be regenerated", title="Key not active")
            await tx.key_changing(key_id)
            await tx.execute(
                "UPDATE api_keys SET key_hash = ?, key_prefix = ?, key_last4 = ?, updated_at = ?"
                " WHERE id = ?",
                (key_hash, key_prefix, key_last4, tx.now, key_id),
            )
            await tx.audit(
                "key.regenerated",
                account_id=key.account_id,
                key_id=key_id,
                environment=environment_of(key.is_test),
                details={"old_key_prefix": key.key_prefix, "new_key_prefix": key_prefix},
            )
            if signing is not None:
                await self._replace_signing_secret(tx, key_id, signing)
            record = await self._locked_key(tx, key_id)
            await tx.raise_event(
                "key.regenerated",
                account_id=key.account_id,
                is_test=key.is_test,
                data={"key": _event_key(record), "old_key_prefix": key.key_prefix},
            )
            return record

    async def _replace_signing_secret(self, tx: Tx, key_id: str, signing: SigningSecret) -> None:
        await tx.execute(
            "UPDATE api_keys SET previous_signing_secret = signing_secret,"
            " previous_signing_secret_until = CASE WHEN signing_secret IS NULL THEN NULL"
            " ELSE CAST(? AS BIGINT) END, signing_secret = ?, signing_secret_prefix = ?,"
            " updated_at = ?"
            " WHERE id = ?",
            (signing.previous_until, signing.sealed, signing.prefix, tx.now, key_id),
        )

    async def rotate_signing_secret(
        self, key_id: str, signing: SigningSecret, actor: Actor
    ) -> KeyRecord:
        """A new signing secret; the current one keeps signing until `previous_until`. A second
        rotation inside that window replaces the previous secret at once (as regenerate does)."""
        async with self._write(actor) as tx:
            key = await self._locked_key(tx, key_id)
            status = key.status(tx.now)
            if status != ACTIVE:
                raise ConflictError(
                    f"a {status} key's signing secret cannot be rotated", title="Key not active"
                )
            await self._replace_signing_secret(tx, key_id, signing)
            await tx.audit(
                "key.signing_secret_rotated",
                account_id=key.account_id,
                key_id=key_id,
                environment=environment_of(key.is_test),
                details={
                    "old_signing_secret_prefix": key.signing_secret_prefix,
                    "new_signing_secret_prefix": signing.prefix,
                    "old_valid_until": to_rfc3339(signing.previous_until)
                    if key.signing_secret_prefix
                    else None,
                },
            )
            return await self._locked_key(tx, key_id)

    async def _revoke_descendants(self, tx: Tx, key_id: str) -> None:
        """Keys minted (directly or not) by `key_id` through self-service die with it."""
        rows = await tx.all(
            "WITH RECURSIVE tree(id) AS ("
            " SELECT id FROM api_keys WHERE parent_key_id = ?"
            " UNION SELECT k.id FROM api_keys k JOIN tree ON k.parent_key_id = tree.id)"
            f" SELECT {_KEY_COLUMNS} FROM api_keys WHERE id IN (SELECT id FROM tree)"
            " AND revoked_at IS NULL",
            (key_id,),
        )
        for row in rows:
            child = _key_record(row)
            await tx.key_changing(child.id)
            await tx.execute(
                "UPDATE api_keys SET revoked_at = ?, updated_at = ? WHERE id = ?",
                (tx.now, tx.now, child.id),
            )
            await tx.audit(
                "key.revoked",
                account_id=child.account_id,
                key_id=child.id,
                environment=environment_of(child.is_test),
                details={"key_prefix": child.key_prefix, "cascade_from": key_id},
            )
            await tx.raise_event(
                "key.revoked",
                account_id=child.account_id,
                is_test=child.is_test,
                data={"key": _event_key(replace(child, revoked_at=tx.now)), "cascade_from": key_id},
                subject=child.id,
            )

    async def delete_key(self, key_id: str, actor: Actor) -> None:
        async with self._write(actor) as tx:
            key = await self._locked_key(tx, key_id)
            await self._revoke_descendants(tx, key_id)
            await tx.key_changing(key_id)
            await tx.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
            await tx.audit(
                "key.deleted",
                account_id=key.account_id,
                key_id=key_id,
                environment=environment_of(key.is_test),
                details={"name": key.name, "key_prefix": key.key_prefix},
            )
            # The deleted key's own pending deliveries can never be signed now.
            await tx.execute(
                "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL"
                " WHERE key_id = ? AND status = 'pending'",
                (key_id,),
            )
            # Raised after the delete: the other subscribed keys hear of it (the deleted key's
            # own secret is gone, so nothing could be signed for it).
            await tx.raise_event(
                "key.deleted",
                account_id=key.account_id,
                is_test=key.is_test,
                data={"key": _event_key(key)},
            )

    async def revoke_key(self, key_id: str, actor: Actor) -> KeyRecord:
        """Revoke (idempotent: revoking a revoked key changes nothing and audits nothing)."""
        async with self._write(actor) as tx:
            key = await self._locked_key(tx, key_id)
            if key.revoked_at is not None:
                return key
            await tx.key_changing(key_id)
            await tx.execute(
                "UPDATE api_keys SET revoked_at = ?, updated_at = ? WHERE id = ?",
                (tx.now, tx.now, key_id),
            )
            await tx.audit(
                "key.revoked",
                account_id=key.account_id,
                key_id=key_id,
                environment=environment_of(key.is_test),
                details={"key_prefix": key.key_prefix},
            )
            await tx.raise_event(
                "key.revoked",
                account_id=key.account_id,
                is_test=key.is_test,
                data={"key": _event_key(replace(key, revoked_at=tx.now))},
                subject=key_id,
            )
            await self._revoke_descendants(tx, key_id)
            return await self._locked_key(tx, key_id)

    # -- callback origins --------------------------------------------------------------------

    async def _require_account(self, tx: Tx, account_id: str) -> None:
        if await tx.one("SELECT 1 FROM accounts WHERE id = ?", (account_id,)) is None:
            raise NotFoundError("Account not found", title="Account not found")

    async def list_origins(
        self, account_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[tuple[str, int]], str | None]:
        if await self.get_account(account_id) is None:
            raise NotFoundError("Account not found", title="Account not found")
        params: list[Any] = [account_id]
        sql = "SELECT origin, created_at FROM callback_origins WHERE account_id = ?"
        if cursor:
            (after,) = decode_cursor(cursor, (str,))
            sql += " AND origin > ?"
            params.append(after)
        rows = await self._all(sql + " ORDER BY origin LIMIT ?", [*params, limit + 1])
        items = [(r[0], r[1]) for r in rows[:limit]]
        return items, encode_cursor(items[-1][0]) if len(rows) > limit else None

    async def add_origin(self, account_id: str, origin: str, actor: Actor) -> tuple[str, int]:
        async with self._write(actor) as tx:
            await self._require_account(tx, account_id)
            exists = await tx.one(
                "SELECT 1 FROM callback_origins WHERE account_id = ? AND origin = ?",
                (account_id, origin),
            )
            if exists:
                raise ConflictError(f"{origin} is already on the allow-list")
            await tx.execute(
                "INSERT INTO callback_origins (account_id, origin, created_at) VALUES (?, ?, ?)",
                (account_id, origin, tx.now),
            )
            await tx.changed_entity("origin", account_id)
            await tx.audit(
                "callback_origin.added", account_id=account_id, details={"origin": origin}
            )
            return origin, tx.now

    async def remove_origin(self, account_id: str, origin: str, actor: Actor) -> None:
        async with self._write(actor) as tx:
            await self._require_account(tx, account_id)
            # No entry holds NUL (entries are checked when added), and PostgreSQL would refuse
            # even to compare one: not on the list, without asking.
            deleted = (
                0
                if "\x00" in origin
                else await tx.execute(
                    "DELETE FROM callback_origins WHERE account_id = ? AND origin = ?",
                    (account_id, origin),
                )
            )
            if deleted == 0:
                raise NotFoundError(f"{origin} is not on the allow-list", title="Origin not found")
            await tx.changed_entity("origin", account_id)
            await tx.audit(
                "callback_origin.removed", account_id=account_id, details={"origin": origin}
            )

    # -- webhook outbox ----------------------------------------------------------------------

    _skip_locked = ""  # PostgreSQL: " FOR UPDATE SKIP LOCKED" (several claimants at once)
    _for_update = ""  # PostgreSQL: " FOR UPDATE"

    async def claim_deliveries(
        self, now: int, lease_us: int, limit: int, token: str
    ) -> list[Delivery]:
        """Due pending deliveries, leased to the caller (`token`) until `now + lease_us`: an
        attempt that dies with its process is made again after the lease, and only the
        holder of the lease may record its outcome."""
        due = (
            "status = 'pending' AND next_attempt_at <= ?"
            " AND (claimed_until IS NULL OR claimed_until < ?)"
        )
        # A plain read first: an idle outbox costs no write lock (SQLite has only one).
        if (
            await self._one(f"SELECT 1 FROM webhook_deliveries WHERE {due} LIMIT 1", (now, now))
            is None
        ):
            return []
        async with self._write(None, ordered=False) as tx:
            rows = await tx.all(
                f"SELECT id FROM webhook_deliveries WHERE {due}"
                f" ORDER BY next_attempt_at LIMIT ?{self._skip_locked}",
                (now, now, limit),
            )
            if not rows:
                return []
            ids = [r[0] for r in rows]
            marks = ",".join("?" * len(ids))
            await tx.execute(
                "UPDATE webhook_deliveries SET claimed_until = ?, claim_token = ?"
                f" WHERE id IN ({marks})",
                (now + lease_us, token, *ids),
            )
            found = await tx.all(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id IN ({marks})",
                ids,
            )
        return [_delivery(r) for r in found]

    async def next_delivery_at(self) -> int | None:
        """When the outbox next has something to do: the earliest due time of a pending
        delivery, or, if that one is in flight, when its lease ends (the sender looks again
        within a second anyway). None when nothing is pending. One probe of the due index."""
        row = await self._one(
            "SELECT next_attempt_at, claimed_until FROM webhook_deliveries"
            " WHERE status = 'pending' ORDER BY next_attempt_at LIMIT 1"
        )
        if row is None or row[0] is None:
            return None
        return int(row[1]) if row[1] is not None and row[1] > row[0] else int(row[0])

    async def publish_event(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        account_id: str | None,
        key_id: str | None,
        environment: str | None,
        actor: Actor,
    ) -> tuple[str, int]:
        """An event the upstream raises (`POST /admin/v1/events`), for every live key of the
        account in `environment` (default production) or for one key (in its own
        environment), whose webhook listens for it. The event id and the deliveries queued."""
        async with self._write(actor, ordered=False) as tx:
            if key_id is not None:
                row = await tx.one(
                    "SELECT account_id, is_test FROM api_keys WHERE id = ?", (key_id,)
                )
                if row is None:
                    raise NotFoundError("Key not found", title="Key not found")
                account_id, is_test = row[0], bool(row[1])
                if environment is not None and environment != environment_of(is_test):
                    raise ValidationError(
                        [
                            {
                                "field": "environment",
                                "message": f"the key is a {environment_of(is_test)} key",
                            }
                        ]
                    )
            else:
                assert account_id is not None
                is_test = environment == "test"
            if await tx.one("SELECT 1 FROM accounts WHERE id = ?", (account_id,)) is None:
                raise NotFoundError("Account not found", title="Account not found")
            event_id, queued = await tx.raise_event(
                event_type,
                account_id=account_id,
                is_test=is_test,
                data=data,
                only=key_id,
            )
            await tx.audit(
                "event.published",
                account_id=account_id,
                key_id=key_id,
                environment=environment_of(is_test),
                details={"event_id": event_id, "type": event_type, "deliveries": queued},
            )
            return event_id, queued

    async def raise_expiry_events(self, now: int, warning_us: int, limit: int = 100) -> int:
        """`key.expiring` once for each key whose expiry is within `warning_us` (0: none) and
        `key.expired` once it has passed, each in the transaction that records it was raised
        (so each instance of a fleet may look, and each notice is raised once). A revoked key
        is past news: marked, nothing raised. The number of keys seen to."""
        warn_before = now + warning_us if warning_us > 0 else now
        due_warning = "expiry_notice = 0 AND expires_at IS NOT NULL AND expires_at <= ?"
        due_expiry = "expiry_notice < 2 AND expires_at IS NOT NULL AND expires_at <= ?"
        # Plain reads first, each one probe of its partial index: most looks find nothing.
        # (ORDER BY makes PostgreSQL walk the partial index rather than scan the table.)
        warn = await self._one(
            f"SELECT 1 FROM api_keys WHERE {due_warning} ORDER BY expires_at LIMIT 1",
            (warn_before,),
        )
        expire = await self._one(
            f"SELECT 1 FROM api_keys WHERE {due_expiry} ORDER BY expires_at LIMIT 1", (now,)
        )
        if warn is None and expire is None:
            return 0
        seen = 0
        async with self._write(None, ordered=False) as tx:
            # Two queries, one per index (an OR would scan the table); expiries first.
            rows: dict[str, Any] = {}
            for where, until in ((due_expiry, now), (due_warning, warn_before)):
                for row in await tx.all(
                    f"SELECT {_KEY_COLUMNS}, expiry_notice FROM api_keys WHERE {where}"
                    f" ORDER BY expires_at LIMIT ?{self._skip_locked}",
                    (until, limit),
                ):
                    rows.setdefault(row[0], row)
            for row in rows.values():
                key, notice = _key_record(row[:-1]), int(row[-1])
                assert key.expires_at is not None
                expired = key.expires_at <= now
                marked = await tx.execute(
                    "UPDATE api_keys SET expiry_notice = ? WHERE id = ? AND expiry_notice = ?",
                    (2 if expired or key.revoked_at is not None else 1, key.id, notice),
                )
                if marked and key.revoked_at is None:
                    await tx.raise_event(
                        "key.expired" if expired else "key.expiring",
                        account_id=key.account_id,
                        is_test=key.is_test,
                        data={"key": _event_key(key)},
                        subject=key.id,
                    )
                seen += 1
                if tx.queued >= MAX_QUEUED_PER_TX:  # a big account: the rest in the next one
                    return limit
        return seen

    async def webhook_target(self, key_id: str) -> WebhookTarget | None:
        """Where and how a key's deliveries go now (None: the key is gone)."""
        row = await self._one(
            "SELECT signing_secret, previous_signing_secret, previous_signing_secret_until,"
            " webhook_url, webhook_enabled FROM api_keys WHERE id = ?",
            (key_id,),
        )
        if row is None:
            return None
        return WebhookTarget(
            sealed=None if row[0] is None else bytes(row[0]),
            previous=None if row[1] is None else bytes(row[1]),
            previous_until=row[2],
            url=row[3],
            enabled=bool(row[4]),
        )

    async def finish_attempt(
        self,
        delivery_id: str,
        token: str,
        attempt: dict[str, Any],
        status: str,
        next_at: int | None,
    ) -> bool:
        """Record one attempt: `succeeded`, `failed`, or `pending` again at `next_at`. False
        (nothing recorded) when the lease was lost to another claimant or an admin retry."""
        async with self._write(None, ordered=False) as tx:
            row = await tx.one(
                "SELECT attempt_log FROM webhook_deliveries WHERE id = ? AND claim_token = ?"
                + self._for_update,
                (delivery_id, token),
            )
            if row is None:
                return False
            log = orjson.loads(row[0])
            log.append(attempt)
            await tx.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1,"
                " next_attempt_at = ?, claimed_until = NULL, claim_token = NULL,"
                " attempt_log = ? WHERE id = ?",
                (status, next_at, orjson.dumps(log).decode(), delivery_id),
            )
        return True

    async def list_deliveries(
        self,
        *,
        limit: int,
        cursor: str | None,
        key_id: str | None = None,
        account_id: str | None = None,
        status: str | None = None,
        event_id: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("key_id", key_id),
            ("account_id", account_id),
            ("status", status),
            ("event_id", event_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if cursor:
            (before,) = decode_cursor(cursor, (int,))
            where.append("seq < ?")
            params.append(before)
        sql = f"SELECT {_DELIVERY_COLUMNS}, seq FROM webhook_deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._all(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit + 1])
        items = [_delivery(r) for r in rows[:limit]]
        nxt = encode_cursor(rows[limit - 1][-1]) if len(rows) > limit else None
        return items, nxt

    async def prune_deliveries(self, older_than_us: int, batch: int = 5000) -> int:
        """Forget succeeded and failed deliveries queued before `older_than_us` (pending ones
        stay, however old), a batch per transaction so the write lock is never held long. The
        number forgotten."""
        forgotten = 0
        while True:
            async with self._write(None, ordered=False) as tx:
                done = await tx.execute(
                    "DELETE FROM webhook_deliveries WHERE seq IN (SELECT seq FROM"
                    " webhook_deliveries WHERE status <> 'pending' AND created_at < ? LIMIT ?)",
                    (older_than_us, batch),
                )
            forgotten += done
            if done < batch:
                return forgotten

    async def outbox_stats(self) -> tuple[int, int | None]:
        """(pending deliveries, when the oldest of them was queued)."""
        row = await self._one(
            "SELECT count(*), min(created_at) FROM webhook_deliveries WHERE status = 'pending'"
        )
        return int(row[0]), None if row[1] is None else int(row[1])

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        row = await self._one(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?", (delivery_id,)
        )
        return None if row is None else _delivery(row)

    async def retry_delivery(self, delivery_id: str, now: int) -> Delivery:
        """Queue a delivery again, now (same webhook-id), whatever its status."""
        async with self._write(None, ordered=False) as tx:
            row = await tx.one(
                "SELECT claimed_until FROM webhook_deliveries WHERE id = ?" + self._for_update,
                (delivery_id,),
            )
            if row is None:
                raise NotFoundError("Delivery not found", title="Delivery not found")
            if row[0] is not None and row[0] > now:
                raise ConflictError(
                    "an attempt of this delivery is in flight; retry when it has finished",
                    title="Delivery in flight",
                )
            await tx.execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?,"
                " claimed_until = NULL, claim_token = NULL WHERE id = ?",
                (now, delivery_id),
            )
            tx.queued += 1  # wake the sender
            row = await tx.one(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?",
                (delivery_id,),
            )
        return _delivery(row)

    # -- audit -------------------------------------------------------------------------------

    async def list_audit(
        self,
        *,
        limit: int,
        cursor: str | None,
        environment: str = "production",
        account_id: str | None = None,
        action: str | None = None,
        since_us: int | None = None,
    ) -> tuple[list[AuditEntry], str | None]:
        where = ["environment = ?"]
        params: list[Any] = [environment]
        if account_id is not None:
            where.append("account_id = ?")
            params.append(account_id)
        if action is not None:
            where.append("action = ?")
            params.append(action)
        if since_us is not None:
            where.append("at >= ?")
            params.append(since_us)
        if cursor:
            (before,) = decode_cursor(cursor, (int,))
            where.append("seq < ?")
            params.append(before)
        rows = await self._all(
            "SELECT seq, id, at, action, actor, account_id, key_id, environment, ip, request_id,"
            f" details FROM audit_log WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            [*params, limit + 1],
        )
        items = [
            AuditEntry(
                seq=r[0],
                id=r[1],
                at=r[2],
                action=r[3],
                actor=r[4],
                account_id=r[5],
                key_id=r[6],
                environment=r[7],
                ip=r[8],
                request_id=r[9],
                details=orjson.loads(r[10]),
            )
            for r in rows[:limit]
        ]
        return items, encode_cursor(items[-1].seq) if len(rows) > limit else None


_DELIVERY_COLUMNS = (
    "id, key_id, account_id, environment, event_type, url, body, created_at, status, attempts,"
    " next_attempt_at, attempt_log, event_id"
)


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        id=row[0],
        key_id=row[1],
        account_id=row[2],
        environment=row[3],
        event_type=row[4],
        url=row[5],
        body=row[6],
        created_at=row[7],
        status=row[8],
        attempts=row[9],
        next_attempt_at=row[10],
        attempt_log=orjson.loads(row[11]),
        event_id=row[12],
    )


def _event_key(key: KeyRecord) -> dict[str, Any]:
    """What an event says about the key it concerns (never a secret)."""
    return {
        "id": key.id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "environment": environment_of(key.is_test),
        "scopes": list(key.scopes),
        "expires_at": to_rfc3339(key.expires_at),
        "revoked_at": to_rfc3339(key.revoked_at),
    }


def url_origin(url: str | None) -> str | None:
    """What the audit trail keeps of a webhook URL: its origin (a path or query may hold a
    token)."""
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _column_value(value: Any) -> Any:
    """A Python value as the column holds it (lists as JSON text, booleans as 0/1)."""
    if isinstance(value, tuple):
        return _json_list(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
