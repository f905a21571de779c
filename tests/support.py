"""Helpers shared by the tests: an upstream that shows what it received, settings, the gateway
in-process or as a real `gateway serve` subprocess, raw-socket HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.config import Settings, parse_settings
from gateway.server import Gateway

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN_ENV = "GATEWAY_TEST_ADMIN_TOKEN"
RELEASE = web.AppKey("release", asyncio.Event)
SEEN = web.AppKey("seen", list)


# -- the upstream -----------------------------------------------------------------------------


async def echo(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    request.app[SEEN].append(request)
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
            "body_size": size,
            "body_sha256": digest.hexdigest(),
            "peer_port": request.transport.get_extra_info("peername")[1]
            if request.transport
            else None,
        }
    )


async def download(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("size", "1048576"))
    chunk = int(request.query.get("chunk", "65536"))
    resp = web.StreamResponse()
    if "length" in request.query:
        resp.content_length = size
    await resp.prepare(request)
    block = b"x" * chunk
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        await resp.write(block[:n])
        sent += n
    await resp.write_eof()
    return resp


async def slow_upload(request: web.Request) -> web.Response:
    """Reads slowly, so a proxy that does not apply backpressure has to buffer."""
    digest = hashlib.sha256()
    size = 0
    delay = float(request.query.get("delay", "0.002"))
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
        await asyncio.sleep(delay)
    return web.json_response({"body_size": size, "body_sha256": digest.hexdigest()})


async def sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    await resp.write(b"data: first\n\n")
    await request.app[RELEASE].wait()
    await resp.write(b"data: second\n\n")
    await resp.write_eof()
    return resp


async def gzipped(request: web.Request) -> web.Response:
    body = gzip.compress(b'{"compressed": true}' * 100)
    return web.Response(
        body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
    )


async def cookies(request: web.Request) -> web.Response:
    resp = web.Response(text="cookies")
    resp.headers.add("Set-Cookie", "a=1; Path=/")
    resp.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
    resp.headers.add("Set-Cookie", "c=3")
    resp.headers["Connection"] = "X-Upstream-Private"
    resp.headers["X-Upstream-Private"] = "hop"
    resp.headers["Keep-Alive"] = "timeout=5"
    return resp


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/elsewhere"})


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay", "5")))
    return web.Response(text="late")


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


def upstream_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[RELEASE] = asyncio.Event()
    app[SEEN] = []
    r = app.router
    r.add_route("*", "/download", download)
    r.add_route("*", "/slow-upload", slow_upload)
    r.add_get("/sse", sse)
    r.add_get("/gzip", gzipped)
    r.add_get("/cookies", cookies)
    r.add_get("/redirect", redirect)
    r.add_get("/slow", slow)
    r.add_route("*", "/no-content", no_content)
    r.add_route("*", "/{tail:.*}", echo)
    return app


# -- settings and the in-process gateway ------------------------------------------------------


def make_settings(tmp_path: Path, upstream_url: str, **sections: Any) -> Settings:
    doc: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_timeout": 5},
        "log": {"level": "warning"},
        "upstream": {"url": upstream_url, "connect_timeout": 2, "read_timeout": 5},
        "admin": {"host": "127.0.0.1", "port": 0, "token_env": ADMIN_ENV},
        "store": {"url": f"sqlite:///{tmp_path / 'gateway.db'}", "usage_flush_seconds": 0.2},
    }
    for name, values in sections.items():
        if isinstance(values, list):
            doc[name] = values
        else:
            doc.setdefault(name, {}).update(values)
    return parse_settings(doc, "<test>")


@dataclass
class Running:
    gateway: Gateway
    session: aiohttp.ClientSession
    url: str = ""
    admin_url: str = ""
    admin_headers: dict[str, str] = field(default_factory=dict)

    async def admin(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.admin_headers, **kwargs.pop("headers", {})}
        async with self.session.request(
            method, self.admin_url + path, headers=headers, **kwargs
        ) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = await resp.json(content_type=None) if "json" in ctype else await resp.text()
            return resp.status, body

    async def account(self, name: str = "Acme", **extra: Any) -> dict[str, Any]:
        status, body = await self.admin("POST", "/admin/v1/accounts", json={"name": name, **extra})
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    async def key(self, account_id: str, **extra: Any) -> dict[str, Any]:
        status, body = await self.admin(
            "POST", "/admin/v1/keys", json={"account_id": account_id, **extra}
        )
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    async def new_key(self, **extra: Any) -> str:
        account = await self.account(provision_production_key=False)
        return str((await self.key(account["id"], **extra))["key"])


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[Running]:
    gw = Gateway(settings, environ={**os.environ, ADMIN_ENV: ADMIN_TOKEN})
    await gw.start()
    session = aiohttp.ClientSession(auto_decompress=False)
    try:
        yield Running(
            gateway=gw,
            session=session,
            url=f"http://127.0.0.1:{gw.data_port}",
            admin_url=f"http://127.0.0.1:{gw.admin_port}",
            admin_headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    finally:
        await session.close()
        await gw.stop()


def url_of(upstream: Any) -> str:
    """The base URL of an `aiohttp_server` upstream, without a trailing slash."""
    return str(upstream.make_url("")).rstrip("/")


def resolve_dots(parts: list[bytes]) -> list[bytes]:
    """Path segments as RFC 3986 resolves them: empty and `.` dropped, `..` pops. Written
    apart from gateway/routes.py on purpose: the tests' oracle must not share its code."""
    out: list[bytes] = []
    for seg in parts:
        if not seg or seg == b".":
            continue
        if seg == b"..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return out


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- the real `gateway serve` process ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    path: Path, upstream_url: str, db: Path, port: int, admin_port: int, extra: str = ""
) -> Path:
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_timeout = 10

[log]
format = "json"
level = "info"

[upstream]
url = "{upstream_url}"
read_timeout = 10

[admin]
host = "127.0.0.1"
port = {admin_port}
token_env = "{ADMIN_ENV}"

[store]
url = "sqlite:///{db}"
usage_flush_seconds = 0.2
{extra}
"""
    )
    return path


class GatewayProcess:
    """`gateway serve --config FILE` as a child process, stdout captured to a file."""

    def __init__(self, config: Path, log_path: Path, code: Path | None = None) -> None:
        """`code`: run the gateway package found in that directory (an older release)."""
        self.config = config
        self.log_path = log_path
        self.code = code
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    def start(self, port: int, admin_port: int, timeout: float = 15.0) -> None:
        env = dict(os.environ, **{ADMIN_ENV: ADMIN_TOKEN})
        if self.code is not None:
            env["PYTHONPATH"] = str(self.code)
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.code,  # not the repository root, whose gateway/ would come first
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", admin_port), timeout=0.2):
                    pass
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("gateway did not start listening in time")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._log:
            self._log.close()
        return code

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait(5)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- raw sockets --------------------------------------------------------------------------------


async def raw_exchange(port: int, data: bytes, *, read_timeout: float = 3.0) -> bytes:
    """Send bytes, read until the server closes the connection (or the timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not chunk:
                break
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return b"".join(chunks)


# -- deliberately bad upstreams and raw clients -------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_upstream(handler: Handler) -> AsyncIterator[str]:
    """A deliberately bad upstream: `handler` speaks raw bytes; every connection it leaves open
    is cancelled and closed when the test ends."""
    tasks: set[asyncio.Task[None]] = set()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, url: str, **sections: Any) -> AsyncIterator[tuple[Running, str]]:
    async with running_gateway(make_settings(tmp_path, url, **sections)) as gw:
        yield gw, await gw.new_key()


async def read_for(reader: asyncio.StreamReader, seconds: float) -> bytes:
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), seconds)
            if not chunk:
                return out + b"<EOF>"
            out += chunk
    except TimeoutError:
        return out + b"<TIMEOUT>"
    except ConnectionResetError:
        return out + b"<RST>"


# -- reaching into the store behind the gateway's back (either dialect) --------------------------


async def store_execute(gw: Running, sqlite_sql: str, pg_sql: str | None = None) -> None:
    """Run DDL or DML directly on the gateway's store: `sqlite_sql` on SQLite, `pg_sql` (or
    the same text) on PostgreSQL."""
    import sqlite3

    settings = gw.gateway.settings.store
    if settings.is_postgres:
        import asyncpg

        conn = await asyncpg.connect(settings.url)
        try:
            await conn.execute(pg_sql or sqlite_sql)
        finally:
            await conn.close()
    else:
        with sqlite3.connect(settings.sqlite_path) as db:
            db.executescript(sqlite_sql)


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 3.0) -> bool:
    """Poll `check` until it holds or `seconds` pass; its last answer."""
    deadline = time.monotonic() + seconds
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
