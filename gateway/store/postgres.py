"""The fleet store: PostgreSQL through asyncpg, shared by every gateway instance.

The statements are gateway/store/sql.py's (`?` becomes `$n` here). Every write transaction
first takes one transaction-level advisory lock, so changes commit in the order of their
change-log positions across the whole fleet (a reader can never see position 10 while 9 is
still to commit), and ends with a NOTIFY on `CHANNEL` carrying the newest position, delivered
by PostgreSQL only if the transaction commits. Migrations run under a session advisory lock:
instances starting together migrate once.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from gateway.config import redact_url as redacted
from gateway.errors import ConflictError, ProblemError, StoreError, ValidationError
from gateway.store.records import Actor
from gateway.store.schema import COMPATIBLE_FROM, PG_MIGRATIONS
from gateway.store.sql import (
    COMPATIBLE_FROM_SQL,
    LATEST_CHANGE,
    READ_COMPATIBLE_FROM,
    IndexRead,
    SqlStore,
    Tx,
    check_version,
)

log = logging.getLogger("gateway.store")

CHANNEL = "keygate_changes"
WRITE_LOCK = 0x6B657967  # "keyg": serialises the fleet's writes
MIGRATE_LOCK = 0x6B65796D  # "keym": one instance migrates, the others wait
COMMAND_TIMEOUT = 5.0
MIGRATE_WAIT = 300.0
CONNECT_TIMEOUT = 5.0
# The change-log position of the last write made in this task (None: it changed nothing): the
# admin API's propagation barrier waits for it (gateway/fleet.py).
COMMITTED: contextvars.ContextVar[int | None] = contextvars.ContextVar("committed", default=None)
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


@functools.lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """`?` placeholders as asyncpg's `$1, $2, ...` (no statement here has a literal `?`)."""
    parts = sql.split("?")
    out = [parts[0]]
    for n, part in enumerate(parts[1:], start=1):
        out += (f"${n}", part)
    return "".join(out)


def _has_nul(params: Sequence[Any]) -> bool:
    """PostgreSQL text cannot hold NUL: no stored value equals such a parameter."""
    return any(isinstance(p, str) and "\x00" in p for p in params)


def _refuse_nul() -> ValidationError:
    return ValidationError([{"field": "", "message": "text must not contain NUL characters"}])


class PostgresTx(Tx):
    def __init__(self, conn: asyncpg.Connection, actor: Actor | None) -> None:
        super().__init__(actor)
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if _has_nul(params):
            raise _refuse_nul()
        status = await self.conn.execute(pg_sql(sql), *params)
        tail = status.rpartition(" ")[2]  # "UPDATE 3", "INSERT 0 1", "DELETE 0"
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if any(_has_nul(r) for r in rows):
            raise _refuse_nul()
        await self.conn.executemany(pg_sql(sql), rows)

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if _has_nul(params):
            return None
        return await self.conn.fetchrow(pg_sql(sql), *params)

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if _has_nul(params):
            return []
        return list(await self.conn.fetch(pg_sql(sql), *params))


class PostgresIndexRead(IndexRead):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return await self.conn.fetchrow(pg_sql(sql), *params)

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self.conn.fetch(pg_sql(sql), *params))

    async def batches(self, sql: str, size: int) -> AsyncIterator[list[Any]]:
        cursor = await self.conn.cursor(pg_sql(sql))
        while batch := await cursor.fetch(size):
            yield list(batch)


class PostgresStore(SqlStore):
    _skip_locked = " FOR UPDATE SKIP LOCKED"  # instances claim deliveries side by side
    _for_update = " FOR UPDATE"
    revision = None  # the change signal is LISTEN/NOTIFY (gateway/changes.py), not a file

    def __init__(
        self, url: str, password: str | None = None, *, min_size: int = 1, max_size: int = 8
    ) -> None:
        self.url = url
        self.password = password
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({redacted(self.url)})"

    # -- life cycle --------------------------------------------------------------------------

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own (for LISTEN), outside the pool."""
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self.url, password=self.password, timeout=CONNECT_TIMEOUT
            )
        except _DB_ERRORS as exc:
            raise StoreError(f"cannot connect to {redacted(self.url)}: {_why(exc)}") from exc
        return conn

    async def open(self, migrate: str = "apply") -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                password=self.password,
                min_size=self.min_size,
                max_size=self.max_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
            )
        except _DB_ERRORS as exc:
            raise StoreError(f"cannot open store {redacted(self.url)}: {_why(exc)}") from exc
        try:
            await self._migrate(migrate)
        except BaseException:
            await self.close()
            raise

    @staticmethod
    async def _version(conn: asyncpg.Connection) -> int:
        exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT max(version) FROM schema_version") or 0)

    @staticmethod
    async def _compatible_from(conn: asyncpg.Connection) -> int | None:
        value = await conn.fetchval(pg_sql(READ_COMPATIBLE_FROM))
        return None if value is None else int(value)

    async def _migrate(self, migrate: str) -> None:
        where, latest = redacted(self.url), len(PG_MIGRATIONS)
        async with self._conn() as conn:
            try:
                self.schema_found = self.schema_version = found = await self._version(conn)
                compatible = await self._compatible_from(conn) if found > latest else None
                if not check_version(where, found, latest, migrate, compatible):
                    return
                # Another instance may be migrating: wait for it, longer than a command.
                await conn.execute(
                    "SELECT pg_advisory_lock($1)", MIGRATE_LOCK, timeout=MIGRATE_WAIT
                )
                try:
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                    )
                    # Again, under the lock: another instance may have migrated meanwhile.
                    self.schema_version = version = await self._version(conn)
                    compatible = await self._compatible_from(conn) if version > latest else None
                    if not check_version(where, version, latest, migrate, compatible):
                        return
                    for number, script in enumerate(PG_MIGRATIONS[version:], start=version + 1):
                        async with conn.transaction():
                            await conn.execute(script)
                            await conn.execute(
                                pg_sql(COMPATIBLE_FROM_SQL), COMPATIBLE_FROM[number - 1]
                            )
                            await conn.execute("DELETE FROM schema_version")
                            await conn.execute(
                                "INSERT INTO schema_version (version) VALUES ($1)", number
                            )
                        self.schema_version = number
                        log.info("store migrated to schema version %d", number)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK)
            except _DB_ERRORS as exc:
                raise StoreError(f"cannot migrate {where}: {_why(exc)}") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except (TimeoutError, *_DB_ERRORS):
                pool.terminate()

    # -- dialect -----------------------------------------------------------------------------

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool  # close() may clear it while this connection is out
        if pool is None:
            raise StoreError("store is not open")
        try:
            conn = await pool.acquire(timeout=CONNECT_TIMEOUT)
        except _DB_ERRORS as exc:
            raise StoreError(f"store unavailable: {_why(exc)}") from exc
        try:
            yield conn
        finally:
            try:
                await pool.release(conn)
            except _DB_ERRORS:
                conn.terminate()

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if _has_nul(params):
            return None
        async with self._conn() as conn:
            try:
                return await conn.fetchrow(pg_sql(sql), *params)
            except _DB_ERRORS as exc:
                raise StoreError(f"store read failed: {_why(exc)}") from exc

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if _has_nul(params):
            return []
        async with self._conn() as conn:
            try:
                return list(await conn.fetch(pg_sql(sql), *params))
            except _DB_ERRORS as exc:
                raise StoreError(f"store read failed: {_why(exc)}") from exc

    @asynccontextmanager
    async def _write(self, actor: Actor | None, *, ordered: bool = True) -> AsyncIterator[Tx]:
        async with self._conn() as conn:
            tx = PostgresTx(conn, actor)
            position = None
            try:
                async with conn.transaction():
                    if ordered:
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                    yield tx
                    if tx.changed:
                        position = await conn.fetchval(LATEST_CHANGE)
                        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(position))
                if position is not None:
                    COMMITTED.set(position)
                self._committed(tx)
            except ProblemError:
                raise
            except asyncpg.UniqueViolationError as exc:
                raise ConflictError("a concurrent change created the same record") from exc
            except _DB_ERRORS as exc:
                raise StoreError(f"store write failed: {_why(exc)}") from exc

    async def _imported(self, tx: Tx) -> None:
        # Copied rows brought their own seq: the sequence must continue after them.
        await tx.execute(
            "SELECT setval(pg_get_serial_sequence('audit_log', 'seq'),"
            " coalesce(max(seq), 0) + 1, false) FROM audit_log"
        )

    @asynccontextmanager
    async def _index_read(self) -> AsyncIterator[IndexRead]:
        async with self._conn() as conn:
            try:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    yield PostgresIndexRead(conn)
            except _DB_ERRORS as exc:
                raise StoreError(f"cannot read the key index: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    """An error's own words, one line, never the URL it was given (which may hold a password)."""
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return text[:300]


# Heartbeats are stamped and judged by the database's clock, so clock skew between hosts
# cannot make a serving instance look dead (or a dead one live).
_DB_NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"


class Presence:
    """Fleet presence in the `instances` table, on the store's pool."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def beat(self, ident: str, host: str, pid: int, applied: int) -> None:
        """Register, or say again that this instance is alive and has applied `applied`: an
        upsert, so a row pruned while the instance was paused comes back."""
        await self._run(
            "INSERT INTO instances (id, host, pid, started_at, heartbeat_at, applied_seq)"
            f" VALUES ($1, $2, $3, {_DB_NOW_US}, {_DB_NOW_US}, $4)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at,"
            " applied_seq = greatest(instances.applied_seq, EXCLUDED.applied_seq)",
            ident,
            host,
            pid,
            applied,
        )

    async def leave(self, ident: str) -> None:
        await self._run("DELETE FROM instances WHERE id = $1", ident)

    async def forget_silent(self, seconds: float) -> None:
        """Drop rows of instances silent this long (killed, never stopped)."""
        await self._run(
            f"DELETE FROM instances WHERE heartbeat_at < {_DB_NOW_US} - $1",
            int(seconds * 1_000_000),
        )

    async def confirmations(self, position: int, live_within: float) -> tuple[int, int]:
        """(instances that applied `position`, live instances: a heartbeat within
        `live_within` seconds)."""
        async with self.store._conn() as conn:
            try:
                row = await conn.fetchrow(
                    "SELECT count(*) FILTER (WHERE applied_seq >= $1), count(*) FROM instances"
                    f" WHERE heartbeat_at >= {_DB_NOW_US} - $2",
                    position,
                    int(live_within * 1_000_000),
                )
            except _DB_ERRORS as exc:
                raise StoreError(f"store read failed: {_why(exc)}") from exc
        return int(row[0]), int(row[1])

    async def _run(self, sql: str, *args: Any) -> None:
        async with self.store._conn() as conn:
            try:
                await conn.execute(sql, *args)
            except _DB_ERRORS as exc:
                raise StoreError(f"store write failed: {_why(exc)}") from exc
