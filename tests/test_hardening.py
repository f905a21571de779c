"""Hostile and broken peers: stalled bodies, clients that do not read, pipelining edge cases,
head limits, upstreams that reset or misbehave. Each would have hung, leaked or lied before."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from support import (
    ADMIN_ENV,
    ADMIN_TOKEN,
    SEEN,
    Running,
    eventually,
    free_port,
    gateway,
    raw_exchange,
    raw_upstream,
    read_for,
    url_of,
    write_config,
)


async def test_a_pipelined_request_whose_body_comes_later_is_answered(
    tmp_path: Path, upstream: TestServer
) -> None:
    async with gateway(tmp_path, url_of(upstream)) as (gw, key):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        first = f"GET /slow?delay=0.3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
        second = f"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 10\r\n\r\n12345"
        writer.write((first + second).encode())
        await asyncio.sleep(0.6)  # the first is answered, the second dispatched with half a body
        writer.write(b"67890")
        out = await read_for(reader, 3)
        writer.close()
    assert out.count(b"HTTP/1.1 200") == 2
    assert b'"body_size": 10' in out


async def test_a_body_that_never_arrives_is_timed_out(tmp_path: Path, upstream: TestServer) -> None:
    server = {"header_timeout": 1, "keepalive_timeout": 1, "body_timeout": 0.5}
    async with gateway(tmp_path, url_of(upstream), server=server) as (gw, key):
        ctx = gw.gateway.plane.ctx
        conns = []
        for auth in (f"Authorization: Bearer {key}\r\n", ""):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
            writer.write(
                f"POST /echo HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\nabc".encode()
            )
            conns.append((reader, writer))
        await asyncio.sleep(0.3)
        assert len(ctx.connections) == 2
        replies = [await read_for(r, 3) for r, _ in conns]
        assert replies[0].startswith(b"HTTP/1.1 408"), replies[0][:100]  # proxied: 408, closed
        assert replies[1].startswith(b"HTTP/1.1 401")  # refused, then closed when it stalled
        assert replies[1].endswith((b"<EOF>", b"<RST>"))
        assert len(ctx.connections) == 0 and not ctx.busy_upstreams
        for _, writer in conns:
            writer.close()


async def test_a_client_that_never_reads_cannot_make_the_gateway_buffer(
    tmp_path: Path, upstream: TestServer
) -> None:
    async with gateway(tmp_path, url_of(upstream), server={"send_timeout": 30}) as (gw, _):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.gateway.data_port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        request = b"GET / HTTP/1.1\r\nHost: x\r\nX-P: " + b"p" * 30 + b"\r\n\r\n"  # no key: 401s
        with contextlib.suppress(TimeoutError):
            for _ in range(400):  # up to 100 MB of pipelined requests, never reading a byte
                writer.write(request * 4096)
                await asyncio.wait_for(writer.drain(), 1.0)
        conn = next(iter(gw.gateway.plane.ctx.connections))

        async def paused() -> bool:  # on a busy machine the last answers may still be written
            return conn.write_paused

        assert await eventually(paused, 10)
        assert (
            conn.transport is not None and conn.transport.get_write_buffer_size() < 2 * 1024 * 1024
        )
        writer.transport.abort()


async def test_a_client_that_stops_reading_is_cut_off_after_send_timeout(
    tmp_path: Path, upstream: TestServer
) -> None:
    async with gateway(tmp_path, url_of(upstream), server={"send_timeout": 0.5}) as (gw, key):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.gateway.data_port))
        sock.sendall(
            f"GET /download?size=50000000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )
        ctx = gw.gateway.plane.ctx
        for _ in range(50):
            await asyncio.sleep(0.1)
            if not ctx.connections:
                break
        assert not ctx.connections and not ctx.busy_upstreams
        sock.close()


async def test_head_limits_count_the_head_only(tmp_path: Path, upstream: TestServer) -> None:
    async with gateway(
        tmp_path, url_of(upstream), server={"max_header_size": 4096, "max_request_line": 1024}
    ) as (gw, key):
        port = gw.gateway.data_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 300000\r\n"
        writer.write(head.encode())
        await asyncio.sleep(0.05)  # the head arrives in two reads ...
        writer.write(b"\r\n" + b"b" * 300000)  # ... the second with a body far above the head limit
        out = await read_for(reader, 3)
        writer.close()
        assert out.startswith(b"HTTP/1.1 200"), out[:100]
        big = "".join(f"X-Big-{i}: {'v' * 400}\r\n" for i in range(20))
        reply = await raw_exchange(port, f"GET / HTTP/1.1\r\nHost: x\r\n{big}\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 431")
        reply = await raw_exchange(port, f"GET /{'a' * 2000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 414")
        many = "".join(f"X-{i}: v\r\n" for i in range(150))
        reply = await raw_exchange(port, f"GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 431")


async def test_an_oversized_body_is_refused_from_its_content_length(
    tmp_path: Path, upstream: TestServer
) -> None:
    async with gateway(tmp_path, url_of(upstream), server={"max_body_size": 1000}) as (gw, key):
        port = gw.gateway.data_port
        reply = await raw_exchange(
            port,
            f"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 5000000\r\n"
            "Expect: 100-continue\r\n\r\n".encode(),
        )
        assert reply.startswith(b"HTTP/1.1 413") and b"100 Continue" not in reply
        chunks = b"".join(b"%x\r\n%s\r\n" % (500, b"c" * 500) for _ in range(4)) + b"0\r\n\r\n"
        reply = await raw_exchange(
            port,
            f"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + chunks,
        )
        assert reply.startswith(b"HTTP/1.1 413")  # counted as it streams
        async with gw.session.post(
            gw.url + "/echo", data=b"x" * 1000, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            assert resp.status == 200


async def test_an_upstream_answering_early_does_not_wedge_the_upload(tmp_path: Path) -> None:
    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(5)  # never reads the body
        writer.close()

    async with raw_upstream(early) as url, gateway(tmp_path, url) as (gw, key):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        writer.write(
            f"POST /up HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 64000000\r\n\r\n".encode()
        )

        async def push() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(1000):
                    writer.write(b"z" * 65536)
                    await writer.drain()

        pusher = asyncio.create_task(push())
        out = await read_for(reader, 3)
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pusher
        writer.close()
        assert out.startswith(b"HTTP/1.1 200") and b"\r\n\r\nok" in out
        await asyncio.sleep(0.3)
        assert not gw.gateway.plane.ctx.connections  # closed, not stuck paused


async def test_an_upstream_reset_mid_body_never_looks_complete(tmp_path: Path) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst-half-of-the-body")
        await writer.drain()
        await asyncio.sleep(0.1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    async with raw_upstream(reset) as url, gateway(tmp_path, url) as (gw, key):
        reply = await raw_exchange(
            gw.gateway.data_port,
            f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode(),
        )
    assert b"first-half-of-the-body" in reply
    assert not reply.endswith(b"0\r\n\r\n")  # no terminating chunk: the truncation shows


async def test_a_clean_close_ends_a_close_delimited_response(tmp_path: Path) -> None:
    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nall-of-it"
        )
        await writer.drain()
        writer.close()

    async with (
        raw_upstream(close_delimited) as url,
        gateway(tmp_path, url) as (gw, key),
        gw.session.get(gw.url + "/", headers={"Authorization": f"Bearer {key}"}) as resp,
    ):
        assert resp.status == 200
        assert await resp.read() == b"all-of-it"


async def test_bytes_after_a_complete_response_spoil_only_that_connection(tmp_path: Path) -> None:
    served = 0

    async def sloppy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            served += 1
            # a 204 must not have a body; this one sends one anyway
            writer.write(
                b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforged"
            )
            await writer.drain()

    async with raw_upstream(sloppy) as url, gateway(tmp_path, url) as (gw, key):
        for _ in range(3):
            async with gw.session.get(
                gw.url + "/", headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                assert resp.status == 204
                assert await resp.read() == b""
    assert served == 3  # each on a fresh connection: the spoiled one was never reused


async def test_a_dawdling_pipelined_head_behind_a_long_response_closes_the_connection(
    tmp_path: Path, upstream: TestServer
) -> None:
    async with gateway(tmp_path, url_of(upstream), server={"header_timeout": 0.5}) as (gw, key):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        writer.write(
            f"GET /slow?delay=1.2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\nGET /ne".encode()
        )
        out = await read_for(reader, 4)
        writer.close()
        assert (
            out.startswith(b"HTTP/1.1 200")
            and b"Connection: close" in out
            and out.endswith(b"<EOF>")
        )


async def test_graceful_drain_tells_busy_clients_to_close(
    tmp_path: Path, upstream: TestServer
) -> None:
    async with gateway(tmp_path, url_of(upstream)) as (gw, key):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        writer.write(
            f"GET /slow?delay=0.5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )
        await asyncio.sleep(0.2)
        stopping = asyncio.create_task(gw.gateway.stop())
        out = await read_for(reader, 3)
        await stopping
        writer.close()
    assert (
        out.startswith(b"HTTP/1.1 200") and b"Connection: close" in out and out.endswith(b"<EOF>")
    )


# Request-framing cases after llhttp's request test corpus and the aiohttp smuggling advisories
# (GHSA-gfw2-4jvh-wgfg, GHSA-8qpw-xqxj-h4r2, GHSA-xx9p-xxvh-7g8j, ...). The data plane parses
# with llhttp in strict mode; the admin port with aiohttp (C parser, or the pure-Python one under
# AIOHTTP_NO_EXTENSIONS=1 — both are exercised below).
HEAD_CASES = [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\nhellohello",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: x\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\rX: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
    b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX<: z\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.10\r\nHost: x\r\n\r\n",
    b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://evil/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
]
BODY_CASES = [
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nG\r\nxxxx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
]


def with_key(raw: bytes, key: str) -> bytes:
    if b"Host: x\r\n" not in raw:
        return raw
    return raw.replace(
        b"Host: x\r\n", b"Host: x\r\nAuthorization: Bearer " + key.encode() + b"\r\n", 1
    )


@pytest.mark.parametrize("raw", HEAD_CASES)
async def test_ambiguous_framing_is_refused_and_never_forwarded(
    gw: Running, upstream: TestServer, raw: bytes
) -> None:
    key = await gw.new_key()
    reply = await raw_exchange(gw.gateway.data_port, with_key(raw, key))
    head = reply.split(b"\r\n\r\n")[0]
    assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.1 505")), reply[:80]
    assert b"Connection: close" in head
    assert upstream.app[SEEN] == []


@pytest.mark.parametrize("raw", BODY_CASES)
async def test_bad_chunk_framing_cuts_the_exchange_and_no_request_completes(
    gw: Running, upstream: TestServer, raw: bytes
) -> None:
    """The head was valid, so the request streams; the bad chunk ends it there: the upstream
    connection is dropped mid-request, so it can never read a complete (smuggled) request."""
    key = await gw.new_key()
    reply = await raw_exchange(gw.gateway.data_port, with_key(raw, key))
    assert reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 502")), reply[:80]
    assert reply.endswith(b"}") or b"Connection: close" in reply
    await asyncio.sleep(0.1)
    assert upstream.app[SEEN] == []  # the upstream's handler never got a whole request
    assert not gw.gateway.plane.ctx.busy_upstreams


@pytest.mark.slow
@pytest.mark.parametrize("no_extensions", ["1", "0"])
def test_the_admin_port_refuses_the_same_framing_with_either_aiohttp_parser(
    tmp_path: Path, no_extensions: str
) -> None:
    port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path / "gw.toml", "http://127.0.0.1:1", tmp_path / "gw.db", port, admin_port
    )
    env = dict(os.environ, **{ADMIN_ENV: ADMIN_TOKEN}, AIOHTTP_NO_EXTENSIONS=no_extensions)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", admin_port), 0.2),
            ):
                break
            time.sleep(0.1)
        token = f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
        for raw in HEAD_CASES + BODY_CASES:
            request = raw.replace(b"POST / ", b"POST /admin/v1/accounts ").replace(
                b"GET / ", b"GET /admin/v1/accounts "
            )
            request = request.replace(b"Host: x\r\n", b"Host: x\r\n" + token, 1)
            reply = asyncio.run(raw_exchange(admin_port, request, read_timeout=1))
            status = reply[9:12]
            assert status.startswith(b"4") or reply == b"", (raw, reply[:80])
        with sqlite3.connect(tmp_path / "gw.db") as db:
            assert db.execute("SELECT count(*) FROM accounts").fetchone() == (
                0,
            )  # nothing went through
    finally:
        proc.terminate()
        proc.wait(20)


async def test_other_http_versions_are_505(gw: Running) -> None:
    for version in (b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2"):
        reply = await raw_exchange(
            gw.gateway.data_port, b"GET / " + version + b"\r\nHost: x\r\n\r\n"
        )
        assert reply.startswith((b"HTTP/1.1 505", b"HTTP/1.1 400")), (version, reply[:40])


async def test_a_slowloris_head_gets_408_and_an_idle_keep_alive_is_closed(
    tmp_path: Path, upstream: TestServer
) -> None:
    server = {"header_timeout": 0.5, "keepalive_timeout": 0.5}
    async with gateway(tmp_path, str(upstream.make_url("")).rstrip("/"), server=server) as (
        gw,
        key,
    ):
        port = gw.gateway.data_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and then nothing more
        out = await read_for(reader, 3)
        writer.close()
        assert out.startswith(b"HTTP/1.1 408") and out.endswith((b"<EOF>", b"<RST>"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
        out = await read_for(reader, 3)  # answered, then closed once idle for 0.5 s
        writer.close()
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"<EOF>")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        out = await read_for(reader, 3)  # a connection that never sends a byte
        writer.close()
        assert out == b"<EOF>"


async def test_unknown_keys_are_refused_without_touching_the_store(gw: Running) -> None:
    """Every key is in memory: an unknown digest is simply absent, whatever the flood."""
    from gateway.keys import checksum

    known = await gw.new_key()
    async with gw.session.get(gw.url + "/x", headers={"Authorization": f"Bearer {known}"}) as resp:
        assert resp.status == 200  # the index has caught up with the new key
    statements: list[str] = []
    store = gw.gateway.store
    connections = [store._reader, store._index_reader, store._writer]
    for conn in connections:
        assert conn is not None
        await conn.set_trace_callback(statements.append)
    try:
        for i in range(300):
            body = "sk_live_" + f"{i:04d}" * 20 + "AA"
            async with gw.session.get(
                gw.url + "/x", headers={"Authorization": f"Bearer {body + checksum(body)}"}
            ) as resp:
                assert resp.status == 401
        async with gw.session.get(
            gw.url + "/x", headers={"Authorization": f"Bearer {known}"}
        ) as resp:
            assert resp.status == 200
    finally:
        for conn in connections:
            assert conn is not None
            await conn.set_trace_callback(None)
    # Only background work may have run: the change-log poll, the last-use write-behind, the
    # webhook sender's and the expiry watch's looks (each at most a few a second, whatever the
    # traffic). No query per request.
    background = ("max(seq)", "last_used_at", "BEGIN", "COMMIT", "webhook_deliveries", "expir")
    per_request = [s for s in statements if not any(b in s for b in background)]
    assert per_request == [], statements
    assert len(statements) < 30  # 300 requests
