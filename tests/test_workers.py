"""`server.workers = N` and reloads, with the real `gateway serve` process tree."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support import ADMIN_ENV, ADMIN_TOKEN, GatewayProcess, bearer, free_port, write_config

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def worker_pids(supervisor: int) -> list[int]:
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text().split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[3]) == supervisor and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


class Tree:
    def __init__(self, tmp_path: Path, upstream_url: str, workers: int, extra: str = "") -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.db = tmp_path / "gw.db"
        self.config = write_config(
            tmp_path / "gw.toml", upstream_url, self.db, self.port, self.admin_port, extra
        )
        self.config.write_text(
            self.config.read_text().replace(
                f"port = {self.port}\n", f"port = {self.port}\nworkers = {workers}\n", 1
            )
        )
        self.log = tmp_path / "gateway.log"
        self.process = GatewayProcess(self.config, self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"

    async def admin(
        self, session: aiohttp.ClientSession, method: str, path: str, **kw: object
    ) -> dict:
        async with session.request(method, self.admin_url + path, headers=ADMIN, **kw) as resp:  # type: ignore[arg-type]
            assert resp.status < 300, await resp.text()
            return await resp.json() if resp.status != 204 else {}

    async def mint(self, session: aiohttp.ClientSession) -> dict:
        account = await self.admin(session, "POST", "/admin/v1/accounts", json={"name": "w"})
        return account["production_key"]  # type: ignore[no-any-return]


@pytest.fixture
async def tree(tmp_path: Path, upstream: TestServer) -> AsyncIterator[Tree]:
    t = Tree(tmp_path, str(upstream.make_url("")).rstrip("/"), workers=2)
    t.process.start(t.port, t.admin_port, timeout=30)
    yield t
    t.process.stop()


async def statuses_on_fresh_connections(url: str, key: str, n: int = 24) -> list[int]:
    """Each request on its own connection, so SO_REUSEPORT spreads them over the workers."""
    out = []
    for _ in range(n):
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + "/x", headers=bearer(key)) as resp,
        ):
            out.append(resp.status)
    return out


async def test_two_workers_serve_and_honour_revocation_on_the_next_request(tree: Tree) -> None:
    workers = worker_pids(tree.process.pid)
    assert len(workers) == 2
    async with aiohttp.ClientSession() as session:
        key = await tree.mint(session)
        assert set(await statuses_on_fresh_connections(tree.url, key["key"])) == {200}
        await tree.admin(
            session,
            "PATCH",
            f"/admin/v1/accounts/{key['account_id']}",
            json={"status": "deactivated"},
        )
        assert set(await statuses_on_fresh_connections(tree.url, key["key"])) == {401}
        await tree.admin(
            session, "PATCH", f"/admin/v1/accounts/{key['account_id']}", json={"status": "active"}
        )
        assert set(await statuses_on_fresh_connections(tree.url, key["key"])) == {200}
        await tree.admin(session, "POST", f"/admin/v1/keys/{key['id']}/revoke")
        assert set(await statuses_on_fresh_connections(tree.url, key["key"])) == {401}
        await asyncio.sleep(1.3)  # workers report every second
        async with session.get(tree.admin_url + "/metrics", headers=ADMIN) as resp:
            text = await resp.text()
    assert 'gateway_requests_total{class="2xx"} 48.0' in text  # summed over both workers
    assert 'gateway_requests_total{class="4xx"} 48.0' in text
    assert "gateway_workers 2.0" in text


async def test_a_crashed_worker_is_replaced_and_service_continues(tree: Tree) -> None:
    async with aiohttp.ClientSession() as session:
        key = (await tree.mint(session))["key"]
    before = worker_pids(tree.process.pid)
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = worker_pids(tree.process.pid)
        if len(now) == 2 and before[0] not in now:
            break
        await asyncio.sleep(0.2)
    assert len(now) == 2 and before[1] in now and before[0] not in now
    await asyncio.sleep(1.0)  # the new worker has loaded its index
    assert set(await statuses_on_fresh_connections(tree.url, key)) == {200}
    assert b"exited with -9; restarting" in tree.log.read_bytes()
    # a key revoked, then a worker crash: the replacement loads the revocation from the store
    async with aiohttp.ClientSession() as session:
        revoked = await tree.mint(session)
        await tree.admin(session, "POST", f"/admin/v1/keys/{revoked['id']}/revoke")
    os.kill(worker_pids(tree.process.pid)[0], signal.SIGKILL)
    await asyncio.sleep(2.5)
    assert len(worker_pids(tree.process.pid)) == 2
    assert set(await statuses_on_fresh_connections(tree.url, revoked["key"])) == {401}


async def test_sigterm_drains_every_worker_and_keeps_usage(tree: Tree) -> None:
    async with aiohttp.ClientSession() as session:
        key = await tree.mint(session)
        await statuses_on_fresh_connections(tree.url, key["key"], 6)
        slow = asyncio.create_task(
            session.get(tree.url + "/slow?delay=1.5", headers=bearer(key["key"]))
        )
        await asyncio.sleep(0.4)
        tree.process.signal(signal.SIGTERM)
        resp = await slow
        assert resp.status == 200 and await resp.text() == "late"
        resp.release()
    assert await asyncio.get_running_loop().run_in_executor(None, tree.process.wait, 30) == 0
    import sqlite3

    with sqlite3.connect(tree.db) as db:
        (used,) = db.execute(
            "SELECT last_used_at FROM api_keys WHERE id = ?", (key["id"],)
        ).fetchone()
    assert used is not None


async def test_sighup_reloads_routes_without_dropping_connections(
    tmp_path: Path, upstream: TestServer
) -> None:
    for workers in (1, 2):
        (tmp_path / f"w{workers}").mkdir(exist_ok=True)
        t = Tree(tmp_path / f"w{workers}", str(upstream.make_url("")).rstrip("/"), workers=workers)
        t.process.start(t.port, t.admin_port, timeout=30)
        try:
            async with aiohttp.ClientSession() as session:
                account = await t.admin(
                    session,
                    "POST",
                    "/admin/v1/accounts",
                    json={"name": "r", "provision_production_key": False},
                )
                key = (
                    await t.admin(
                        session,
                        "POST",
                        "/admin/v1/keys",
                        json={"account_id": account["id"], "scopes": ["runtime:all"]},
                    )
                )["key"]
                assert set(await statuses_on_fresh_connections(t.url + "/locked", key, 6)) == {200}
                slow = asyncio.create_task(
                    session.get(t.url + "/slow?delay=1.0", headers=bearer(key))
                )
                await asyncio.sleep(0.2)
                t.config.write_text(
                    t.config.read_text()
                    + '\n[[routes]]\npath = "/locked/*"\nscopes = ["management:all"]\n'
                )
                t.process.signal(signal.SIGHUP)
                await asyncio.sleep(0.5)
                assert set(await statuses_on_fresh_connections(t.url + "/locked", key, 6)) == {403}
                resp = await slow  # in flight across the reload: untouched
                assert resp.status == 200
                resp.release()
                good = t.config.read_text()
                t.config.write_text(good + "\nbogus = 1\n")
                t.process.signal(signal.SIGHUP)
                await asyncio.sleep(0.5)
                assert set(await statuses_on_fresh_connections(t.url + "/locked", key, 6)) == {403}
            assert b"reload refused, keeping the running configuration" in t.log.read_bytes()
            assert b"bogus: unknown key" in t.log.read_bytes()
        finally:
            assert t.process.stop() == 0


async def test_sighup_applies_log_settings_to_every_worker(
    tmp_path: Path, upstream: TestServer
) -> None:
    """`[log]` is reloadable: after SIGHUP the workers' own messages follow the new format
    too, not only the supervisor's and the request lines."""
    t = Tree(tmp_path, str(upstream.make_url("")).rstrip("/"), workers=2)
    t.process.start(t.port, t.admin_port, timeout=30)
    try:
        t.config.write_text(t.config.read_text().replace('format = "json"', 'format = "text"'))
        t.process.signal(signal.SIGHUP)
        for _ in range(500):
            lines = t.log.read_text().splitlines()
            reloaded = [line for line in lines if "configuration reloaded" in line]
            if len(reloaded) == 3:  # the supervisor and both workers
                break
            await asyncio.sleep(0.01)
        assert len(reloaded) == 3, lines
        for line in reloaded:
            assert not line.startswith("{"), line
            assert " INFO gateway.supervisor: " in line, line
    finally:
        assert t.process.stop() == 0


def test_a_port_in_use_fails_start_up_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(
            tmp_path / "gw.toml", "http://127.0.0.1:1", tmp_path / "gw.db", port, free_port()
        )
        config.write_text(
            config.read_text().replace(f"port = {port}\n", f"port = {port}\nworkers = 2\n", 1)
        )
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, **{ADMIN_ENV: ADMIN_TOKEN}),
        )
    assert result.returncode == 1
    assert "cannot start: cannot listen" in result.stderr
    assert "address already in use" in result.stderr.lower()
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
