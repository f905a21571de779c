"""The floor any aiohttp data plane stands on: aiohttp's low-level server (`aiohttp.web.Server`,
no Application, no router) answering 401 Unauthorized. The gateway's rejection of an unknown key
and its proxied requests are compared with it.

    python loadtests/llhello_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web


async def hello(request: web.BaseRequest) -> web.Response:
    return web.Response(status=401, body=b"Unauthorized", content_type="text/plain")


async def serve(port: int) -> None:
    server = web.Server(hello, access_log=None)
    loop = asyncio.get_running_loop()
    await loop.create_server(server, "127.0.0.1", port, backlog=4096)
    await asyncio.Event().wait()


def main() -> None:
    uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
