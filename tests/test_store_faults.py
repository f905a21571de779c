"""The store failing under a running gateway: the data plane keeps authenticating from memory,
admin writes answer 503 and leave nothing half-written, and service resumes by itself. And a
`kill -9` in the middle of admin writes loses nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support import ADMIN_TOKEN, GatewayProcess, Running, bearer, free_port, write_config

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def data(gw: Running, key: str) -> int:
    async with gw.session.get(gw.url + "/v1/auth", headers=bearer(key)) as resp:
        return resp.status


class Locker:
    """Another process's view of the file: an exclusive lock held in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.locked = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        db.execute("BEGIN IMMEDIATE")  # holds the write lock, as a stuck writer elsewhere would
        db.execute("UPDATE meta SET value = value WHERE name = 'changes_pruned_through'")
        self.locked.set()
        self.release.wait(30)
        db.execute("ROLLBACK")
        db.close()

    def __enter__(self) -> Locker:
        self.thread.start()
        assert self.locked.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)


async def test_a_locked_store_keeps_the_data_plane_up_and_admin_writes_503(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    known = await gw.key(account["id"])
    unknown = (await gw.key(account["id"]))["key"][:-8] + "AAAAAAAA"
    with Locker(gw.gateway.store.path):
        for _ in range(20):
            assert await data(gw, known["key"]) == 200
        assert await data(gw, unknown) == 401
        status, problem = await gw.admin(
            "POST", "/admin/v1/keys", json={"account_id": account["id"], "name": "during"}
        )
        assert status == 503 and problem["status"] == 503
        assert "locked" not in str(problem)  # no store internals in the answer
        status, _ = await gw.admin("POST", f"/admin/v1/keys/{known['id']}/revoke")
        assert status == 503
        assert await data(gw, known["key"]) == 200  # the refused revocation did not happen
    # the lock is gone: service resumes by itself
    status, created = await gw.admin(
        "POST", "/admin/v1/keys", json={"account_id": account["id"], "name": "after"}
    )
    assert status == 201
    assert await data(gw, created["key"]) == 200
    status, page = await gw.admin("GET", "/admin/v1/keys", params={"account_id": account["id"]})
    names = {k["name"] for k in page["data"]}
    assert "after" in names and known["name"] in names and "during" not in names
    assert len(page["data"]) == 3  # known, the one made for `unknown`, and "after"
    status, _ = await gw.admin("POST", f"/admin/v1/keys/{known['id']}/revoke")
    assert status == 200
    assert await data(gw, known["key"]) == 401


async def test_a_read_only_store_refuses_writes_and_recovers(gw: Running) -> None:
    account = await gw.account()
    key = account["production_key"]["key"]
    writer = gw.gateway.store._writer
    assert writer is not None
    await writer.execute("PRAGMA query_only = ON")
    try:
        status, _ = await gw.admin(
            "POST", "/admin/v1/accounts", json={"name": "ro", "id": "acct_ro"}
        )
        assert status == 503
        assert await data(gw, key) == 200
    finally:
        await writer.execute("PRAGMA query_only = OFF")
    assert (await gw.admin("GET", "/admin/v1/accounts/acct_ro"))[0] == 404  # nothing half-made
    status, _ = await gw.admin("POST", "/admin/v1/accounts", json={"name": "ro", "id": "acct_ro"})
    assert status == 201


async def test_a_full_disk_leaves_nothing_half_written(gw: Running) -> None:
    key = (await gw.account())["production_key"]["key"]
    writer = gw.gateway.store._writer
    assert writer is not None
    async with writer.execute("PRAGMA page_count") as cur:
        (pages,) = await cur.fetchone()  # type: ignore[misc]
    await writer.execute(f"PRAGMA max_page_count = {pages}")
    refused = []
    try:
        for i in range(300):
            status, _ = await gw.admin(
                "POST", "/admin/v1/accounts", json={"name": "x" * 250, "id": f"acct_full_{i}"}
            )
            if status == 503:
                refused.append(f"acct_full_{i}")
            if len(refused) >= 3:
                break
        assert refused, "the page limit never hit"
        assert await data(gw, key) == 200
    finally:
        await writer.execute("PRAGMA max_page_count = 4294967294")
    for account_id in refused:
        assert (await gw.admin("GET", f"/admin/v1/accounts/{account_id}"))[0] == 404
        _, audit = await gw.admin("GET", "/admin/v1/audit", params={"account_id": account_id})
        assert audit["data"] == []  # no audit row for a change that did not happen
        _, keys = await gw.admin("GET", "/admin/v1/keys", params={"account_id": account_id})
        assert keys["data"] == []  # nor its production key
    status, _ = await gw.admin(
        "POST", "/admin/v1/accounts", json={"name": "after", "id": "acct_after_full"}
    )
    assert status == 201


@pytest.mark.slow
async def test_kill_9_during_admin_writes_loses_nothing_acknowledged(
    tmp_path: Path, upstream: TestServer
) -> None:
    port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path / "gw.toml",
        str(upstream.make_url("")).rstrip("/"),
        tmp_path / "gw.db",
        port,
        admin_port,
    )
    proc = GatewayProcess(config, tmp_path / "out.log")
    proc.start(port, admin_port)
    admin = f"http://127.0.0.1:{admin_port}"
    created: dict[str, str] = {}  # key id -> secret, acknowledged with 201
    revoked: set[str] = set()  # acknowledged with 200
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        async with session.post(
            admin + "/admin/v1/accounts",
            json={"name": "crash", "id": "acct_crash", "provision_production_key": False},
        ) as resp:
            assert resp.status == 201

        async def writer_loop(n: int) -> None:
            rng = random.Random(n)
            while True:
                try:
                    if created and rng.random() < 0.3:
                        key_id = rng.choice(sorted(created))
                        async with session.post(admin + f"/admin/v1/keys/{key_id}/revoke") as resp:
                            if resp.status == 200:
                                revoked.add(key_id)
                    else:
                        async with session.post(
                            admin + "/admin/v1/keys", json={"account_id": "acct_crash"}
                        ) as resp:
                            if resp.status == 201:
                                body = await resp.json()
                                created[body["id"]] = body["key"]
                except (TimeoutError, aiohttp.ClientError):
                    return

        writers = [asyncio.create_task(writer_loop(n)) for n in range(6)]
        await asyncio.sleep(1.5)
        proc.signal(signal.SIGKILL)
        await asyncio.gather(*writers)
        proc.wait(10)
        assert len(created) > 20
        proc.start(port, admin_port)
        try:
            entries: list[dict] = []
            cursor = None
            while True:
                params = {"account_id": "acct_crash", "limit": "500"} | (
                    {"cursor": cursor} if cursor else {}
                )
                async with session.get(admin + "/admin/v1/audit", params=params) as resp:
                    page = await resp.json()
                entries += page["data"]
                cursor = page["next_cursor"]
                if not cursor:
                    break
            audited_created = {e["key_id"] for e in entries if e["action"] == "key.created"}
            audited_revoked = {e["key_id"] for e in entries if e["action"] == "key.revoked"}
            assert set(created) <= audited_created
            assert revoked <= audited_revoked
            for key_id, secret in created.items():
                async with session.get(
                    f"http://127.0.0.1:{port}/v1/auth", headers=bearer(secret)
                ) as resp:
                    expected = 401 if key_id in audited_revoked else 200
                    assert resp.status == expected, (key_id, key_id in revoked)
            with sqlite3.connect(tmp_path / "gw.db") as db:
                rows = {
                    r[0]
                    for r in db.execute("SELECT id FROM api_keys WHERE account_id = 'acct_crash'")
                }
            assert rows == audited_created  # every stored key has its audit row, and the reverse
        finally:
            assert proc.stop() == 0
