"""Access logs: one line per request with who, what and how it went; never a credential."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support import ADMIN_TOKEN, GatewayProcess, bearer, free_port, write_config

pytestmark = pytest.mark.slow


async def run_and_collect(tmp_path: Path, upstream: TestServer, fmt: str) -> tuple[str, dict, str]:
    port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path / "gw.toml",
        str(upstream.make_url("")).rstrip("/"),
        tmp_path / "gw.db",
        port,
        admin_port,
    )
    config.write_text(config.read_text().replace('format = "json"', f'format = "{fmt}"'))
    proc = GatewayProcess(config, tmp_path / "out.log")
    proc.start(port, admin_port)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"http://127.0.0.1:{admin_port}/admin/v1/accounts",
                json={"name": "logs", "id": "acct_logs"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as resp:
                key = (await resp.json())["production_key"]
            async with session.post(
                f"http://127.0.0.1:{port}/orders?secret=q",
                data=b"x" * 123,
                headers={**bearer(key["key"]), "X-Request-Id": "req-log-1"},
            ) as resp:
                assert resp.status == 200
            async with session.get(
                f"http://127.0.0.1:{port}/nope",
                headers=bearer(key["key"][:-1] + ("Z" if key["key"][-1] != "Z" else "Y")),
            ) as resp:
                assert resp.status == 401
            async with session.get(
                f"http://127.0.0.1:{port}/empty", headers={"Authorization": "Bearer "}
            ) as resp:
                assert resp.status == 401
            # A client that leaves while the upstream is still thinking.
            with pytest.raises(TimeoutError):
                async with session.get(
                    f"http://127.0.0.1:{port}/slow?delay=2",
                    headers={**bearer(key["key"]), "X-Request-Id": "req-gone"},
                    timeout=aiohttp.ClientTimeout(total=0.3),
                ):
                    pass
        await asyncio.sleep(0.5)  # the access log is flushed every tick
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{admin_port}/metrics",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as resp,
        ):
            metrics = await resp.text()
        # Nothing was sent to the client that left: no status class.
        assert 'gateway_requests_total{class="none"} 1.0' in metrics, metrics
        assert 'gateway_requests_total{class="4xx"} 2.0' in metrics, metrics
    finally:
        assert proc.stop() == 0
    return (tmp_path / "out.log").read_text(), key, key["key"]


async def test_json_access_lines_carry_the_request_story(
    tmp_path: Path, upstream: TestServer
) -> None:
    text, key, secret = await run_and_collect(tmp_path, upstream, "json")
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("msg") == "request"]
    ok = next(r for r in requests if r["request_id"] == "req-log-1")
    assert ok["method"] == "POST" and ok["path"] == "/orders" and ok["status"] == 200
    assert (
        ok["account_id"] == "acct_logs"
        and ok["key_id"] == key["id"]
        and ok["environment"] == "production"
    )
    assert ok["key_prefix"] == key["key_prefix"] and ok["upstream_status"] == 200
    assert (
        ok["bytes_in"] == 123
        and ok["bytes_out"] > 0
        and ok["duration_ms"] >= ok["upstream_ms"] >= 0
    )
    assert ok["time"].endswith("Z") and "secret=q" not in json.dumps(ok)  # the query is not logged
    refused = next(r for r in requests if r["status"] == 401)
    assert refused["reason"] == "checksum" and refused["key_prefix"] == key["key_prefix"]
    assert "key_id" not in refused
    empty = next(r for r in requests if r["path"] == "/empty")
    assert empty["status"] == 401 and empty["reason"] == "empty"
    gone = next(r for r in requests if r["request_id"] == "req-gone")
    assert gone["status"] == 499 and gone["reason"] == "client_disconnected"
    assert secret not in text and secret[11:] not in text and "Bearer" not in text
    assert any(line.get("msg", "").startswith("gateway ready") for line in lines)


async def test_text_format_is_for_people(tmp_path: Path, upstream: TestServer) -> None:
    text, key, secret = await run_and_collect(tmp_path, upstream, "text")
    line = next(line for line in text.splitlines() if "request_id=req-log-1" in line)
    assert "status=200" in line and "method=POST" in line and f"key_id={key['id']}" in line
    assert secret not in text
