"""The cheapest possible aiohttp answer: a hello-world handler that replies 401 Unauthorized,
the reference the gateway's rejection of an unknown key is compared with.

    python loadtests/hello_server.py PORT
"""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.Response(status=401, body=b"Unauthorized", content_type="text/plain")


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
