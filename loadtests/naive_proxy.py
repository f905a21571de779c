"""The reverse proxy a Python developer writes first: aiohttp server, one ClientSession, a dict
of key hashes. One process, uvloop. The benchmark's "naive" peer.

    python loadtests/naive_proxy.py PORT UPSTREAM_URL KEYS_FILE
"""

from __future__ import annotations

import hashlib
import sys

import aiohttp
import uvloop
from aiohttp import web

HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "authorization",
    "content-length",
}


def main() -> None:
    port, upstream, keys_file = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]
    keys = {}
    with open(keys_file) as fh:
        for line in fh:
            key, account = line.split()
            keys[hashlib.sha256(key.encode()).digest()] = account
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def proxy(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        account = (
            keys.get(hashlib.sha256(auth[7:].encode()).digest())
            if auth.startswith("Bearer ")
            else None
        )
        if account is None:
            return web.Response(status=401, text="Unauthorized")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        headers["X-Account-Id"] = account
        async with request.app[session_key].request(
            request.method,
            upstream + request.path_qs,
            headers=headers,
            data=request.content if request.can_read_body else None,
            allow_redirects=False,
        ) as up:
            resp = web.StreamResponse(
                status=up.status,
                headers={k: v for k, v in up.headers.items() if k.lower() not in HOP},
            )
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        app[session_key] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app[session_key].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
