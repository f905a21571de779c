"""Fleet mode: several `gateway serve` processes on one PostgreSQL database (contract section 8).

Real processes, a real throwaway cluster (tests/pgcluster.py), a real upstream on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pgcluster import PgCluster, database_name
from support import ADMIN_TOKEN, GatewayProcess, bearer, free_port, write_config

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


PUBLIC_STATUS = '\n[[routes]]\npath = "/status"\npublic = true\n'


class Instance:
    def __init__(
        self,
        tmp_path: Path,
        name: str,
        upstream_url: str,
        store_url: str,
        tail: str = "",
        workers: int = 1,
        **kw: Any,
    ) -> None:
        self.port, self.admin_port = free_port(), free_port()
        extra = (
            "".join(f"{k} = {v}\n" for k, v in kw.items())
            + '\n[webhooks]\nsecret_key_env = "KEYGATE_TEST_SECRET_KEY"\n'
            + tail
        )
        config = write_config(
            tmp_path / f"{name}.toml",
            upstream_url,
            tmp_path / "unused.db",
            self.port,
            self.admin_port,
            extra,
        )
        text = config.read_text().replace(
            f"port = {self.port}\n", f"port = {self.port}\nworkers = {workers}\n", 1
        )
        config.write_text(
            text.replace(f'url = "sqlite:///{tmp_path / "unused.db"}"', f'url = "{store_url}"')
        )
        self.log = tmp_path / f"{name}.log"
        self.process = GatewayProcess(config, self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        self.process.start(self.port, self.admin_port, timeout=30)

    async def admin(self, s: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> Any:
        async with s.request(method, self.admin_url + path, headers=ADMIN, **kw) as resp:
            assert resp.status < 300, await resp.text()
            self.propagation = resp.headers.get("X-Gateway-Propagation")
            return await resp.json() if resp.status != 204 else {}

    async def status(self, s: aiohttp.ClientSession, key: str, path: str = "/x") -> int:
        async with s.get(self.url + path, headers=bearer(key)) as resp:
            return resp.status


@pytest.fixture
async def fleet_db(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> Any:
    name = database_name(request.node.name)
    url = await pg_cluster.create_database(name)
    yield url
    if pg_cluster.running:
        await pg_cluster.drop_database(name)


async def until(check: Any, seconds: float) -> float:
    """Seconds until `check()` held (fails the test after `seconds`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, "not within the time allowed"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_instances_starting_together_on_an_empty_database_all_come_up_and_share_keys(
    tmp_path: Path, upstream: TestServer, fleet_db: str
) -> None:
    up = str(upstream.make_url("")).rstrip("/")
    # A poll too slow to matter: what reaches the other instances is NOTIFY.
    fleet = [Instance(tmp_path, f"gw{i}", up, fleet_db, poll_seconds=30) for i in range(5)]
    # All five migrate the same empty database at once.
    await asyncio.gather(*(asyncio.to_thread(gw.start) for gw in fleet))
    try:
        async with aiohttp.ClientSession() as s:
            a, b, c = fleet[:3]
            account = await a.admin(s, "POST", "/admin/v1/accounts", json={"name": "Fleet"})
            key = account["production_key"]
            for gw in fleet:  # a key minted on one instance authenticates on every one
                await until(lambda gw=gw: _is(gw.status(s, key["key"]), 200), 3)
            await b.admin(s, "POST", f"/admin/v1/keys/{key['id']}/revoke")
            for gw in fleet:
                await until(lambda gw=gw: _is(gw.status(s, key["key"]), 401), 3)
            # Each admin API reads the one database.
            got = await c.admin(s, "GET", f"/admin/v1/keys/{key['id']}")
            assert got["status"] == "revoked"
    finally:
        codes = [gw.process.stop() for gw in fleet]  # every one stopped before any assert
    assert codes == [0] * 5, [gw.log.read_text()[-2000:] for gw in fleet]
    for gw in fleet:
        text = gw.log.read_text()
        assert "Traceback" not in text
    logs = "".join(gw.log.read_text() for gw in fleet)
    assert logs.count("migrated to schema version 1") == 1  # by exactly one of them


async def test_notifications_resume_after_postgresql_restarts(
    tmp_path: Path, upstream: TestServer
) -> None:
    """The listening connection is lost with the server; the instance reconnects, and a change
    made after the restart reaches it (NOTIFY again, plus the change log replayed)."""
    up = str(upstream.make_url("")).rstrip("/")
    with PgCluster() as cluster:
        url = await cluster.create_database("fleet")
        a = Instance(tmp_path, "a", up, url, poll_seconds=30)
        b = Instance(tmp_path, "b", up, url, poll_seconds=30)
        a.start()
        b.start()
        try:
            async with aiohttp.ClientSession() as s:
                account = await a.admin(s, "POST", "/admin/v1/accounts", json={"name": "R"})
                key = account["production_key"]["key"]
                await until(lambda: _is(b.status(s, key), 200), 3)
                cluster.stop()
                await asyncio.sleep(0.5)
                # PostgreSQL is down: keys in memory still authenticate; the admin API
                # answers 503.
                assert await b.status(s, key) == 200
                async with s.get(a.admin_url + "/admin/v1/keys", headers=ADMIN) as resp:
                    assert resp.status == 503
                cluster.start()
                fresh = await until_ok(
                    lambda: a.admin(s, "POST", "/admin/v1/accounts", json={"name": "After"})
                )
                new_key = fresh["production_key"]["key"]
                await until(lambda: _is(b.status(s, new_key), 200), 5)
        finally:
            assert a.process.stop() == 0
            assert b.process.stop() == 0
        assert "listening for changes again" in b.log.read_text()


async def _is(status: Any, expected: int) -> bool:
    return bool(await status == expected)


async def until_ok(call: Any, seconds: float = 10.0) -> Any:
    started = time.monotonic()
    while True:
        try:
            return await call()
        except AssertionError:
            if time.monotonic() - started > seconds:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        (
            'url = "postgresql://gw:s3cret-pw@127.0.0.1:{port}/keys"',
            "cannot start: cannot open store postgresql://gw:***@127.0.0.1:{port}/keys: ",
        ),
        (
            'url = "postgresql://gw@127.0.0.1:{port}/keys"\npassword_env = "NOT_SET_ANYWHERE"',
            "cannot start: store.password_env names NOT_SET_ANYWHERE, which is not set",
        ),
    ],
)
def test_an_unreachable_or_unconfigured_database_is_one_line_without_the_password(
    tmp_path: Path, store: str, expected: str
) -> None:
    import os
    import subprocess
    import sys

    from support import ADMIN_ENV

    port = free_port()  # nothing listens there
    config = tmp_path / "g.toml"
    config.write_text(
        f'[upstream]\nurl = "http://127.0.0.1:9"\n[admin]\ntoken_env = "{ADMIN_ENV}"\n'
        f"[server]\nport = {free_port()}\n[store]\n" + store.format(port=port) + "\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, **{ADMIN_ENV: ADMIN_TOKEN}),
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("gateway: " + expected.format(port=port)), done.stderr
    assert "s3cret" not in done.stderr + done.stdout and "Traceback" not in done.stderr


async def test_a_change_through_one_instance_is_honoured_by_the_next_request_to_every_other(
    tmp_path: Path, upstream: TestServer, fleet_db: str
) -> None:
    """The revocation barrier: each change returns once every live instance applied it, so the
    very next request anywhere sees it. 50 revocations, then regenerate, delete, account
    deactivation and origin removal, each checked on B and C right after A answered."""
    up = str(upstream.make_url("")).rstrip("/")
    route = '\n[[routes]]\npath = "/oauth/authorize"\ncallback_param = "redirect_uri"\n'
    # A poll too slow to help: only the barrier and NOTIFY can make this pass.
    fleet = [
        Instance(tmp_path, f"gw{i}", up, fleet_db, tail=route, poll_seconds=30) for i in range(3)
    ]
    await asyncio.gather(*(asyncio.to_thread(gw.start) for gw in fleet))
    a, b, c = fleet
    try:
        async with aiohttp.ClientSession() as s:
            account = await a.admin(s, "POST", "/admin/v1/accounts", json={"name": "Barrier"})
            acct = account["id"]
            assert a.propagation is not None and a.propagation.startswith("confirmed=3/3; ")
            for i in range(50):
                key = await a.admin(s, "POST", "/admin/v1/keys", json={"account_id": acct})
                assert await b.status(s, key["key"]) == 200, i  # creation is propagated too
                await a.admin(s, "POST", f"/admin/v1/keys/{key['id']}/revoke")
                assert a.propagation == f"confirmed=3/3; revision={_rev(a.propagation)}"
                assert await b.status(s, key["key"]) == 401, i
                assert await c.status(s, key["key"]) == 401, i
            key = await a.admin(s, "POST", "/admin/v1/keys", json={"account_id": acct})
            new = await c.admin(s, "POST", f"/admin/v1/keys/{key['id']}/regenerate")
            assert await a.status(s, key["key"]) == 401 and await b.status(s, key["key"]) == 401
            assert await b.status(s, new["key"]) == 200
            await b.admin(s, "DELETE", f"/admin/v1/keys/{key['id']}")
            assert await a.status(s, new["key"]) == 401 and await c.status(s, new["key"]) == 401
            live = await a.admin(s, "POST", "/admin/v1/keys", json={"account_id": acct})
            origins = f"/admin/v1/accounts/{acct}/callback-origins"
            await a.admin(s, "POST", origins, json={"origin": "app.example.com"})
            authorize = "/oauth/authorize?redirect_uri=https://app.example.com/cb"
            assert await b.status(s, live["key"], authorize) == 200
            await a.admin(s, "DELETE", origins + "/app.example.com")
            assert await b.status(s, live["key"], authorize) == 403
            assert await c.status(s, live["key"], authorize) == 403
            await a.admin(s, "PATCH", f"/admin/v1/accounts/{acct}", json={"status": "deactivated"})
            assert await b.status(s, live["key"]) == 401 and await c.status(s, live["key"]) == 401
            # The self-service door waits for the fleet too.
            await a.admin(s, "PATCH", f"/admin/v1/accounts/{acct}", json={"status": "active"})
            manager = await a.admin(
                s, "POST", "/admin/v1/keys", json={"account_id": acct, "scopes": ["management:all"]}
            )
            async with s.post(
                b.url + "/api/v1/access-keys/", json={}, headers=bearer(manager["key"])
            ) as resp:
                child = await resp.json()
                assert resp.status == 201
                assert resp.headers["X-Gateway-Propagation"].startswith("confirmed=3/3; ")
            assert await c.status(s, child["key"]) == 200
            async with s.get(a.admin_url + "/metrics", headers=ADMIN) as resp:
                text = await resp.text()
            assert "gateway_fleet_instances_live 3.0" in text
            assert "gateway_propagation_seconds_count" in text
            assert "gateway_store_staleness_seconds" in text
    finally:
        codes = [gw.process.stop() for gw in fleet]
    assert codes == [0, 0, 0]


async def test_every_account_key_or_origin_write_waits_for_the_fleet_and_nothing_else(
    tmp_path: Path, upstream: TestServer, fleet_db: str
) -> None:
    """What store.propagation_timeout's description says: a rename waits too (not only what
    affects authentication); a write that changes no account, key or origin does not."""
    gw = Instance(tmp_path, "gw", str(upstream.make_url("")).rstrip("/"), fleet_db)
    gw.start()
    try:
        async with aiohttp.ClientSession() as s:
            account = await gw.admin(s, "POST", "/admin/v1/accounts", json={"name": "A"})
            key = account["production_key"]["id"]
            waited = [
                ("PATCH", f"/admin/v1/accounts/{account['id']}", {"name": "B"}),
                ("PATCH", f"/admin/v1/keys/{key}", {"name": "renamed"}),
                ("PATCH", f"/admin/v1/keys/{key}", {"description": "described"}),
            ]
            for method, path, body in waited:
                await gw.admin(s, method, path, json=body)
                assert gw.propagation is not None, (method, path, body)
                assert gw.propagation.startswith("confirmed=1/1; ")
            not_waited = [
                ("PATCH", f"/admin/v1/keys/{key}", {"name": "renamed"}),  # no change
                ("POST", f"/admin/v1/keys/{key}/signing-secret/rotate", None),
                ("POST", "/admin/v1/events", {"type": "order.paid", "key_id": key}),
            ]
            for method, path, body in not_waited:
                await gw.admin(s, method, path, json=body)
                assert gw.propagation is None, (method, path, body)
            # The OpenAPI document says the same of these operations.
            doc = await gw.admin(s, "GET", "/admin/v1/openapi.json")
            expected = [(m, p, True) for m, p, _ in waited]
            expected += [(m, p, False) for m, p, _ in not_waited[1:]]  # [0]: same operation
            for method, path, carries in expected:
                template = path.replace(account["id"], "{account_id}").replace(key, "{key_id}")
                op = doc["paths"][template][method.lower()]
                (ok,) = [a for status, a in op["responses"].items() if status < "300"]
                assert ("X-Gateway-Propagation" in ok.get("headers", {})) == carries, template
    finally:
        assert gw.process.stop() == 0


def _rev(header: str) -> str:
    return header.rpartition("revision=")[2]


async def test_an_instance_killed_stops_counting_after_node_timeout(
    tmp_path: Path, upstream: TestServer, fleet_db: str
) -> None:
    """kill -9 leaves its row behind: changes wait for it until propagation_timeout and say
    so (confirmed=1/2), until node_timeout passes and it is no longer live. Nothing
    acknowledged is lost."""
    import signal

    up = str(upstream.make_url("")).rstrip("/")
    a = Instance(tmp_path, "a", up, fleet_db, node_timeout=3, propagation_timeout=0.5)
    b = Instance(tmp_path, "b", up, fleet_db, node_timeout=3, propagation_timeout=0.5)
    a.start()
    b.start()
    try:
        async with aiohttp.ClientSession() as s:
            acct = (await a.admin(s, "POST", "/admin/v1/accounts", json={"name": "K"}))["id"]
            made = []
            for _ in range(5):
                made.append(await a.admin(s, "POST", "/admin/v1/keys", json={"account_id": acct}))
            # kill -9 in the middle of admin writes made through b: every write b
            # acknowledged is in the database afterwards.
            acknowledged: list[str] = []

            async def write_through_b() -> None:
                while True:
                    try:
                        got = await b.admin(s, "POST", "/admin/v1/keys", json={"account_id": acct})
                    except (aiohttp.ClientError, AssertionError):
                        return
                    acknowledged.append(got["id"])

            writers = [asyncio.create_task(write_through_b()) for _ in range(4)]
            await asyncio.sleep(0.5)
            b.process.signal(signal.SIGKILL)
            b.process.wait(5)
            await asyncio.gather(*writers)
            assert len(acknowledged) > 5
            for key_id in acknowledged:
                got = await a.admin(s, "GET", f"/admin/v1/keys/{key_id}")
                assert got["status"] == "active"
            started = time.monotonic()
            await a.admin(s, "POST", "/admin/v1/keys", json={"account_id": acct})
            assert a.propagation is not None and a.propagation.startswith("confirmed=1/2; ")
            assert 0.4 < time.monotonic() - started < 4.0  # propagation_timeout, not more
            await asyncio.sleep(3.2)  # node_timeout: b is no longer live
            await a.admin(s, "POST", "/admin/v1/keys", json={"account_id": acct})
            assert a.propagation.startswith("confirmed=1/1; ")
            for key in made:
                assert (await a.admin(s, "GET", f"/admin/v1/keys/{key['id']}"))["id"]
    finally:
        assert a.process.stop() == 0


async def test_an_instance_out_of_touch_with_the_store_fails_closed_and_recovers(
    tmp_path: Path, upstream: TestServer
) -> None:
    """PostgreSQL stopped under traffic: keyed requests get 503 (problem+json, Retry-After)
    within max_staleness, public routes keep answering, and all is served again once it is
    back. No worker dies."""
    up = str(upstream.make_url("")).rstrip("/")
    with PgCluster() as cluster:
        url = await cluster.create_database("stale")
        gw = Instance(
            tmp_path, "gw", up, url, tail=PUBLIC_STATUS, poll_seconds=0.2, max_staleness=1.5
        )
        gw.start()
        try:
            async with aiohttp.ClientSession() as s:
                account = await gw.admin(s, "POST", "/admin/v1/accounts", json={"name": "S"})
                key = account["production_key"]["key"]
                assert await gw.status(s, key) == 200
                cluster.stop()
                down = time.monotonic()

                async def refused() -> bool:
                    async with s.get(gw.url + "/x", headers=bearer(key)) as resp:
                        if resp.status != 503:
                            return False
                        assert resp.headers["Content-Type"] == "application/problem+json"
                        assert resp.headers["Retry-After"] == "5"
                        return True

                await until(refused, 6)
                assert time.monotonic() - down < 1.5 + 2.5  # max_staleness plus a tick or two
                async with s.get(gw.url + "/status") as resp:
                    assert resp.status == 200  # public routes need no key
                cluster.start()
                await until(lambda: _is(gw.status(s, key), 200), 15)
                assert gw.process.proc is not None and gw.process.proc.poll() is None
                # No connection leaked across the outage: at most the pool and the listener.
                import asyncpg

                conn = await asyncpg.connect(url)
                try:
                    held = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'stale'"
                        " AND pid <> pg_backend_pid()"
                    )
                finally:
                    await conn.close()
                assert 1 <= held <= 8 + 1, held
        finally:
            assert gw.process.stop() == 0
        log = gw.log.read_text()
        assert "refusing keyed requests" in log and "in touch with the store again" in log


async def test_store_copy_moves_a_populated_sqlite_store_into_postgresql(
    tmp_path: Path, upstream: TestServer, gw: Any, fleet_db: str
) -> None:
    """`gateway store copy` while the SQLite gateway keeps running: every account, key
    (revoked state and last use included), origin and audit row arrives; a gateway on the
    copy accepts and refuses exactly the same keys; a non-empty target is refused."""
    import os
    import subprocess
    import sys

    from gateway.store.postgres import PostgresStore

    account = await gw.account()
    live = account["production_key"]
    revoked = await gw.key(account["id"], name="old")
    await gw.admin("POST", f"/admin/v1/keys/{revoked['id']}/revoke")
    test_key = await gw.key(account["id"], is_test=True, name="t")
    await gw.admin(
        "POST", f"/admin/v1/accounts/{account['id']}/callback-origins", json={"origin": "a.test"}
    )
    async with gw.session.get(gw.url + "/x", headers=bearer(live["key"])) as resp:
        assert resp.status == 200

    async def used() -> bool:  # usage is written behind (usage_flush_seconds = 0.2)
        _, got = await gw.admin("GET", f"/admin/v1/keys/{live['id']}")
        return got["last_used_at"] is not None

    await until(used, 10)
    # A gateway already running on the empty target picks the copy up by itself.
    up = str(upstream.make_url("")).rstrip("/")
    pg = Instance(tmp_path, "pg", up, fleet_db, poll_seconds=0.2)
    pg.start()
    try:
        config = write_config(
            tmp_path / "g.toml", "http://127.0.0.1:9", tmp_path / "gateway.db", free_port(), 0
        )

        def copy() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "store",
                    "copy",
                    "--config",
                    str(config),
                    "--to",
                    fleet_db,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env=dict(os.environ),
            )

        done = await asyncio.to_thread(copy)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("copied 1 accounts, 3 keys, 1 callback origins and ")
        assert done.stdout.rstrip().endswith("counts verified")
        target = PostgresStore(fleet_db)
        await target.open()
        try:
            for key in (live, revoked, test_key):
                status, original = await gw.admin("GET", f"/admin/v1/keys/{key['id']}")
                copied = await target.get_key(key["id"])
                assert copied is not None
                assert (copied.revoked_at is not None) == (key is revoked)
                assert (copied.revoked_at is not None) == (original["status"] == "revoked")
                assert copied.is_test == original["is_test"]
            assert (await target.get_key(live["id"])).last_used_at is not None  # type: ignore[union-attr]
            origins, _ = await target.list_origins(account["id"], limit=10, cursor=None)
            assert [o for o, _ in origins] == ["a.test"]
            _, page = await gw.admin("GET", "/admin/v1/audit", params={"limit": 500})
            entries, _ = await target.list_audit(limit=500, cursor=None)
            assert [e.id for e in entries] == [e["id"] for e in page["data"]]
        finally:
            await target.close()
        # The gateway on the copy: the same keys in, the same keys out.
        async with aiohttp.ClientSession() as s:
            await until(lambda: _is(pg.status(s, live["key"]), 200), 5)
            assert await pg.status(s, test_key["key"]) == 200
            assert await pg.status(s, revoked["key"]) == 401
            # The change log continues after the position the instance loaded the copy at:
            # the first change on the copy, a revocation, is honoured by the next request.
            await pg.admin(s, "POST", f"/admin/v1/keys/{live['id']}/revoke")
            assert await pg.status(s, live["key"]) == 401
            # New audit rows continue after the copied ones.
            await pg.admin(s, "POST", "/admin/v1/keys", json={"account_id": account["id"]})
    finally:
        assert pg.process.stop() == 0
    again = await asyncio.to_thread(copy)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith(
        "gateway: cannot copy: the target store is not empty (1 accounts, 4 api_keys, "
        "1 callback_origins, "
    )
    assert line.endswith(" audit_log): copy into an empty one")


async def test_a_healthy_idle_instance_stays_open_between_slow_polls(
    tmp_path: Path, upstream: TestServer, fleet_db: str
) -> None:
    """Contact is confirmed by the heartbeat while the listening connection is up and nothing
    announced is unapplied, not only by the poll: no spurious 503 when poll_seconds is longer
    than max_staleness."""
    up = str(upstream.make_url("")).rstrip("/")
    gw = Instance(tmp_path, "idle", up, fleet_db, poll_seconds=30, max_staleness=1.5)
    gw.start()
    try:
        async with aiohttp.ClientSession() as s:
            key = (await gw.admin(s, "POST", "/admin/v1/accounts", json={"name": "I"}))[
                "production_key"
            ]["key"]
            for _ in range(8):  # 4 s: well past max_staleness, far short of a poll
                assert await gw.status(s, key) == 200
                await asyncio.sleep(0.5)
    finally:
        assert gw.process.stop() == 0


async def test_every_worker_of_an_instance_is_a_member_of_the_fleet(
    tmp_path: Path, upstream: TestServer, fleet_db: str
) -> None:
    """With workers = 2 each worker keeps its own index, so each registers and confirms: a
    revocation through another instance answers confirmed=3/3 and no worker serves the key."""
    up = str(upstream.make_url("")).rstrip("/")
    a = Instance(tmp_path, "a", up, fleet_db, workers=2, poll_seconds=30)
    b = Instance(tmp_path, "b", up, fleet_db, poll_seconds=30)
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    try:
        async with aiohttp.ClientSession() as s:
            acct = (await b.admin(s, "POST", "/admin/v1/accounts", json={"name": "W"}))["id"]
            for _ in range(10):
                key = await b.admin(s, "POST", "/admin/v1/keys", json={"account_id": acct})
                assert b.propagation is not None and b.propagation.startswith("confirmed=3/3;")
                await b.admin(s, "POST", f"/admin/v1/keys/{key['id']}/revoke")
                assert b.propagation.startswith("confirmed=3/3;")
                # New connections land on either worker (SO_REUSEPORT): ask both, many times.
                for _ in range(6):
                    async with aiohttp.ClientSession() as fresh:
                        assert await a.status(fresh, key["key"]) == 401
    finally:
        codes = [a.process.stop(), b.process.stop()]
    assert codes == [0, 0]


async def test_expiry_notices_and_deliveries_happen_once_across_the_fleet(
    tmp_path: Path, upstream: TestServer, fleet_db: str, aiohttp_server: Any
) -> None:
    """Three instances each look for expiring keys and each send from the one outbox: every
    key hears `key.expiring` once and `key.expired` once, and no delivery is sent twice."""
    from aiohttp import web
    from standardwebhooks import Webhook

    seen: list[tuple[str, str]] = []
    secrets: dict[str, str] = {}

    async def hook(request: web.Request) -> web.Response:
        body = await request.text()
        headers = {k.lower(): v for k, v in request.headers.items()}
        key_id = json.loads(body)["data"]["key_id"]
        event = Webhook(secrets[key_id]).verify(body, headers)
        seen.append((headers["webhook-id"], f"{event['data']['key']['id']} {event['type']}"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    receiver = await aiohttp_server(app)
    tail = (
        'allow_http_hosts = ["127.0.0.1"]\nallow_networks = ["127.0.0.0/8"]\n'
        f"expiry_warning_days = {2 / 86400}\n"
    )
    up = str(upstream.make_url("")).rstrip("/")
    fleet = [Instance(tmp_path, f"gw{i}", up, fleet_db, tail=tail) for i in range(3)]
    await asyncio.gather(*(asyncio.to_thread(gw.start) for gw in fleet))
    try:
        async with aiohttp.ClientSession() as s:
            # Far enough ahead that every key exists before its warning falls due.
            expires_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 8))
            for i in range(12):
                gw = fleet[i % 3]
                account = await gw.admin(
                    s,
                    "POST",
                    "/admin/v1/accounts",
                    json={"name": f"A{i}", "provision_production_key": False},
                )
                body = {
                    "account_id": account["id"],
                    "expires_at": expires_at,
                    "webhook_url": str(receiver.make_url("/hook")),
                    "webhook_events": ["key.expiring", "key.expired"],
                }
                key = await gw.admin(s, "POST", "/admin/v1/keys", json=body)
                secrets[key["id"]] = key["signing_secret"]
            expected = {f"{k} {t}" for k in secrets for t in ("key.expiring", "key.expired")}

            async def all_heard() -> bool:
                return len(seen) >= len(expected)

            await until(all_heard, 20)
            await asyncio.sleep(2.0)  # time for a duplicate to show itself
    finally:
        codes = [gw.process.stop() for gw in fleet]
    assert codes == [0, 0, 0]
    assert sorted(what for _, what in seen) == sorted(expected)
    assert len({webhook_id for webhook_id, _ in seen}) == len(seen)
