"""The store's own guarantees, on both dialects, without the HTTP layers in between."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pgcluster import PgCluster, database_name

from gateway.index import KeyIndex
from gateway.store.postgres import PostgresStore, pg_sql
from gateway.store.records import Account, Actor
from gateway.store.sql import SqlStore
from gateway.store.sqlite import SQLiteStore
from gateway.timeutil import now_us

ACTOR = Actor(actor="test")


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    cluster: PgCluster | None = None
    name = database_name(request.node.name)
    made: SqlStore
    if request.param == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        made = PostgresStore(await cluster.create_database(name))
    else:
        made = SQLiteStore(tmp_path / "s.db")
    await made.open()
    try:
        yield made
    finally:
        await made.close()
        if cluster is not None:
            await cluster.drop_database(name)


async def add_account(store: SqlStore, ident: str) -> None:
    now = now_us()
    await store.create_account(
        Account(id=ident, name=ident, status="active", created_at=now, updated_at=now), None, ACTOR
    )


async def test_the_latest_position_survives_pruning_the_change_log(store: SqlStore) -> None:
    """After pruning, the log is empty but the store has not gone back in time: a new instance
    loads at the pruned position and a poll does not see a change that is not there."""
    for i in range(3):
        await add_account(store, f"a{i}")
    latest = await store.latest_change()
    assert latest >= 3
    assert await store.prune_changes(now_us() + 1) == latest
    assert await store.latest_change() == latest
    index = KeyIndex()
    await store.snapshot(index)
    assert index.seq == latest
    changes = await store.changes_since(latest)
    assert changes is not None and changes.seq == latest
    assert await store.changes_since(latest - 1) is None  # too far back: take a snapshot
    await add_account(store, "after")
    assert await store.latest_change() > latest


async def test_a_second_migration_run_changes_nothing(store: SqlStore, tmp_path: Path) -> None:
    await add_account(store, "kept")
    again: SqlStore = (
        PostgresStore(store.url) if isinstance(store, PostgresStore) else SQLiteStore(store.path)  # type: ignore[attr-defined]
    )
    await again.open()
    try:
        got = await again.get_account("kept")
        assert got is not None and got.name == "kept"
    finally:
        await again.close()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", "SELECT 1"),
        ("a = ? AND b IN (?, ?)", "a = $1 AND b IN ($2, $3)"),
        ("?", "$1"),
    ],
)
def test_placeholders_become_numbered(sql: str, expected: Any) -> None:
    assert pg_sql(sql) == expected
