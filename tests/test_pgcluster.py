"""The PostgreSQL test fixtures themselves: a working database per test, isolation between tests,
and a cluster that can be stopped under a client and started again on the same port."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from pgcluster import PgCluster, PgUnavailable, database_name

SEEN_DATABASES: set[str] = set()


async def test_pg_url_is_a_working_database(pg_url: str, pg_cluster: PgCluster) -> None:
    assert pg_url.startswith(f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/")
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == pg_url.rsplit("/", 1)[1]
        await conn.execute("CREATE TABLE keys (id serial PRIMARY KEY, name text NOT NULL)")
        await conn.executemany("INSERT INTO keys (name) VALUES ($1)", [("a",), ("b",), ("ü",)])
        rows = await conn.fetch("SELECT id, name FROM keys ORDER BY id")
        assert [(r["id"], r["name"]) for r in rows] == [(1, "a"), (2, "b"), (3, "ü")]
        assert await conn.fetchval("SHOW fsync") == "off"
    finally:
        await conn.close()


@pytest.mark.parametrize("turn", ["first", "second"])
async def test_each_test_gets_a_fresh_database_of_its_own(pg_url: str, turn: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        # Left behind by the other turn if the database were shared.
        assert await conn.fetchval("SELECT to_regclass('marker')") is None
        await conn.execute("CREATE TABLE marker (turn text)")
        await conn.execute("INSERT INTO marker VALUES ($1)", turn)
        name = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    assert name not in SEEN_DATABASES
    SEEN_DATABASES.add(name)


def test_a_synchronous_test_can_ask_for_a_database_too(pg_url: str) -> None:
    async def one() -> int:
        conn = await asyncpg.connect(pg_url)
        try:
            value: int = await conn.fetchval("SELECT 1")
            return value
        finally:
            await conn.close()

    assert asyncio.run(one()) == 1


async def test_dropping_a_database_disconnects_its_clients(pg_cluster: PgCluster) -> None:
    name = database_name("dropped")
    url = await pg_cluster.create_database(name)
    conn = await asyncpg.connect(url)
    try:
        await pg_cluster.drop_database(name)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        assert (
            await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
        )
    finally:
        await admin.close()


async def test_a_cluster_stopped_under_a_client_starts_again_on_the_same_port() -> None:
    # Its own cluster: stopping the session's would pull the floor from under other tests.
    try:
        cluster = PgCluster()
    except PgUnavailable as exc:
        pytest.skip(f"no PostgreSQL to test against: {exc}")
    with cluster:
        url = await cluster.create_database("kept")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE t (v int)")
            await conn.execute("INSERT INTO t VALUES (42)")
            port, data_dir = cluster.port, cluster.data_dir

            await asyncio.to_thread(cluster.stop)
            assert not cluster.running and not cluster.is_running()
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                await conn.fetchval("SELECT v FROM t")
            with pytest.raises(OSError):
                await asyncpg.connect(url, timeout=5)
        finally:
            conn.terminate()

        await asyncio.to_thread(cluster.start)
        assert cluster.is_running() and (cluster.port, cluster.data_dir) == (port, data_dir)
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT v FROM t") == 42
        finally:
            await conn.close()
        root = cluster.root
        assert root is not None
    assert cluster.root is None and not root.exists()
