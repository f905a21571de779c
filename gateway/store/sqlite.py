"""The embedded default store: one SQLite file in WAL mode, driven through aiosqlite.

Three connections: a writer, whose transactions are serialised by an asyncio lock and always
write their audit row and change-log row in the same transaction as the change itself; a reader
for admin reads; and one for the in-memory index's snapshots and change sets, so an admin read in
flight can never hand the index an older snapshot. After every commit the shared revision counter is
bumped so data-plane workers know to re-read the change log. The statements themselves are in
gateway/store/sql.py, shared with PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.errors import ConflictError, StoreError
from gateway.store.records import Actor
from gateway.store.revision import RevisionCounter
from gateway.store.schema import COMPATIBLE_FROM, MIGRATIONS
from gateway.store.sql import (
    COMPATIBLE_FROM_SQL,
    READ_COMPATIBLE_FROM,
    IndexRead,
    SqlStore,
    Tx,
    check_version,
)

log = logging.getLogger("gateway.store")
BUSY_TIMEOUT_MS = 2000
MIGRATE_WAIT_MS = 120_000  # how long a process waits for another one's migration


def _statements(script: str) -> list[str]:
    """A migration script as single statements (a transaction is driven one at a time)."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in pending.splitlines()
    ):
        raise ValueError(f"incomplete statement in a migration: {pending.strip()[:80]!r}")
    return out


class SQLiteTx(Tx):
    def __init__(self, conn: aiosqlite.Connection, actor: Actor | None) -> None:
        super().__init__(actor)
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self.conn.execute(sql, params)
        return cur.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())


class SQLiteIndexRead(IndexRead):
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def batches(self, sql: str, size: int) -> AsyncIterator[list[Any]]:
        async with self.conn.execute(sql) as cur:
            while batch := await cur.fetchmany(size):
                yield list(batch)


def _create_private(path: Path) -> None:
    """Make the database file 0600 (and any directory it needs 0700) before SQLite opens it:
    it holds account names, client IPs and key hashes. SQLite gives its -wal and -shm files the
    database file's mode, so they follow. Existing files and directories are left as they are."""
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "store file %s is readable by others (mode %04o): it holds account names, client IPs "
            "and key hashes; consider chmod 600 (and the same for its -wal and -shm files)",
            path,
            mode,
        )


class SQLiteStore(SqlStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._index_reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._index_lock = asyncio.Lock()
        self.revision: RevisionCounter | None = None

    # -- life cycle --------------------------------------------------------------------------

    async def open(self, migrate: str = "apply") -> None:
        if migrate != "apply" and not self.path.is_file():  # a check never makes a store
            raise StoreError(f"SQLite store {self.path} does not exist")
        try:
            _create_private(self.path)
        except OSError as exc:
            raise StoreError(f"cannot create SQLite store {self.path}: {exc.strerror}") from exc
        try:
            self._writer = await self._connect()
            await self._migrate(self._writer, migrate)
            self._reader = await self._connect()
            self._index_reader = await self._connect()
        except sqlite3.Error as exc:
            await self.close()
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise
        self.revision = RevisionCounter(self.path.with_name(self.path.name + "-rev"))

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            # A locked store answers 503 within two seconds rather than holding requests.
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA journal_mode = WAL")
            # FULL: an acknowledged revocation survives a power cut, not only a crash.
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await conn.close()
            raise
        return conn

    @staticmethod
    async def _version(conn: aiosqlite.Connection) -> int:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _compatible_from(self, conn: aiosqlite.Connection) -> int | None:
        async with conn.execute(READ_COMPATIBLE_FROM) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else None

    async def _migrate(self, conn: aiosqlite.Connection, migrate: str) -> None:
        """Bring the schema up to date, one migration per transaction. Any number of processes
        may do this at once on one file: each migration starts with BEGIN IMMEDIATE (one
        writer at a time) and reads the version inside that transaction, so a migration
        another process applied meanwhile is seen, not applied twice."""
        where, latest = str(self.path), len(MIGRATIONS)
        self.schema_found = self.schema_version = found = await self._version(conn)
        compatible = await self._compatible_from(conn) if found > latest else None
        if not check_version(where, found, latest, migrate, compatible):
            return
        await conn.execute(f"PRAGMA busy_timeout = {MIGRATE_WAIT_MS}")  # a big migration
        try:
            while True:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    self.schema_version = version = await self._version(conn)
                    compatible = await self._compatible_from(conn) if version > latest else None
                    if not check_version(where, version, latest, migrate, compatible):
                        await conn.execute("COMMIT")
                        return
                    for statement in _statements(MIGRATIONS[version]):
                        await conn.execute(statement)
                    await conn.execute(COMPATIBLE_FROM_SQL, (COMPATIBLE_FROM[version],))
                    await conn.execute(f"PRAGMA user_version = {version + 1}")
                    await conn.execute("COMMIT")
                except BaseException:
                    await self._rollback(conn)
                    raise
                self.schema_version = version + 1
                log.info("store %s migrated to schema version %d", self.path, version + 1)
        finally:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    async def close(self) -> None:
        for conn in (self._index_reader, self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._index_reader = self._reader = self._writer = None
        if self.revision is not None:
            self.revision.close()
            self.revision = None

    # -- helpers -----------------------------------------------------------------------------

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("store is not open")
        return self._reader

    # Reads run, rows fetched and statement closed in one job on the reader's thread. Done as
    # separate jobs (execute, fetchone, close), another coroutine's read could run between
    # them inside the read transaction the first statement still holds open, and see the
    # store as it was before a write that had already returned.
    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(await self._r.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    @asynccontextmanager
    async def _write(self, actor: Actor | None, *, ordered: bool = True) -> AsyncIterator[Tx]:
        if self._writer is None or self.revision is None:
            raise StoreError("store is not open")
        conn = self._writer
        async with self._write_lock:
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"store unavailable: {exc}") from exc
            tx = SQLiteTx(conn, actor)
            try:
                yield tx
            except BaseException as exc:
                await self._rollback(conn)
                if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
                    raise ConflictError("a concurrent change created the same record") from exc
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"store write failed: {exc}") from exc
                raise
            try:
                # Shielded: once COMMIT is sent it lands even if this task is cancelled, and
                # the bump below must then still happen. A bump without a change is harmless.
                await asyncio.shield(asyncio.ensure_future(conn.execute("COMMIT")))
            except sqlite3.Error as exc:
                await self._rollback(conn)
                raise StoreError(f"store write failed: {exc}") from exc
            finally:
                if tx.changed:
                    self.revision.bump()
            self._committed(tx)

    @staticmethod
    async def _rollback(conn: aiosqlite.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            await asyncio.shield(asyncio.ensure_future(conn.execute("ROLLBACK")))

    # -- data-plane index --------------------------------------------------------------------

    @property
    def _ir(self) -> aiosqlite.Connection:
        """The index's own connection: its read transactions never interleave with admin
        reads (which would see, or make it see, an older snapshot)."""
        if self._index_reader is None:
            raise StoreError("store is not open")
        return self._index_reader

    @asynccontextmanager
    async def _index_read(self) -> AsyncIterator[IndexRead]:
        async with self._index_lock:
            conn = self._ir
            try:
                await conn.execute("BEGIN")
                try:
                    yield SQLiteIndexRead(conn)
                finally:
                    await conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the key index: {exc}") from exc
