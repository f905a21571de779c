"""The real `gateway serve` / `gateway demo` processes: streaming memory, restarts, graceful
shutdown, and where secrets never end up."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support import (
    ADMIN_TOKEN,
    RELEASE,
    GatewayProcess,
    bearer,
    free_port,
    write_config,
)

pytestmark = pytest.mark.slow
MB = 1024 * 1024


class Proc:
    def __init__(self, tmp_path: Path, upstream_url: str, extra: str = "") -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.db = tmp_path / "gw.db"
        self.log = tmp_path / "gateway.log"
        config = write_config(
            tmp_path / "gw.toml", upstream_url, self.db, self.port, self.admin_port, extra
        )
        self.process = GatewayProcess(config, self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        self.process.start(self.port, self.admin_port)

    async def mint(self, session: aiohttp.ClientSession, **extra: object) -> dict:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with session.post(
            self.admin_url + "/admin/v1/accounts",
            json={"name": "p", "provision_production_key": False},
            headers=headers,
        ) as resp:
            account = await resp.json()
        async with session.post(
            self.admin_url + "/admin/v1/keys",
            json={"account_id": account["id"], **extra},
            headers=headers,
        ) as resp:
            assert resp.status == 201
            return await resp.json()


@pytest.fixture
async def proc(tmp_path: Path, upstream: TestServer) -> AsyncIterator[Proc]:
    p = Proc(tmp_path, str(upstream.make_url("")).rstrip("/"))
    p.start()
    yield p
    p.process.stop()


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from support import rss_kb

        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def test_20mb_download_streams_with_flat_memory(proc: Proc) -> None:
    async with aiohttp.ClientSession() as session:
        key = (await proc.mint(session))["key"]
        async with session.get(proc.url + "/download?size=65536", headers=bearer(key)) as resp:
            await resp.read()  # warm up
        base = proc.process.rss_kb()
        size = 20 * MB
        received = 0
        with RssSampler(proc.process.pid) as rss:
            async with session.get(
                proc.url + f"/download?size={size}", headers=bearer(key)
            ) as resp:
                assert resp.status == 200
                while True:
                    chunk = await resp.content.read(65536)
                    if not chunk:
                        break
                    received += len(chunk)
                    await asyncio.sleep(0.002)  # a slow reader: the gateway must not buffer for it
        assert received == size
        growth_mb = (rss.peak - base) / 1024
        assert growth_mb < 8, f"gateway RSS grew {growth_mb:.1f} MB for a 20 MB download"


async def test_20mb_upload_streams_with_flat_memory(proc: Proc) -> None:
    async with aiohttp.ClientSession() as session:
        key = (await proc.mint(session))["key"]
        async with session.post(
            proc.url + "/slow-upload?delay=0", data=b"x" * 65536, headers=bearer(key)
        ) as resp:
            await resp.read()
        base = proc.process.rss_kb()
        block = b"u" * 65536
        total = 20 * MB
        digest = hashlib.sha256()

        async def body() -> AsyncIterator[bytes]:
            for _ in range(total // len(block)):
                digest.update(block)
                yield block

        with RssSampler(proc.process.pid) as rss:
            async with session.post(
                proc.url + "/slow-upload?delay=0.003", data=body(), headers=bearer(key)
            ) as resp:
                result = await resp.json()
        assert result == {"body_size": total, "body_sha256": digest.hexdigest()}
        growth_mb = (rss.peak - base) / 1024
        assert growth_mb < 8, f"gateway RSS grew {growth_mb:.1f} MB for a 20 MB upload"


async def test_sse_events_arrive_before_the_upstream_finishes(
    proc: Proc, upstream: TestServer
) -> None:
    async with aiohttp.ClientSession() as session:
        key = (await proc.mint(session))["key"]
        async with session.get(proc.url + "/sse", headers=bearer(key)) as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 3)
            assert first == b"data: first\n\n"
            upstream.app[RELEASE].set()
            rest = await asyncio.wait_for(resp.content.read(), 3)
            assert rest == b"data: second\n\n"


async def test_keys_survive_a_restart_and_revocations_too(
    tmp_path: Path, upstream: TestServer
) -> None:
    p = Proc(tmp_path, str(upstream.make_url("")).rstrip("/"))
    p.start()
    async with aiohttp.ClientSession() as session:
        kept = await p.mint(session)
        revoked = await p.mint(session)
        async with session.post(
            p.admin_url + f"/admin/v1/keys/{revoked['id']}/revoke",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as resp:
            assert resp.status == 200
        assert p.process.stop() == 0
        p.start()
        try:
            async with session.get(p.url + "/x", headers=bearer(kept["key"])) as resp:
                assert resp.status == 200
            async with session.get(p.url + "/x", headers=bearer(revoked["key"])) as resp:
                assert resp.status == 401
        finally:
            assert p.process.stop() == 0


async def test_usage_pending_at_shutdown_is_written_before_exit(
    tmp_path: Path, upstream: TestServer
) -> None:
    p = Proc(tmp_path, str(upstream.make_url("")).rstrip("/"))
    text = p.process.config.read_text().replace(
        "usage_flush_seconds = 0.2", "usage_flush_seconds = 3600"
    )
    p.process.config.write_text(text)
    p.start()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as session:
        key = await p.mint(session)
        async with session.get(
            p.url + "/x", headers={**bearer(key["key"]), "User-Agent": "restart/1"}
        ) as resp:
            assert resp.status == 200
        async with session.get(
            p.admin_url + f"/admin/v1/keys/{key['id']}", headers=headers
        ) as resp:
            assert (await resp.json())["last_used_at"] is None  # not flushed yet: an hour to go
        assert p.process.stop() == 0
        p.start()
        try:
            async with session.get(
                p.admin_url + f"/admin/v1/keys/{key['id']}", headers=headers
            ) as resp:
                got = await resp.json()
            assert got["last_used_at"] is not None
            assert got["last_used_user_agent"] == "restart/1"
        finally:
            p.process.stop()


async def test_sigterm_lets_an_in_flight_request_finish_then_exits_0(proc: Proc) -> None:
    async with aiohttp.ClientSession() as session:
        key = (await proc.mint(session))["key"]
        slow = asyncio.create_task(session.get(proc.url + "/slow?delay=1.5", headers=bearer(key)))
        await asyncio.sleep(0.4)
        proc.process.signal(signal.SIGTERM)
        resp = await slow
        assert resp.status == 200
        assert await resp.text() == "late"
        resp.release()
        code = await asyncio.get_running_loop().run_in_executor(None, proc.process.wait, 15)
        assert code == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proc.port), timeout=1)


async def test_plaintext_keys_are_in_neither_the_store_nor_the_logs(proc: Proc) -> None:
    async with aiohttp.ClientSession() as session:
        created = [await proc.mint(session) for _ in range(3)]
        for c in created:
            async with session.get(proc.url + "/x", headers=bearer(c["key"])) as resp:
                assert resp.status == 200
            wrong = c["key"][:-6] + "AAAAAA"
            async with session.get(proc.url + "/x", headers=bearer(wrong)) as resp:
                assert resp.status == 401
        await asyncio.sleep(0.6)  # usage write-behind
    assert proc.process.stop() == 0
    stored = b"".join(f.read_bytes() for f in proc.db.parent.glob("gw.db*"))
    logs = proc.log.read_bytes()
    for c in created:
        secret = c["key"].encode()
        assert secret not in stored
        assert secret[8:40] not in stored  # not even a fragment of the body
        assert secret not in logs and secret[12:40] not in logs
        assert hashlib.sha256(secret).digest() in stored
    assert b'"key_prefix"' in logs and b'"reason":"checksum"' in logs


def test_gateway_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, check=True
    )
    assert re.fullmatch(r"gateway \d+\.\d+\.\d+\n", out.stdout)


@pytest.fixture
def demo() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    info: dict[str, str] = {}
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    lines = []
    while time.monotonic() < deadline and "key" not in info:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.match(r"\s+key\s+: (\S+)", line):
            info["key"] = m.group(1)
        if m := re.match(r"\s+data plane : (\S+)", line):
            info["url"] = m.group(1)
        if m := re.match(r"\s+admin API\s+: (\S+)", line):
            info["admin_url"] = m.group(1)
    if not {"key", "url", "admin_url"} <= set(info):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        pytest.fail("demo did not start:\n" + "".join(lines))
    yield proc, info
    proc.stdout.close()
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)


async def test_gateway_demo_lets_the_key_through_and_refuses_without_it(
    demo: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    proc, info = demo
    async with aiohttp.ClientSession() as session:
        async with session.get(info["url"] + "/hello", headers=bearer(info["key"])) as resp:
            assert resp.status == 200
            echo = await resp.json()
        assert echo["headers"]["X-Account-Id"] == "acct_demo"
        assert "Authorization" not in echo["headers"]
        async with session.get(info["url"] + "/hello") as resp:
            assert resp.status == 401
            assert await resp.text() == "Unauthorized"
    proc.send_signal(signal.SIGINT)
    assert await asyncio.get_running_loop().run_in_executor(None, proc.wait, 15) == 0


async def test_callback_origins_survive_a_restart(tmp_path: Path, upstream: TestServer) -> None:
    p = Proc(
        tmp_path,
        str(upstream.make_url("")).rstrip("/"),
        extra='\n[[routes]]\npath = "/oauth/authorize"\ncallback_param = "redirect_uri"\n',
    )
    p.start()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    url = "/oauth/authorize?redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb"
    async with aiohttp.ClientSession() as session:
        key = await p.mint(session)
        async with session.post(
            p.admin_url + f"/admin/v1/accounts/{key['account_id']}/callback-origins",
            json={"origin": "app.example.com"},
            headers=headers,
        ) as resp:
            assert resp.status == 201
        async with session.get(p.url + url, headers=bearer(key["key"])) as resp:
            assert resp.status == 200
        assert p.process.stop() == 0
        p.start()
        try:
            async with session.get(p.url + url, headers=bearer(key["key"])) as resp:
                assert resp.status == 200
        finally:
            p.process.stop()


async def test_200_concurrent_connections_get_no_errors(proc: Proc) -> None:
    """A behaviour guard under load (never a timing assertion): every request answered, right."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        good = (await proc.mint(session))["key"]
        bad = good[:-6] + "AAAAAA"
        statuses: list[int] = []

        async def client(n: int) -> None:
            for i in range(10):
                key = bad if (n + i) % 5 == 0 else good
                method = "POST" if i % 3 == 0 else "GET"
                async with session.request(
                    method,
                    proc.url + f"/load/{n}/{i}",
                    data=b"x" * 1000 if method == "POST" else None,
                    headers=bearer(key),
                ) as resp:
                    await resp.read()
                    statuses.append(resp.status if key == good else -resp.status)

        await asyncio.gather(*(client(n) for n in range(200)))
    assert len(statuses) == 2000
    assert set(statuses) == {200, -401}
    assert statuses.count(-401) == 400
