"""Contract section 3, "What the upstream receives", and what the client gets back."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from support import SEEN, Running, bearer, make_settings, raw_exchange, running_gateway


def header_names(echo: dict) -> list[str]:
    return [k for k, _ in echo["headers"]]


def header(echo: dict, name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


async def test_identity_is_injected_and_the_key_never_reaches_the_upstream(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    created = await gw.key(
        account["id"],
        scopes=["runtime:all"],
        tool_pack_ids=["tp1", "tp2"],
        registered_user_ids=None,
    )
    async with gw.session.get(gw.url + "/p", headers=bearer(created["key"])) as resp:
        echo = await resp.json()
    assert header(echo, "Authorization") == []
    assert header(echo, "X-Account-Id") == [account["id"]]
    assert header(echo, "X-Key-Id") == [created["id"]]
    assert header(echo, "X-Environment") == ["production"]
    assert header(echo, "X-Scopes") == ["runtime:all"]
    assert header(echo, "X-Tool-Pack-Ids") == ["tp1,tp2"]
    assert header(echo, "X-Registered-User-Ids") == ["*"]
    assert created["key"] not in str(echo)


@pytest.mark.parametrize(
    "spoof",
    [
        "X-Account-Id",
        "x-account-id",
        "X-ACCOUNT-ID",
        "X_Account_Id",
        "x_key-id",
        "X-Environment",
        "x_scopes",
        "X-Tool-Pack-Ids",
        "X_Registered_User_Ids",
        "x-key_id",
    ],
)
async def test_client_sent_identity_headers_are_removed_in_every_spelling(
    gw: Running, spoof: str
) -> None:
    key = await gw.new_key(is_test=True)
    async with gw.session.get(gw.url + "/p", headers={**bearer(key), spoof: "evil"}) as resp:
        echo = await resp.json()
    assert "evil" not in str(echo["headers"])
    assert header(echo, "X-Environment") == ["test"]


async def test_headers_are_forwarded_in_order_with_hop_by_hop_removed(gw: Running) -> None:
    key = await gw.new_key()
    raw = (
        "GET /order?b=2&a=1&a=%2F HTTP/1.1\r\nHost: api.example.com\r\n"
        f"X-First: 1\r\nAuthorization: Bearer {key}\r\nConnection: keep-alive, X-Private\r\n"
        "X-Private: secret-hop\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
        "Proxy-Authorization: x\r\n"
        "Upgrade: h2c\r\nX-Second: 2\r\nX-First: 3\r\nAccept-Encoding: gzip\r\n\r\n"
    ).encode()
    port = gw.gateway.data_port
    reply = await raw_exchange(port, raw.replace(b"keep-alive, X-Private", b"close, X-Private"))
    status, _, body = reply.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), reply[:300]
    echo = json.loads(body)
    assert echo["raw_path"] == "/order?b=2&a=1&a=%2F"
    names = header_names(echo)
    forwarded = [n for n in names if n in ("X-First", "X-Second", "Accept-Encoding")]
    assert forwarded == ["X-First", "X-Second", "X-First", "Accept-Encoding"]
    assert header(echo, "X-First") == ["1", "3"]
    for gone in (
        "X-Private",
        "Keep-Alive",
        "TE",
        "Proxy-Authorization",
        "Upgrade",
        "Authorization",
        "Connection",
    ):
        assert header(echo, gone) == [], gone
    assert header(echo, "X-Forwarded-Host") == ["api.example.com"]
    assert header(echo, "X-Forwarded-Proto") == ["http"]
    assert header(echo, "X-Forwarded-For") == ["127.0.0.1"]


async def test_client_forwarding_headers_are_replaced_unless_the_peer_is_trusted(
    tmp_path: Path, upstream: TestServer
) -> None:
    spoofed = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil",
        "Forwarded": "for=6.6.6.6",
    }
    url = str(upstream.make_url("")).rstrip("/")
    async with running_gateway(make_settings(tmp_path / "a", url)) as gw:
        key = await gw.new_key()
        async with gw.session.get(gw.url + "/f", headers={**bearer(key), **spoofed}) as resp:
            echo = await resp.json()
        assert header(echo, "X-Forwarded-For") == ["127.0.0.1"]
        assert header(echo, "X-Forwarded-Proto") == ["http"]
        assert header(echo, "X-Forwarded-Host") == [f"127.0.0.1:{gw.gateway.data_port}"]
        assert header(echo, "Forwarded") == []
    async with running_gateway(
        make_settings(tmp_path / "b", url, server={"trusted_proxies": ["127.0.0.0/8"]})
    ) as gw:
        key = await gw.new_key()
        async with gw.session.get(gw.url + "/f", headers={**bearer(key), **spoofed}) as resp:
            echo = await resp.json()
        assert header(echo, "X-Forwarded-For") == ["6.6.6.6, 127.0.0.1"]
        assert header(echo, "X-Forwarded-Proto") == ["https"]
        assert header(echo, "X-Forwarded-Host") == ["evil"]
        assert header(echo, "Forwarded") == ["for=6.6.6.6"]


async def test_request_id_is_kept_when_well_formed_else_generated_and_echoed(gw: Running) -> None:
    key = await gw.new_key()
    async with gw.session.get(
        gw.url + "/r", headers={**bearer(key), "X-Request-Id": "req-123"}
    ) as resp:
        echo = await resp.json()
        assert resp.headers["X-Request-Id"] == "req-123"
    assert header(echo, "X-Request-Id") == ["req-123"]
    async with gw.session.get(
        gw.url + "/r", headers={**bearer(key), "X-Request-Id": "bad id with spaces"}
    ) as resp:
        echo = await resp.json()
        generated = resp.headers["X-Request-Id"]
    assert generated != "bad id with spaces" and len(generated) == 32
    assert header(echo, "X-Request-Id") == [generated]
    async with gw.session.get(gw.url + "/r") as resp:
        assert len(resp.headers["X-Request-Id"]) == 32  # on a 401 too


async def test_post_body_and_method_are_forwarded(gw: Running) -> None:
    key = await gw.new_key()
    payload = b"a" * 100_000
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        async with gw.session.request(
            method, gw.url + "/b?x=1", data=payload, headers=bearer(key)
        ) as resp:
            echo = await resp.json()
        assert echo["method"] == method and echo["body_size"] == len(payload)
        assert header(echo, "Content-Length") == [str(len(payload))]


async def test_chunked_request_body_is_streamed_upstream(gw: Running) -> None:
    key = await gw.new_key()

    async def gen():
        for i in range(50):
            yield b"%05d" % i * 1000

    async with gw.session.post(gw.url + "/c", data=gen(), headers=bearer(key)) as resp:
        echo = await resp.json()
    assert echo["body_size"] == 250_000
    assert header(echo, "Transfer-Encoding") == ["chunked"]


async def test_gzip_response_passes_through_untouched(gw: Running) -> None:
    key = await gw.new_key()
    async with gw.session.get(
        gw.url + "/gzip", headers={**bearer(key), "Accept-Encoding": "gzip"}
    ) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        raw = await resp.read()
    assert gzip.decompress(raw) == b'{"compressed": true}' * 100


async def test_repeated_set_cookie_survive_and_upstream_hop_headers_do_not(gw: Running) -> None:
    key = await gw.new_key()
    async with gw.session.get(gw.url + "/cookies", headers=bearer(key)) as resp:
        assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly", "c=3"]
        assert "X-Upstream-Private" not in resp.headers
        assert "Keep-Alive" not in resp.headers


async def test_redirects_are_returned_not_followed(gw: Running) -> None:
    key = await gw.new_key()
    async with gw.session.get(
        gw.url + "/redirect", headers=bearer(key), allow_redirects=False
    ) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/elsewhere"


async def test_head_and_204_have_no_body_and_keep_the_connection(gw: Running) -> None:
    key = await gw.new_key()
    auth = f"Authorization: Bearer {key}\r\n".encode()
    raw = (
        b"HEAD /x HTTP/1.1\r\nHost: h\r\n" + auth + b"\r\n"
        b"DELETE /no-content HTTP/1.1\r\nHost: h\r\n" + auth + b"\r\n"
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n" + auth + b"\r\n"
    )
    reply = await raw_exchange(gw.gateway.data_port, raw)
    assert reply.count(b"HTTP/1.1 200") == 2 and reply.count(b"HTTP/1.1 204") == 1
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert b"Content-Length" in head
    assert rest.startswith(b"HTTP/1.1 204")  # HEAD sent no body


async def test_pipelined_requests_are_answered_in_order(gw: Running) -> None:
    key = await gw.new_key()
    auth = f"Authorization: Bearer {key}\r\n".encode()
    reqs = b"".join(
        b"GET /seq/%d HTTP/1.1\r\nHost: h\r\n%s\r\n" % (i, auth if i != 3 else b"")
        for i in range(6)
    )
    reqs += b"GET /seq/last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n" + auth + b"\r\n"
    reply = await raw_exchange(gw.gateway.data_port, reqs)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)
    assert statuses == [b"200", b"200", b"200", b"401", b"200", b"200", b"200"]
    order = [int(p) for p in re.findall(rb'"raw_path": "/seq/(\d+)"', reply)]
    assert order == [0, 1, 2, 4, 5]


async def test_upstream_connections_are_kept_alive_and_reused(
    gw: Running, upstream: TestServer
) -> None:
    key = await gw.new_key()
    ports = set()
    for _ in range(20):
        async with gw.session.get(gw.url + "/k", headers=bearer(key)) as resp:
            ports.add((await resp.json())["peer_port"])
    assert len(ports) == 1


async def test_expect_100_continue_is_answered_after_authentication(gw: Running) -> None:
    key = await gw.new_key()
    port = gw.gateway.data_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
        + f"Authorization: Bearer {key}\r\n\r\n".encode()
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()
    # without a valid key: 401 straight away, no 100, and the body is never invited
    reply = await raw_exchange(
        port, b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 401") and b"100 Continue" not in reply
    assert b"Connection: close" in reply


async def test_unreachable_upstream_is_502_problem_json(tmp_path: Path) -> None:
    from support import free_port

    settings = make_settings(tmp_path, f"http://127.0.0.1:{free_port()}")
    async with running_gateway(settings) as gw:
        key = await gw.new_key()
        async with gw.session.get(gw.url + "/x", headers=bearer(key)) as resp:
            assert resp.status == 502
            assert resp.headers["Content-Type"] == "application/problem+json"
            doc = await resp.json(content_type=None)
        assert doc["status"] == 502 and doc["title"] == "Bad Gateway"
        assert doc["request_id"] == resp.headers["X-Request-Id"]
        assert "Errno" not in str(doc) and "refused" not in str(doc).lower()


async def test_upstream_timeout_is_504_problem_json(tmp_path: Path, upstream: TestServer) -> None:
    url = str(upstream.make_url("")).rstrip("/")
    settings = make_settings(tmp_path, url, upstream={"read_timeout": 0.3})
    async with running_gateway(settings) as gw:
        key = await gw.new_key()
        async with gw.session.get(gw.url + "/slow?delay=3", headers=bearer(key)) as resp:
            assert resp.status == 504
            doc = await resp.json(content_type=None)
        assert doc["title"] == "Gateway Timeout"
        # the gateway keeps serving
        async with gw.session.get(gw.url + "/x", headers=bearer(key)) as resp:
            assert resp.status == 200


async def test_test_keys_go_to_the_test_upstream(
    tmp_path: Path, upstream: TestServer, aiohttp_server
) -> None:
    other = web.Application()

    async def marker(request: web.Request) -> web.Response:
        return web.json_response({"upstream": "test"})

    other.router.add_route("*", "/{tail:.*}", marker)
    test_upstream = await aiohttp_server(other)
    settings = make_settings(
        tmp_path,
        str(upstream.make_url("")).rstrip("/"),
        upstream={"test_url": str(test_upstream.make_url("")).rstrip("/")},
    )
    async with running_gateway(settings) as gw:
        live = await gw.new_key()
        test = await gw.new_key(is_test=True)
        async with gw.session.get(gw.url + "/w", headers=bearer(test)) as resp:
            assert await resp.json() == {"upstream": "test"}
        async with gw.session.get(gw.url + "/w", headers=bearer(live)) as resp:
            assert (await resp.json())["raw_path"] == "/w"
    assert [r.path for r in upstream.app[SEEN]] == ["/w"]


async def test_upstream_base_path_is_prefixed(tmp_path: Path, upstream: TestServer) -> None:
    settings = make_settings(tmp_path, str(upstream.make_url("/api/v2")).rstrip("/"))
    async with running_gateway(settings) as gw:
        key = await gw.new_key()
        async with gw.session.get(gw.url + "/users?id=1", headers=bearer(key)) as resp:
            assert (await resp.json())["raw_path"] == "/api/v2/users?id=1"
