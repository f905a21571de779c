"""What the data plane adds to aiohttp's low-level server through its protocol hooks: no
version in any answer (`Server: keygate`), parse errors as problem+json and one warning line
without the client's bytes, the connection cap, and a pipelined flood that waits for a client
that reads nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from support import (
    GatewayProcess,
    free_port,
    gateway,
    raw_exchange,
    raw_upstream,
    read_for,
    write_config,
)


def url_of(upstream: TestServer) -> str:
    return str(upstream.make_url("")).rstrip("/")


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
async def test_a_bad_request_is_one_warning_line_without_its_bytes(
    tmp_path: Path, upstream: TestServer
) -> None:
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
            reply = await raw_exchange(port, raw)
            assert reply.startswith(b"HTTP/1.1 4"), reply[:100]
        reply = await raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 401")  # the worker lives on
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
