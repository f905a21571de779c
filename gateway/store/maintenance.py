"""What operators do to a store besides serving from it: back it up while gateways run on it
and check it (`gateway store backup|check`; `gateway migrate` is SqlStore.open's `migrate`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import StoreError
from gateway.store.postgres import PostgresStore
from gateway.store.schema import MIGRATIONS, PG_MIGRATIONS

COUNTS = {
    "accounts": "SELECT count(*) FROM accounts",
    "keys": "SELECT count(*) FROM api_keys",
    "revoked keys": "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL",
    "callback origins": "SELECT count(*) FROM callback_origins",
    "audit entries": "SELECT count(*) FROM audit_log",
    "pending deliveries": "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'",
}


@dataclass
class Report:
    """What a check found: the schema version, row counts, and damage (`problems`)."""

    schema_version: int
    latest: int
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    @property
    def schema_note(self) -> str | None:
        """Why this gateway cannot serve the store as it is (None: it can)."""
        if self.schema_version < self.latest:
            return (
                f"schema version {self.schema_version} is behind this gateway's {self.latest}:"
                " run `gateway migrate`"
            )
        if self.schema_version > self.latest:
            return (
                f"schema version {self.schema_version} is newer than this gateway's"
                f" {self.latest}: upgrade the gateway"
            )
        return None


def _read_only(path: Path) -> sqlite3.Connection:
    # As a URI, so the path must be escaped ('#', '%', '?' in a name); mode=ro never creates
    # the database (SQLite may still make -wal/-shm files beside a stopped one).
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)


def check_sqlite(path: Path) -> Report:
    """SQLite's integrity and foreign-key checks, the schema version and row counts, on a
    read-only connection of its own (safe beside running gateways)."""
    if not path.is_file():
        raise StoreError(f"{path} does not exist")
    try:
        conn = _read_only(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    try:
        report = Report(int(conn.execute("PRAGMA user_version").fetchone()[0]), len(MIGRATIONS))
        verdict = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        if verdict != ["ok"]:
            report.problems.extend(f"integrity: {line}" for line in verdict[:20])
        for row in conn.execute("PRAGMA foreign_key_check"):
            report.problems.append(f"foreign key: a row of {row[0]} refers to a missing {row[2]}")
        for name, sql in COUNTS.items():
            with contextlib.suppress(sqlite3.OperationalError):  # an older schema lacks it
                report.counts[name] = int(conn.execute(sql).fetchone()[0])
        return report
    except sqlite3.Error as exc:
        raise StoreError(f"cannot check {path}: {exc}") from None
    finally:
        conn.close()


async def check_postgres(store: PostgresStore) -> Report:
    """Schema version and row counts (PostgreSQL checks its own pages) of a store opened with
    migrate="skip"."""
    report = Report(store.schema_version, len(PG_MIGRATIONS))
    if report.schema_version == report.latest:
        for name, sql in COUNTS.items():
            report.counts[name] = int((await store._one(sql))[0])
    return report


def backup_sqlite(source: Path, target: Path) -> Report:
    """A consistent copy of a live SQLite store by SQLite's online backup API, in one step (a
    single read transaction: gateways keep writing meanwhile, and the copy is the store as it
    was at one moment), then checked. `target` must not exist; it is made 0600."""
    if not source.is_file():
        raise StoreError(f"{source} does not exist")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise StoreError(f"{target} exists: back up into a new file") from None
    except OSError as exc:
        raise StoreError(f"cannot create {target}: {exc.strerror}") from None
    os.close(fd)
    try:
        _copy(source, target)
        return check_sqlite(target)
    except BaseException as exc:  # a failed or interrupted backup leaves nothing behind
        target.unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error | OSError):
            raise StoreError(f"backup failed: {exc}") from exc
        raise


def _copy(source: Path, target: Path) -> None:
    src = _read_only(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # all pages in one step, under one read transaction
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
    finally:
        src.close()
