"""What the data plane adds to aiohttp's low-level server through its protocol hooks: no
version in any answer (`Server: keygate`), parse errors as problem+json and one warning line
without the client's bytes, the connection cap, and a pipelined flood that waits for a client
that reads nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from support import (
    ADMIN_TOKEN,
    RELEASE,
    SEEN,
    GatewayProcess,
    Running,
    free_port,
    gateway,
    raw_exchange,
    raw_upstream,
    read_for,
    url_of,
    write_config,
)

from gateway import __version__


@pytest.fixture
async def gw_plain(tmp_path: Path, upstream: TestServer) -> AsyncIterator[tuple[Running, str]]:
    async with gateway(tmp_path, url_of(upstream)) as running:
        yield running


def header(reply: bytes, name: bytes) -> list[bytes]:
    head = reply.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")[1:]
        if line.split(b":", 1)[0].lower() == name.lower()
    ]


async def test_no_answer_reveals_a_version(tmp_path: Path, upstream: TestServer) -> None:
    async def bare(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with gateway(tmp_path, url_of(upstream)) as (gw, key):
        port = gw.gateway.data_port
        own = [
            b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n",  # 401
            b"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
            b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # 400, ours
            b"GET /x HTTP/1.1\r\nHost: x\r\nX\x01: y\r\n\r\n",  # 400, aiohttp's parser
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # 414
            b"GET /v1/auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + key.encode()
            + b"\r\n\r\n",  # 200, ours
        ]
        for raw in own:
            reply = await raw_exchange(port, raw)
            assert header(reply, b"Server") == [b"keygate"], reply[:300]
            assert b"aiohttp" not in reply and b"Python" not in reply
        # The upstream's own Server header is relayed untouched...
        reply = await raw_exchange(
            port,
            f"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert header(reply, b"Server")[0].startswith(b"Python/")  # aiohttp's test server
    # ... and an upstream that sends none gets `keygate`, not aiohttp's.
    async with raw_upstream(bare) as url, gateway(tmp_path / "2", url) as (gw, key):
        reply = await raw_exchange(
            gw.gateway.data_port,
            f"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert reply.startswith(b"HTTP/1.1 200") and header(reply, b"Server") == [b"keygate"]


async def test_no_admin_port_answer_reveals_a_version(tmp_path: Path, upstream: TestServer) -> None:
    """The admin port names itself as the data plane does: the API, its problems, aiohttp's
    own 404/405 and parse errors, the console's pages and static files, and /healthz, whose
    body carries no version either."""

    def request(line: str, token: bool = False) -> bytes:
        auth = f"Authorization: Bearer {ADMIN_TOKEN}\r\n" if token else ""
        return f"{line} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode()

    async with gateway(tmp_path, url_of(upstream)) as (gw, _):
        cases = [
            (request("GET /healthz"), b"200"),
            (request("GET /admin/v1/accounts"), b"401"),
            (request("GET /admin/v1/accounts", token=True), b"200"),
            (request("GET /admin/v1/keys/nope", token=True), b"404"),
            (request("GET /admin/v1/nope", token=True), b"404"),
            (request("DELETE /healthz"), b"405"),
            (request("GET /metrics", token=True), b"200"),
            (request("GET /admin/v1/openapi.json", token=True), b"200"),
            (request("GET /admin/v1/self-service/openapi.json", token=True), b"200"),
            (request("GET /ui"), b"308"),
            (request("GET /ui/sign-in"), b"200"),
            (request("GET /ui/static/console.css"), b"200"),
            (request("GET /ui/nope"), b"303"),  # to sign-in
            (b"GET / HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n", b"400"),  # aiohttp's parser
        ]
        for raw, status in cases:
            reply = await raw_exchange(gw.gateway.admin_port, raw)
            assert reply[9:12] == status, (raw, reply[:300])
            assert header(reply, b"Server") == [b"keygate"], (raw, reply[:300])
            assert b"aiohttp" not in reply and b"Python/" not in reply, (raw, reply[:300])
            assert f'"{__version__}"'.encode() not in reply, (raw, reply[:300])
        async with gw.session.get(gw.admin_url + "/healthz") as resp:
            assert await resp.json() == {"status": "ok"}


async def test_parse_errors_are_problem_json_and_close(
    tmp_path: Path, upstream: TestServer
) -> None:
    async with gateway(tmp_path, url_of(upstream)) as (gw, _):
        reply = await raw_exchange(
            gw.gateway.data_port, b"GET / HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n"
        )
        head, body = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 400") and b"Connection: close" in head
        assert header(reply, b"Content-Type") == [b"application/problem+json"]
        problem = json.loads(body)
        assert problem["status"] == 400 and problem["request_id"]
        assert header(reply, b"X-Request-Id") == [problem["request_id"].encode()]


@pytest.mark.slow
@pytest.mark.parametrize("listener", ["data plane", "admin port"])
async def test_a_bad_request_is_one_warning_line_without_its_bytes(
    tmp_path: Path, upstream: TestServer, listener: str
) -> None:
    """On either port: aiohttp's default logs a traceback at ERROR quoting the client's bytes,
    and answers them back as text."""
    port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path / "gw.toml", url_of(upstream), tmp_path / "gw.db", port, admin_port
    )
    log = tmp_path / "out.log"
    proc = GatewayProcess(config, log)
    proc.start(port, admin_port)
    marker = "SECRET-MARKER-4f1d"
    try:
        for raw in (
            f"GET / HTTP/1.1\r\nHost: x\r\n{marker} Y: z\r\n\r\n".encode(),
            f"GET /{marker}\x00 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            f"\x16\x03\x01{marker}not http at all\r\n\r\n".encode(),
            f"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ;{marker}\r\n".encode(),
        ):
            reply = await raw_exchange(port if listener == "data plane" else admin_port, raw)
            assert reply[:10] in (b"HTTP/1.1 4", b"HTTP/1.0 4"), reply[:100]
            assert header(reply, b"Content-Type") == [b"application/problem+json"], reply[:300]
            assert marker.encode() not in reply
        if listener == "admin port":  # a body that is not what its Content-Encoding says
            junk = f"not gzip {marker}".encode()
            for token, status in (("", b"401"), (ADMIN_TOKEN, b"400")):
                raw = (
                    f"POST /admin/v1/accounts HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                    f"Content-Encoding: gzip\r\nContent-Length: {len(junk)}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode() + junk
                reply = await raw_exchange(admin_port, raw)
                assert reply[9:12] == status, reply[:300]
                assert marker.encode() not in reply
            for console in (b"/ui/sign-in", b"/ui/accounts"):
                raw = (
                    b"POST " + console + b" HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Encoding: gzip\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n" % len(junk)
                ) + junk
                reply = await raw_exchange(admin_port, raw)
                assert reply[9:10] in (b"3", b"4"), reply[:300]
                assert marker.encode() not in reply
        for each in (port, admin_port):  # both live on
            reply = await raw_exchange(
                each, b"GET /admin/v1/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert reply.startswith(b"HTTP/1.1 401")
        await asyncio.sleep(0.5)
    finally:
        assert proc.stop() == 0
    text = log.read_text()
    assert "Traceback" not in text and marker not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    warnings = [line for line in lines if line.get("level") == "warning"]
    assert len(warnings) >= 3
    assert all("\n" not in line["msg"] for line in warnings)
    assert not [line for line in lines if line.get("level") == "error"]


async def test_over_the_connection_cap_gets_503_and_the_rest_is_served(
    tmp_path: Path, upstream: TestServer
) -> None:
    async with gateway(tmp_path, url_of(upstream), server={"max_connections": 2}) as (gw, key):
        port = gw.gateway.data_port
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        reply = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503") and header(reply, b"Retry-After") == [b"1"]
        assert header(reply, b"Server") == [b"keygate"]
        reader, writer = held[0]
        writer.write(f"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
        out = await read_for(reader, 0.5)
        assert out.startswith(b"HTTP/1.1 200")
        for _, w in held:
            w.close()


# -- found in review of the move onto aiohttp -------------------------------------------------


async def test_a_bad_chunk_in_a_later_read_is_refused_at_once(tmp_path: Path) -> None:
    async def reader_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # reads until the gateway drops it

    async with raw_upstream(reader_only) as url, gateway(tmp_path, url) as (gw, key):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        writer.write(
            f"POST /up HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".encode()
        )
        await asyncio.sleep(0.2)
        writer.write(b"zz\r\nnot a chunk\r\n")
        out = await read_for(reader, 3)
        writer.close()
        assert out.startswith(b"HTTP/1.1 400") and out.endswith((b"<EOF>", b"<RST>")), out[:200]
        await asyncio.sleep(0.1)
        assert not gw.gateway.plane.ctx.busy_upstreams


async def test_a_head_written_line_by_line_then_a_long_response_gets_no_stray_408(
    tmp_path: Path, upstream: TestServer
) -> None:
    async with gateway(tmp_path, url_of(upstream), server={"header_timeout": 0.3}) as (gw, key):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        for line in (
            "GET /slow?delay=0.8 HTTP/1.1\r\n",
            "Host: x\r\n",
            f"Authorization: Bearer {key}\r\n",
            "\r\n",
        ):
            writer.write(line.encode())
            await asyncio.sleep(0.02)
        out = await read_for(reader, 1.5)
        assert out.startswith(b"HTTP/1.1 200") and b"408" not in out, out[-200:]
        writer.write(f"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
        out = await read_for(reader, 1)
        writer.close()
        assert out.startswith(b"HTTP/1.1 200"), out[:100]  # the connection is still good


async def test_a_complete_pipelined_request_behind_a_slow_response_is_answered(
    tmp_path: Path, upstream: TestServer
) -> None:
    async with gateway(tmp_path, url_of(upstream), server={"header_timeout": 0.3}) as (gw, key):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        auth = f"Authorization: Bearer {key}\r\n"
        writer.write(f"GET /slow?delay=0.8 HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        await asyncio.sleep(0.1)
        writer.write(f"GET /second HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        out = await read_for(reader, 2)
        writer.close()
        assert out.count(b"HTTP/1.1 200") == 2 and b"/second" in out, out[-300:]


async def test_drain_closes_a_connection_as_soon_as_its_response_ends(
    tmp_path: Path, upstream: TestServer
) -> None:
    """The response head went out before the drain began, so it could not say
    `Connection: close`; the connection must still close when the response ends."""
    async with gateway(tmp_path, url_of(upstream)) as (gw, key):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        writer.write(
            f"GET /sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )
        first = await reader.readuntil(b"data: first\n\n")
        assert first.startswith(b"HTTP/1.1 200")
        loop = asyncio.get_running_loop()
        started = loop.time()
        draining = asyncio.create_task(gw.gateway.data.drain(10))
        await asyncio.sleep(0.2)
        upstream.app[RELEASE].set()
        out = await read_for(reader, 3)
        await draining
        writer.close()
        assert b"data: second" in out and out.endswith(b"<EOF>")
        assert loop.time() - started < 2.5  # not the whole shutdown_timeout


async def test_body_bytes_after_a_head_response_are_never_relayed(tmp_path: Path) -> None:
    async def sloppy_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_upstream(sloppy_head) as url, gateway(tmp_path, url) as (gw, key):
        auth = f"Authorization: Bearer {key}\r\n"
        reply = await raw_exchange(
            gw.gateway.data_port,
            f"HEAD /a HTTP/1.1\r\nHost: x\r\n{auth}\r\nGET /b HTTP/1.1\r\nHost: x\r\n{auth}"
            "Connection: close\r\n\r\n".encode(),
        )
        assert b"hello" not in reply and reply.count(b"HTTP/1.1 200") == 2, reply


async def test_an_upstream_that_takes_no_body_and_never_answers_gets_504(tmp_path: Path) -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)  # reads nothing more, answers nothing

    async with (
        raw_upstream(deaf) as url,
        gateway(tmp_path, url, upstream={"read_timeout": 1}, server={"body_timeout": 30}) as (
            gw,
            key,
        ),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        writer.write(
            f"POST /up HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Length: 300000000\r\n\r\n".encode()
        )

        async def push() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"z" * 65536)
                    await writer.drain()

        pusher = asyncio.create_task(push())
        out = await read_for(reader, 5)
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pusher
        writer.transport.abort()
        assert out.startswith(b"HTTP/1.1 504"), out[:100]


async def test_an_upgrade_request_is_answered_plainly_and_ends_the_connection(
    gw_plain: tuple[Running, str], upstream: TestServer
) -> None:
    gw, key = gw_plain
    auth = f"Authorization: Bearer {key}\r\n"
    reply = await raw_exchange(
        gw.gateway.data_port,
        f"GET /ws HTTP/1.1\r\nHost: x\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        f"GET /after HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode(),
    )
    assert reply.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in reply, reply[:300]
    assert [r.path for r in upstream.app[SEEN]] == ["/ws"]
