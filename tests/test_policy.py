"""Routes, scopes, path parameters and callback origins, end to end through the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestServer
from support import SEEN, Running, bearer, make_settings, raw_exchange, running_gateway

ROUTES = [
    {"path": "/mcp/*", "methods": ["POST", "GET"], "scopes": ["runtime:all"]},
    {"path": "/registered-users/{registered_user_id}/*"},
    {"path": "/tool-packs/{tool_pack_id}/*"},
    {"path": "/oauth/authorize", "callback_param": "redirect_uri"},
    {"path": "/status", "public": True},
    {"path": "/admin/*", "scopes": ["management:all"]},
]


@pytest.fixture
async def pgw(tmp_path: Path, upstream: TestServer) -> AsyncIterator[Running]:
    settings = make_settings(tmp_path, str(upstream.make_url("")).rstrip("/"), routes=ROUTES)
    async with running_gateway(settings) as running:
        yield running


async def get(
    gw: Running, path: str, key: str | None = None, method: str = "GET", **headers: str
) -> tuple[int, dict]:
    h = {**(bearer(key) if key else {}), **headers}
    async with gw.session.request(method, gw.url + path, headers=h) as resp:
        ctype = resp.headers.get("Content-Type", "")
        body = (
            await resp.json(content_type=None) if "json" in ctype else {"text": await resp.text()}
        )
        return resp.status, body


async def test_scope_is_required_on_a_scoped_route(pgw: Running) -> None:
    runtime = await pgw.new_key(scopes=["runtime:all"])
    manager = await pgw.new_key(scopes=["management:all"])
    assert (await get(pgw, "/mcp/tools", runtime))[0] == 200
    status, problem = await get(pgw, "/mcp/tools", manager)
    assert status == 403
    assert problem["title"] == "Insufficient scope" and "runtime:all" in problem["detail"]
    assert problem["required_scopes"] == ["runtime:all"]
    assert (await get(pgw, "/mcp/tools", manager, method="DELETE"))[0] == 200  # method not routed
    assert (await get(pgw, "/anything/else", manager))[0] == 200  # no route: any valid key
    assert (await get(pgw, "/mcp/tools"))[0] == 401  # no key: 401 before any scope talk


async def test_public_route_needs_no_key_strips_credentials_and_spoofed_identity(
    pgw: Running, upstream: TestServer
) -> None:
    status, echo = await get(pgw, "/status", None, **{"X-Account-Id": "spoof", "X_Key_Id": "spoof"})
    assert status == 200
    names = [k.lower() for k, _ in echo["headers"]]
    assert "x-account-id" not in names and "x_key_id" not in names and "x-key-id" not in names
    key = await pgw.new_key()
    status, echo = await get(pgw, "/status", key)
    assert status == 200
    assert "authorization" not in [k.lower() for k, _ in echo["headers"]]
    assert key not in str(echo)
    status, echo = await get(pgw, "/status", None, Authorization="Bearer garbage")
    assert status == 200


@pytest.mark.parametrize(
    ("path", "anonymous", "runtime_key"),
    [
        ("/status%2F..%2Fadmin/users", 400, 400),  # dot segments in any spelling: refused
        ("/status/..%2F..%2Fadmin/users", 400, 400),
        ("/status/../admin/users", 400, 400),
        ("/./admin/users", 400, 400),
        ("/status/%2e%2e/admin", 400, 400),
        ("/status/..%5Cadmin", 400, 400),
        ("/status#/../admin", 400, 400),  # a fragment never belongs in a request target
        ("/admin#x", 400, 400),
        ("//admin/users", 401, 403),  # merged slashes: the protected route still applies
        ("/%61dmin/users", 401, 403),  # percent-decoded before matching
        ("//status", 401, 200),  # an upstream that keeps empty segments is not /status
        ("/status%2Fx", 401, 200),  # one reading is public, the other is not: key needed
    ],
)
async def test_tricky_paths_cannot_reach_a_protected_route_through_a_public_one(
    pgw: Running, path: str, anonymous: int, runtime_key: int
) -> None:
    port = pgw.gateway.data_port
    request = f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    reply = await raw_exchange(port, request.encode())
    assert reply.startswith(b"HTTP/1.1 %d" % anonymous), reply[:200]
    runtime = await pgw.new_key(scopes=["runtime:all"])
    reply = await raw_exchange(
        port,
        f"GET {path} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {runtime}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 %d" % runtime_key), reply[:200]


async def test_the_query_is_never_part_of_matching(pgw: Running) -> None:
    request = b"GET /status?x=/../admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    reply = await raw_exchange(pgw.gateway.data_port, request)
    assert reply.startswith(b"HTTP/1.1 200")


async def test_head_is_guarded_like_get(pgw: Running) -> None:
    manager = await pgw.new_key(scopes=["management:all"])
    async with pgw.session.head(pgw.url + "/mcp/x", headers=bearer(manager)) as resp:
        assert resp.status == 403


async def test_raw_path_is_forwarded_byte_for_byte(pgw: Running) -> None:
    key = await pgw.new_key()
    for path in ["/files/a%2Fb/c", "/x/%7Euser/y", "/a//b", "/a/.b/..c/...", "/%E2%82%AC"]:
        reply = await raw_exchange(
            pgw.gateway.data_port,
            f"GET {path}?q=%2F HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert f'"raw_path": "{path}?q=%2F"'.encode() in reply, reply[-300:]


async def test_path_parameters_must_be_in_the_keys_lists(pgw: Running) -> None:
    limited = await pgw.new_key(tool_pack_ids=["tp1", "tp:2"], registered_user_ids=["u1"])
    unrestricted = await pgw.new_key()
    assert (await get(pgw, "/tool-packs/tp1/run", limited))[0] == 200
    reply = await raw_exchange(
        pgw.gateway.data_port,
        f"GET /tool-packs/tp%3A2/run HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {limited}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 200")  # matched on the decoded value
    status, problem = await get(pgw, "/tool-packs/tp3/run", limited)
    assert status == 404 and problem["status"] == 404
    assert (await get(pgw, "/registered-users/u1/profile", limited))[0] == 200
    assert (await get(pgw, "/registered-users/u2/profile", limited))[0] == 404
    assert (await get(pgw, "/registered-users/u2", limited))[0] == 404
    assert (await get(pgw, "/tool-packs/anything/run", unrestricted))[0] == 200
    assert (await get(pgw, "/registered-users/anyone/x", unrestricted))[0] == 200


async def test_callback_origins_are_enforced_and_changes_apply_on_the_next_request(
    pgw: Running, upstream: TestServer
) -> None:
    account = await pgw.account()
    key = account["production_key"]["key"]
    path = f"/admin/v1/accounts/{account['id']}/callback-origins"
    good = "/oauth/authorize?client_id=c&redirect_uri=" + quote(
        "https://app.example.com/cb", safe=""
    )
    status, problem = await get(pgw, good, key)
    assert status == 403 and problem["title"] == "unauthorized origin"
    assert (await pgw.admin("POST", path, json={"origin": "app.example.com"}))[0] == 201
    status, echo = await get(pgw, good, key)
    assert status == 200 and "redirect_uri=https" in echo["raw_path"]
    for bad in [
        "https://evil.example.com/cb",
        "http://app.example.com/cb",
        "https://app.example.com.evil.io/",
        "https://app.example.com@evil.io/",
        "javascript:alert(1)",
        "",
    ]:
        status, problem = await get(
            pgw, "/oauth/authorize?redirect_uri=" + quote(bad, safe=""), key
        )
        assert status == 403, bad
        assert problem["title"] == "unauthorized origin"
    status, _ = await get(pgw, good + "&redirect_uri=" + quote("https://evil.io", safe=""), key)
    assert status == 403  # two values: ambiguous
    assert (await get(pgw, "/oauth/authorize?client_id=c", key))[0] == 200  # nothing to check
    assert (await pgw.admin("DELETE", path + "/app.example.com"))[0] == 204
    assert (await get(pgw, good, key))[0] == 403
    other = await pgw.account()
    await pgw.admin(
        "POST",
        f"/admin/v1/accounts/{other['id']}/callback-origins",
        json={"origin": "evil.example.com"},
    )
    evil = "/oauth/authorize?redirect_uri=" + quote("https://evil.example.com/cb", safe="")
    assert (await get(pgw, evil, key))[0] == 403  # another account's list is not ours


async def test_test_and_production_keys_reach_their_own_upstream(
    tmp_path: Path, upstream: TestServer, aiohttp_server
) -> None:
    from aiohttp import web

    test_app = web.Application()

    async def which(request: web.Request) -> web.Response:
        return web.json_response({"upstream": "test", "env": request.headers.get("X-Environment")})

    test_app.router.add_route("*", "/{tail:.*}", which)
    test_upstream = await aiohttp_server(test_app)
    settings = make_settings(
        tmp_path,
        str(upstream.make_url("")).rstrip("/"),
        upstream={"test_url": str(test_upstream.make_url("")).rstrip("/")},
        routes=ROUTES,
    )
    async with running_gateway(settings) as gw:
        test_key = await gw.new_key(is_test=True)
        live_key = await gw.new_key()
        assert (await get(gw, "/mcp/x", test_key))[1] == {"upstream": "test", "env": "test"}
        status, echo = await get(gw, "/mcp/x", live_key)
        assert status == 200 and ["X-Environment", "production"] in echo["headers"]
        status, echo = await get(gw, "/status", None)
        assert "raw_path" in echo  # public traffic has no environment: production upstream
    assert len(upstream.app[SEEN]) == 2
