"""Upgrades, restarts and backups (issue 14): what operators do every week, on real processes
and real store files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support import ADMIN_TOKEN, GatewayProcess, free_port, write_config

from gateway.store.schema import MIGRATIONS

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_five_processes_starting_together_on_a_fresh_sqlite_file_all_come_up(
    tmp_path: Path, upstream: TestServer
) -> None:
    """Each migrates the same new file at once; the schema is applied exactly once and each
    process serves (the second used to die with `table accounts already exists`)."""
    up = str(upstream.make_url("")).rstrip("/")
    db = tmp_path / "shared.db"
    fleet = []
    for i in range(5):
        port, admin_port = free_port(), free_port()
        config = write_config(tmp_path / f"g{i}.toml", up, db, port, admin_port)
        fleet.append((GatewayProcess(config, tmp_path / f"g{i}.log"), port, admin_port))
    try:
        await asyncio.gather(
            *(asyncio.to_thread(p.start, port, admin, 30) for p, port, admin in fleet)
        )
        async with aiohttp.ClientSession(headers=ADMIN) as s:
            for _, _, admin_port in fleet:
                url = f"http://127.0.0.1:{admin_port}/admin/v1/accounts"
                async with s.post(url, json={"name": f"A{admin_port}"}) as resp:
                    assert resp.status == 201, await resp.text()
            async with s.get(url, params={"limit": "100"}) as resp:
                assert len((await resp.json())["data"]) == 5
    finally:
        codes = [p.stop() for p, _, _ in fleet]
    assert codes == [0] * 5, [p.log_path.read_text()[-1500:] for p, _, _ in fleet]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    logs = "".join(p.log_path.read_text() for p, _, _ in fleet)
    assert "Traceback" not in logs
    # Each migration was applied by exactly one of them.
    assert logs.count("migrated to schema version 1") == 1
