"""Upgrades, restarts and backups (issue 14): what operators do every week, on real processes
and real store files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support import ADMIN_ENV, ADMIN_TOKEN, GatewayProcess, bearer, free_port, write_config

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


PREVIOUS_RELEASE = "2cb2c61"  # the last landed release (schema 4); move on as releases land
PREVIOUS_SCHEMA = 4


def gateway_cli(*args: str, code: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **{ADMIN_ENV: ADMIN_TOKEN})
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=code,
        timeout=60,
    )


def previous_schema_store(path: Path) -> None:
    """A store as the previous release left it: its migrations (the first PREVIOUS_SCHEMA of
    ours: migrations are only ever appended), an account and a key long expired."""
    with sqlite3.connect(path) as conn:
        for script in MIGRATIONS[:PREVIOUS_SCHEMA]:
            conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {PREVIOUS_SCHEMA}")
        conn.execute("INSERT INTO accounts VALUES ('acct_old', 'Old', 'active', 1, 1)")
        conn.execute(
            "INSERT INTO api_keys (id, account_id, name, key_hash, key_prefix, key_last4, scopes,"
            " is_test, expires_at, created_at, updated_at, created_by)"
            " VALUES ('key_old', 'acct_old', 'old', ?, 'sk_live_abc', 'wxyz', '[]', 0, 5, 1, 1,"
            " 'admin')",
            (b"h" * 32,),
        )
    conn.close()
    path.chmod(0o600)


def test_migrate_reports_applies_and_serve_can_refuse_a_store_behind(
    tmp_path: Path, upstream: TestServer
) -> None:
    db = tmp_path / "old.db"
    previous_schema_store(db)
    port, admin_port = free_port(), free_port()
    up = str(upstream.make_url("")).rstrip("/")
    strict = write_config(
        tmp_path / "strict.toml", up, db, port, admin_port, "migrate_on_start = false\n"
    )
    latest, pending = len(MIGRATIONS), len(MIGRATIONS) - PREVIOUS_SCHEMA

    done = gateway_cli("migrate", "--config", str(strict), "--check")
    assert done.returncode == 1, done
    assert done.stdout == (
        f"store sqlite:///{db}: schema version {PREVIOUS_SCHEMA}, this gateway's is {latest}:"
        f" {pending} migration{'s' * (pending != 1)} pending\n"
    )
    done = gateway_cli("store", "check", "--config", str(strict))
    assert done.returncode == 1 and "behind this gateway's" in done.stdout, done
    # Step 1 of an upgrade: a backup of a store that is behind is a good backup.
    done = gateway_cli("store", "backup", "--config", str(strict), "--to", str(tmp_path / "b.db"))
    assert done.returncode == 0 and f"schema version {PREVIOUS_SCHEMA};" in done.stdout, done
    # migrate_on_start = false: serve refuses, in one line naming the command to run.
    done = gateway_cli("serve", "--config", str(strict))
    assert done.returncode == 1, done
    assert done.stderr.count("\n") == 1 and "gateway migrate --config" in done.stderr, done
    assert "Traceback" not in done.stderr + done.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == PREVIOUS_SCHEMA

    done = gateway_cli("migrate", "--config", str(strict))
    assert done.returncode == 0, done
    assert done.stdout == (
        f"store sqlite:///{db}: migrated from schema version {PREVIOUS_SCHEMA} to {latest}\n"
    )
    done = gateway_cli("migrate", "--config", str(strict), "--check")
    assert (done.returncode, done.stdout) == (
        0,
        f"store sqlite:///{db}: schema version {latest}, up to date\n",
    )
    done = gateway_cli("store", "check", "--config", str(strict))
    assert done.returncode == 0, done
    assert f"schema version {latest}; 1 accounts, 1 keys, 0 revoked keys" in done.stdout
    assert done.stdout.rstrip().endswith("; intact")
    with sqlite3.connect(db) as conn:  # a key that expired before the upgrade: no late news
        assert conn.execute("SELECT expiry_notice FROM api_keys").fetchone()[0] == 2
    conn.close()
    # A store a newer release migrated in a way this one cannot follow is refused by every
    # command, in one line.
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'compatible_from'").fetchone()
        conn.execute(f"PRAGMA user_version = {latest + 1}")
        conn.execute(f"UPDATE meta SET value = {latest + 1} WHERE name = 'compatible_from'")
    conn.close()
    for args in (("migrate", "--config", str(strict)), ("serve", "--config", str(strict))):
        done = gateway_cli(*args)
        assert done.returncode == 1 and "upgrade the gateway" in done.stderr, done
        assert done.stderr.count("\n") == 1
    # ... unless the release that migrated it says this one still runs on it.
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE meta SET value = {latest} WHERE name = 'compatible_from'")
    conn.close()
    done = gateway_cli("migrate", "--config", str(strict))
    assert done.returncode == 0 and "newer than this gateway's" in done.stdout, done
    server = GatewayProcess(strict, tmp_path / "newer.log")
    server.start(port, admin_port)
    assert server.stop() == 0
    assert "still run on it: serving" in server.log_path.read_text()
    # Checking never makes a store.
    missing = write_config(
        tmp_path / "missing.toml", up, tmp_path / "nope" / "x.db", port, admin_port
    )
    for args in (("migrate", "--check"), ("store", "check")):
        done = gateway_cli(*args, "--config", str(missing))
        assert done.returncode == 1 and "does not exist" in done.stderr, done
    assert not (tmp_path / "nope").exists()


async def test_an_old_release_keeps_serving_while_the_store_is_upgraded_beside_it(
    tmp_path: Path, upstream: TestServer
) -> None:
    """Expand, then contract: the previous release runs on the store while `gateway migrate`
    and then a new release start on it; traffic through the old process never fails, and
    each process honours keys and revocations made through the other."""
    root = Path(__file__).resolve().parents[1]
    found = subprocess.run(
        ["git", "-C", str(root), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
        capture_output=True,
    )
    if found.returncode != 0:
        pytest.skip(f"release {PREVIOUS_RELEASE} is not in this clone's history")
    old_code = tmp_path / "previous"
    old_code.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", PREVIOUS_RELEASE, "gateway"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(old_code)], input=archive.stdout, check=True)

    up = str(upstream.make_url("")).rstrip("/")
    db = tmp_path / "shared.db"
    ports = [(free_port(), free_port()) for _ in range(2)]
    old_cfg = write_config(tmp_path / "old.toml", up, db, *ports[0])
    new_cfg = write_config(tmp_path / "new.toml", up, db, *ports[1])
    old = GatewayProcess(old_cfg, tmp_path / "old.log", code=old_code)
    new = GatewayProcess(new_cfg, tmp_path / "new.log")
    old_url, old_admin = (f"http://127.0.0.1:{p}" for p in ports[0])
    new_url, new_admin = (f"http://127.0.0.1:{p}" for p in ports[1])
    old.start(*ports[0])
    failures: list[int] = []
    served = 0
    try:
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == PREVIOUS_SCHEMA
        conn.close()
        async with aiohttp.ClientSession(headers=ADMIN) as s:
            async with s.post(old_admin + "/admin/v1/accounts", json={"name": "Old"}) as resp:
                old_key = (await resp.json())["production_key"]

            async def traffic() -> None:
                nonlocal served
                async with aiohttp.ClientSession() as c:
                    while True:
                        async with c.get(old_url + "/x", headers=bearer(old_key["key"])) as r:
                            served += 1
                            if r.status != 200:
                                failures.append(r.status)
                        await asyncio.sleep(0.005)

            flowing = asyncio.get_running_loop().create_task(traffic())
            await asyncio.sleep(0.3)
            done = await asyncio.to_thread(gateway_cli, "migrate", "--config", str(new_cfg))
            assert done.returncode == 0 and "migrated from schema version 4" in done.stdout, done
            await asyncio.to_thread(new.start, *ports[1])
            await asyncio.sleep(0.3)
            flowing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flowing
            assert served > 20 and failures == [], (served, failures)

            # Keys made on either side work on both; the old admin API still writes.
            async with s.post(new_admin + "/admin/v1/accounts", json={"name": "New"}) as resp:
                new_key = (await resp.json())["production_key"]
            account = old_key["account_id"]
            body = {"account_id": account, "is_test": True, "name": "from-old"}
            async with s.post(old_admin + "/admin/v1/keys", json=body) as resp:
                assert resp.status == 201, await resp.text()
                from_old = await resp.json()
            for key in (old_key, new_key, from_old):
                for url in (old_url, new_url):
                    assert await status_of(url, key["key"]) == 200, (url, key["name"])
            # A revocation through the new release is honoured by the old one at once.
            async with s.post(new_admin + f"/admin/v1/keys/{old_key['id']}/revoke") as resp:
                assert resp.status == 200
            assert await status_of(old_url, old_key["key"]) == 401
            async with s.post(old_admin + f"/admin/v1/keys/{new_key['id']}/revoke") as resp:
                assert resp.status == 200
            assert await status_of(new_url, new_key["key"]) == 401
    finally:
        codes = [old.stop(), new.stop()]
    assert codes == [0, 0], (old.log_path.read_text()[-2000:], new.log_path.read_text()[-2000:])
    for proc in (old, new):
        assert "Traceback" not in proc.log_path.read_text()


async def status_of(url: str, key: str) -> int:
    async with aiohttp.ClientSession() as c, c.get(url + "/x", headers=bearer(key)) as resp:
        return resp.status


async def test_a_backup_taken_under_write_load_holds_every_acknowledged_key(
    tmp_path: Path, upstream: TestServer
) -> None:
    up = str(upstream.make_url("")).rstrip("/")
    db = tmp_path / "live.db"
    port, admin_port = free_port(), free_port()
    config = write_config(tmp_path / "live.toml", up, db, port, admin_port)
    proc = GatewayProcess(config, tmp_path / "live.log")
    proc.start(port, admin_port)
    acknowledged: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession(headers=ADMIN) as s:

            async def write_load() -> None:
                admin = f"http://127.0.0.1:{admin_port}/admin/v1/accounts"
                while True:
                    async with s.post(admin, json={"name": "Load"}) as resp:
                        assert resp.status == 201
                        acknowledged.append((await resp.json())["production_key"])

            load = asyncio.get_running_loop().create_task(write_load())
            while len(acknowledged) < 30:
                await asyncio.sleep(0.01)
            before = list(acknowledged)
            backup = tmp_path / "backups" / "b.db"
            backup.parent.mkdir()
            done = await asyncio.to_thread(
                gateway_cli, "store", "backup", "--config", str(config), "--to", str(backup)
            )
            during = len(acknowledged)
            await asyncio.sleep(0.2)
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
    finally:
        assert proc.stop() == 0
    assert done.returncode == 0, done
    assert during > len(before), "the load kept writing while the backup ran"
    first, second = done.stdout.splitlines()
    assert first.startswith(f"backed up sqlite:///{db} to {backup}: schema version")
    assert first.endswith("; intact") and "secret.key" in second
    assert backup.stat().st_mode & 0o777 == 0o600
    # Restore: a gateway on the copy knows every key acknowledged before the backup began.
    port, admin_port = free_port(), free_port()
    restored_cfg = write_config(tmp_path / "restored.toml", up, backup, port, admin_port)
    done = gateway_cli("store", "check", "--config", str(restored_cfg))
    assert done.returncode == 0 and done.stdout.rstrip().endswith("; intact"), done
    restored = GatewayProcess(restored_cfg, tmp_path / "restored.log")
    restored.start(port, admin_port)
    try:
        for key in before:
            assert await status_of(f"http://127.0.0.1:{port}", key["key"]) == 200
    finally:
        assert restored.stop() == 0
    # A backup never overwrites; PostgreSQL is pointed to pg_dump, without the password.
    done = gateway_cli("store", "backup", "--config", str(config), "--to", str(backup))
    assert done.returncode == 1 and "exists" in done.stderr, done
    pg_cfg = tmp_path / "pg.toml"
    pg_cfg.write_text(
        config.read_text().replace(
            f'url = "sqlite:///{db}"', 'url = "postgresql://ops:hunter2@127.0.0.1:5/keys"'
        )
    )
    done = gateway_cli("store", "backup", "--config", str(pg_cfg), "--to", "x.dump")
    assert done.returncode == 2 and "pg_dump" in done.stderr and "***" in done.stderr, done
    assert "hunter2" not in done.stderr + done.stdout


async def test_the_first_change_after_a_store_copy_reaches_gateways_on_the_copy(
    tmp_path: Path, upstream: TestServer
) -> None:
    """A gateway already running on the empty target loads the copy by itself; the first
    change made on the copy afterwards (a revocation) is honoured by its next request. The
    change log had to continue after the position that gateway loaded, not restart below it."""
    up = str(upstream.make_url("")).rstrip("/")
    port, admin_port = free_port(), free_port()
    source_cfg = write_config(
        tmp_path / "source.toml", up, tmp_path / "source.db", port, admin_port
    )
    source = GatewayProcess(source_cfg, tmp_path / "source.log")
    source.start(port, admin_port)
    try:
        async with aiohttp.ClientSession(headers=ADMIN) as s:
            accounts = f"http://127.0.0.1:{admin_port}/admin/v1/accounts"
            async with s.post(accounts, json={"name": "Copied"}) as resp:
                assert resp.status == 201
                key = (await resp.json())["production_key"]
    finally:
        assert source.stop() == 0
    port, admin_port = free_port(), free_port()
    target_db = tmp_path / "target.db"
    target_cfg = write_config(tmp_path / "target.toml", up, target_db, port, admin_port)
    target = GatewayProcess(target_cfg, tmp_path / "target.log")
    target.start(port, admin_port)
    url = f"http://127.0.0.1:{port}"
    try:
        assert await status_of(url, key["key"]) == 401
        done = await asyncio.to_thread(
            gateway_cli,
            "store",
            "copy",
            "--config",
            str(source_cfg),
            "--to",
            f"sqlite:///{target_db}",
        )
        assert done.returncode == 0, done
        for _ in range(500):
            if await status_of(url, key["key"]) == 200:
                break
            await asyncio.sleep(0.01)
        assert await status_of(url, key["key"]) == 200, "the running gateway loaded the copy"
        revoke = f"http://127.0.0.1:{admin_port}/admin/v1/keys/{key['id']}/revoke"
        async with aiohttp.ClientSession(headers=ADMIN) as s, s.post(revoke) as resp:
            assert resp.status == 200, await resp.text()
        assert await status_of(url, key["key"]) == 401
    finally:
        assert target.stop() == 0
