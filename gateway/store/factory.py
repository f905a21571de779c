"""The store a configuration names: SQLite (`sqlite:///...`, the default) or PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.changes import ChangeSignal, CounterSignal, NotifySignal
from gateway.config import StoreSettings
from gateway.errors import StoreError
from gateway.store.postgres import CHANNEL, PostgresStore
from gateway.store.sql import SqlStore
from gateway.store.sqlite import SQLiteStore


def make_store(settings: StoreSettings, environ: Mapping[str, str]) -> SqlStore:
    if not settings.is_postgres:
        return SQLiteStore(settings.sqlite_path)
    password = None
    if settings.password_env is not None:
        password = environ.get(settings.password_env)
        if not password:
            raise StoreError(f"store.password_env names {settings.password_env}, which is not set")
    return PostgresStore(settings.url, password, max_size=settings.pool_size)


def change_signal(store: SqlStore) -> ChangeSignal:
    """How a data plane on `store` learns that it changed (an open store)."""
    if isinstance(store, PostgresStore):
        return NotifySignal(store, CHANNEL)
    assert isinstance(store, SQLiteStore)
    assert store.revision is not None
    return CounterSignal(store.revision)
