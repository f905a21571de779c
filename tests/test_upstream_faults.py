"""A deliberately bad upstream: every fault gets the right answer, the gateway keeps serving
valid traffic afterwards, and no connection or file descriptor is leaked."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from support import Running, bearer, free_port, gateway, raw_exchange, raw_upstream, read_for

GOOD = web.AppKey("good", str)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settle(gw: Running) -> int:
    """Drop pooled idle connections and let closes land; then count descriptors."""
    for pool in gw.gateway.plane.pools():
        for up in pool.idle:
            if up.transport is not None:
                up.transport.close()
        pool.idle.clear()
    for _ in range(20):
        await asyncio.sleep(0.05)
        ctx = gw.gateway.plane.ctx
        if not ctx.connections and not ctx.busy_upstreams:
            break
    return open_fds()


async def get(
    gw: Running, key: str, path: str, method: str = "GET", data: bytes | None = None
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gw.url + path, headers=bearer(key), data=data) as resp,
    ):
        return resp.status, await resp.read()


async def healthy_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ("silent", 504),
        ("reset_mid_headers", 502),
        ("malformed", 502),
        ("close_without_answer", 502),
        ("garbage_status", 502),
        ("switching_protocols", 502),
    ],
)
async def test_upstream_faults_are_answered_and_leak_nothing(
    tmp_path: Path, fault: str, status: int
) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"/healthy" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        elif fault == "silent":
            with contextlib.suppress(ConnectionError):
                await reader.read()  # never answers; returns when the gateway gives up on it
        elif fault == "reset_mid_headers":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Ty")
            await writer.drain()
            writer.transport.abort()
        elif fault == "malformed":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nok")
        elif fault == "garbage_status":
            writer.write(b"SMTP ready\r\n\r\n")
        elif fault == "switching_protocols":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        await writer.drain()

    async with (
        raw_upstream(bad) as url,
        gateway(tmp_path, url, upstream={"read_timeout": 0.5}) as (gw, key),
    ):
        assert (await get(gw, key, "/healthy"))[0] == 200
        baseline = await settle(gw)
        for _ in range(3):
            got, body = await get(gw, key, "/fault")
            assert got == status, body
            assert b"application/problem" not in body or b"Errno" not in body
        assert (await get(gw, key, "/healthy"))[0] == 200  # still serving
        assert await settle(gw) <= baseline


async def test_unreachable_upstream_is_502_and_leaks_nothing(tmp_path: Path) -> None:
    async with gateway(tmp_path, f"http://127.0.0.1:{free_port()}") as (gw, key):
        await get(gw, key, "/x")
        baseline = await settle(gw)
        for _ in range(5):
            assert (await get(gw, key, "/x"))[0] == 502
        assert await settle(gw) <= baseline


async def test_a_slow_drip_stays_alive_past_the_read_timeout(tmp_path: Path) -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(8):  # 2.4 s in all, never 0.6 s without a byte
            writer.write(b"2\r\n%02d\r\n" % i)
            await writer.drain()
            await asyncio.sleep(0.3)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with (
        raw_upstream(drip) as url,
        gateway(tmp_path, url, upstream={"read_timeout": 0.6}) as (gw, key),
    ):
        status, body = await get(gw, key, "/drip")
    assert status == 200 and body == b"".join(b"%02d" % i for i in range(8))


async def test_a_pooled_connection_closed_under_a_request_is_retried_only_when_safe(
    tmp_path: Path,
) -> None:
    requests_seen: list[bytes] = []

    async def one_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Keep-alive on the first request, then close the moment the next one arrives."""
        first = True
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            requests_seen.append(head.split(b"\r\n")[0])
            if not first:
                return  # closes without answering: the race every keep-alive pool meets
            first = False
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with (
        raw_upstream(one_per_connection) as url,
        gateway(tmp_path, url) as (gw, key),
        aiohttp.ClientSession() as session,
    ):

        async def call(method: str, data: bytes | None = None) -> int:
            async with session.request(
                method, gw.url + "/r", headers=bearer(key), data=data
            ) as resp:
                await resp.read()
                return resp.status

        assert await call("GET") == 200  # opens the pooled connection
        assert await call("GET") == 200  # pooled one closes under it: retried on a fresh one
        assert requests_seen.count(b"GET /r HTTP/1.1") == 3
        assert await call("POST", b"payload") == 502  # never retried: it may have happened
        assert requests_seen.count(b"POST /r HTTP/1.1") == 1


async def test_a_client_leaving_mid_stream_cancels_the_upstream_request(
    tmp_path: Path, aiohttp_server
) -> None:  # type: ignore[no-untyped-def]
    upstream_done = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b"x" * 65536)
                await asyncio.sleep(0.01)
        finally:
            upstream_done.set()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/endless", endless)
    app.router.add_get("/ok", ok)
    server = await aiohttp_server(app)
    async with gateway(tmp_path, str(server.make_url("")).rstrip("/")) as (gw, key):
        assert (await get(gw, key, "/ok"))[0] == 200
        baseline = await settle(gw)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        writer.write(
            f"GET /endless HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )
        await reader.read(200_000)
        writer.transport.abort()
        await asyncio.wait_for(upstream_done.wait(), 3)  # the upstream saw the request end
        assert (await get(gw, key, "/ok"))[0] == 200
        assert await settle(gw) <= baseline


async def test_connections_past_the_limit_get_503(tmp_path: Path) -> None:
    async with (
        raw_upstream(healthy_upstream) as url,
        gateway(tmp_path, url, server={"max_connections": 3}) as (gw, key),
    ):
        held = [await asyncio.open_connection("127.0.0.1", gw.gateway.data_port) for _ in range(3)]
        await asyncio.sleep(0.1)
        reply = await raw_exchange(gw.gateway.data_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503") and b"Retry-After" in reply
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
        assert (await get(gw, key, "/x"))[0] == 200
        with contextlib.suppress(Exception):
            for _, writer in held:
                await writer.wait_closed()


async def test_a_truncated_content_length_body_is_cut_not_completed(tmp_path: Path) -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-half")
        await writer.drain()
        writer.close()

    async with raw_upstream(short) as url, gateway(tmp_path, url) as (gw, key):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        writer.write(f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
        out = await read_for(reader, 3)
        writer.close()
    assert out.startswith(b"HTTP/1.1 200") and b"Content-Length: 100" in out
    assert out.endswith((b"<EOF>", b"<RST>")) and b"only-half" in out  # cut short: the client knows
