"""`gateway demo`: a throwaway store, a built-in echo upstream, one account and key minted
through the admin API, and the curl lines to try."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.config import Settings, parse_settings
from gateway.server import Gateway


async def echo(request: web.Request) -> web.Response:
    """Shows what the upstream received: the proof that identity went in and the key came out."""
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    return web.json_response(
        {
            "upstream": "gateway demo echo",
            "method": request.method,
            "path": request.raw_path,
            "headers": dict(request.headers),
            "body_bytes": size,
        },
        headers={"Server": "gateway-demo-echo"},  # an upstream's own Server header is relayed
    )


def demo_settings(workdir: Path, upstream_port: int, port: int, admin_port: int) -> Settings:
    return parse_settings(
        {
            "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout": 5},
            "log": {"format": "text", "level": "warning"},
            "upstream": {"url": f"http://127.0.0.1:{upstream_port}"},
            "admin": {
                "host": "127.0.0.1",
                "port": admin_port,
                "token_env": "GATEWAY_DEMO_ADMIN_TOKEN",
            },
            "store": {"url": f"sqlite:///{workdir / 'demo.db'}"},
        },
        "<demo>",
    )


async def _mint(admin_url: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(
            f"{admin_url}/admin/v1/accounts", json={"name": "Demo account", "id": "acct_demo"}
        ) as resp,
    ):
        resp.raise_for_status()
        account: dict[str, Any] = await resp.json()
    return account


async def run_demo(port: int, admin_port: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with tempfile.TemporaryDirectory(prefix="gateway-demo-") as tmp:
        upstream = web.AppRunner(web.Application(), access_log=None)
        upstream.app.router.add_route("*", "/{tail:.*}", echo)
        await upstream.setup()
        site = web.TCPSite(upstream, "127.0.0.1", 0)
        await site.start()
        upstream_port = next(a[1] for a in upstream.addresses if isinstance(a, tuple))
        token = secrets.token_urlsafe(24)
        os.environ["GATEWAY_DEMO_ADMIN_TOKEN"] = token
        settings = demo_settings(Path(tmp), upstream_port, port, admin_port)
        gateway = Gateway(settings)
        try:
            await gateway.start()
        except OSError as exc:
            await upstream.cleanup()
            print(f"gateway demo: cannot listen: {exc.strerror} (try --port)", file=sys.stderr)
            return 1
        try:
            admin_url = f"http://127.0.0.1:{gateway.admin_port}"
            account = await _mint(admin_url, token)
            key = account["production_key"]["key"]
            data_url = f"http://127.0.0.1:{gateway.data_port}"
            print(
                f"""Gateway demo running (Ctrl-C to stop).
  data plane : {data_url}   ->  echo upstream on 127.0.0.1:{upstream_port}
  admin API  : {admin_url}   (token: {token})
  console    : {admin_url}/ui/   (sign in with that token)
  account    : {account["id"]}
  key        : {key}

A request with the key goes through; the upstream sees who is calling, never the key:
  curl -i -H 'Authorization: Bearer {key}' {data_url}/hello

Without a key (or with a wrong one) the gateway answers 401:
  curl -i {data_url}/hello

Mint another key through the admin API:
  curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
       -d '{{"account_id": "{account["id"]}", "name": "second key"}}' {admin_url}/admin/v1/keys
""",
                flush=True,
            )
            await stop.wait()
        finally:
            await gateway.stop()
            await upstream.cleanup()
    return 0
