"""A small upstream for load tests: echoes who called, accepts bodies, streams SSE.

python loadtests/upstream.py PORT
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    return web.json_response(
        {
            "path": request.path,
            "method": request.method,
            "account": request.headers.get("X-Account-Id"),
            "bytes": size,
        }
    )


async def sse(request: web.Request) -> web.StreamResponse:
    events = int(request.query.get("events", "5"))
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    for i in range(events):
        await resp.write(f"id: {i}\ndata: event {i}\n\n".encode())
        await asyncio.sleep(0.05)
    await resp.write_eof()
    return resp


def main() -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/sse", sse)
    app.router.add_route("*", "/{tail:.*}", echo)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
