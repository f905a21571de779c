"""Where the gateway and an upstream could read one request two ways, and the admin API's input
rules that keep stored text safe: each case through the real `gateway serve` on loopback.

Path parameters (`;`), callback-parameter spellings, control characters in names, strict
RFC 3339 timestamps, canonical IPv6 origins and the store's file modes. Each was once let
through (issue 15); the fuzz properties at the end check the rules against independent
readings written the way Tomcat, Jetty, PHP, Rails and ASP.NET read requests.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support import (
    ADMIN_TOKEN,
    GatewayProcess,
    free_port,
    raw_exchange,
    resolve_dots,
    write_config,
)

from gateway.config import parse_settings
from gateway.origins import callback_values
from gateway.routes import RouteTable, has_dot_segments

pytestmark = pytest.mark.slow

ROUTES = """
[[routes]]
path = "/mcp/*"
scopes = ["runtime:all"]

[[routes]]
path = "/registered-users/{registered_user_id}/*"

[[routes]]
path = "/oauth/authorize"
callback_param = "redirect_uri"

[[routes]]
path = "/status/*"
public = true
"""
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Served:
    def __init__(self, tmp_path: Path, upstream_url: str) -> None:
        self.state = tmp_path / "state" / "gateway"
        self.db = self.state / "gw.db"
        self.port, self.admin_port = free_port(), free_port()
        config = write_config(
            tmp_path / "gw.toml",
            upstream_url,
            self.db,
            self.port,
            self.admin_port,
            ROUTES,
        )
        self.process = GatewayProcess(config, tmp_path / "gateway.log")
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.session: aiohttp.ClientSession

    async def admin(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        async with self.session.request(
            method, self.admin_url + path, json=body, headers=ADMIN
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def key(self, **fields: object) -> tuple[str, dict]:
        status, account = await self.admin(
            "POST", "/admin/v1/accounts", {"name": "r", "provision_production_key": False}
        )
        assert status == 201
        status, key = await self.admin(
            "POST", "/admin/v1/keys", {"account_id": account["id"], **fields}
        )
        assert status == 201, key
        return key["key"], key

    async def get(self, target: str, key: str | None = None) -> bytes:
        auth = f"Authorization: Bearer {key}\r\n" if key else ""
        request = f"GET {target} HTTP/1.1\r\nHost: h\r\n{auth}Connection: close\r\n\r\n"
        return await raw_exchange(self.port, request.encode())


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
async def served(tmp_path: Path, upstream: TestServer, umask_022: None) -> AsyncIterator[Served]:
    s = Served(tmp_path, str(upstream.make_url("")).rstrip("/"))
    s.process.start(s.port, s.admin_port)
    async with aiohttp.ClientSession() as session:
        s.session = session
        yield s
    s.process.stop()


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


# -- 1. path parameters --------------------------------------------------------------------------

PARAMS = [";", ";x", ";jsessionid=1", "%3B", "%3bx"]


def with_param(path: str, position: int, param: str) -> str:
    segments = path.split("/")
    segments[position] += param
    return "/".join(segments)


async def test_a_path_parameter_in_any_segment_cannot_dodge_a_scope(served: Served) -> None:
    lacking, _ = await served.key(scopes=["management:all"])
    holding, _ = await served.key(scopes=["runtime:all"])
    for position in (1, 2, 3):
        for param in PARAMS:
            target = with_param("/mcp/tools/list", position, param)
            assert status_of(await served.get(target, lacking)) == 403, target
            assert status_of(await served.get(target)) == 401, target
            reply = await served.get(target, holding)
            assert status_of(reply) == 200, target
            assert f'"raw_path": "{target}"'.encode() in reply  # forwarded byte for byte


async def test_a_path_parameter_cannot_dodge_a_path_parameter_check(served: Served) -> None:
    limited, _ = await served.key(registered_user_ids=["u1"])
    assert status_of(await served.get("/registered-users/u1/profile", limited)) == 200
    for target in (
        "/registered-users;x/u2/profile",  # the servlet reading selects the route with u2
        "/registered-users/u2;/profile",
        "/registered-users/u1;u2/profile",  # one reading says u1, the other u1;u2
        "/registered-users%3B/u2/profile",
    ):
        assert status_of(await served.get(target, limited)) == 404, target


@pytest.mark.parametrize(
    "target",
    [
        "/status/..;/mcp/tools",
        "/status/.;/mcp/tools",
        "/status/..;x=1/mcp/tools",
        "/status/..%3B/mcp/tools",
        "/status/%2e%2e;/mcp/tools",
    ],
)
async def test_dot_segments_with_a_path_parameter_are_refused(served: Served, target: str) -> None:
    assert status_of(await served.get(target)) == 400
    key, _ = await served.key(scopes=["management:all"])
    assert status_of(await served.get(target, key)) == 400


async def test_a_parameter_that_swallows_an_encoded_slash_cannot_dodge_a_scope(
    served: Served,
) -> None:
    """Tomcat cuts each raw segment at `;` before decoding: `/mcp;%2Fx/...` is `/mcp/...`, and
    `/;%2Fx/mcp%2Ftools` is `/mcp/tools` to one that merges slashes and decodes `%2F`."""
    lacking, _ = await served.key(scopes=["management:all"])
    limited, _ = await served.key(registered_user_ids=["u1"])
    for target in ("/;%2Fx/mcp%2Ftools", "/mcp;%2Fx/tools", "/;x%2F/mcp/tools"):
        assert status_of(await served.get(target, lacking)) == 403, target
    assert status_of(await served.get("/;%2Fx/registered-users%2Fu2/x", limited)) == 404


async def test_a_path_parameter_cannot_make_a_protected_path_public(served: Served) -> None:
    assert status_of(await served.get("/status/health")) == 200
    # To a servlet container this is /status/mcp; to most upstreams a path outside /status.
    assert status_of(await served.get("/status;x/health")) == 401
    assert status_of(await served.get("/status;/mcp/tools")) == 401


# -- 2. callback parameter spellings ---------------------------------------------------------


async def test_every_spelling_of_the_callback_parameter_is_checked(served: Served) -> None:
    key, created = await served.key()
    status, _ = await served.admin(
        "POST",
        f"/admin/v1/accounts/{created['account_id']}/callback-origins",
        {"origin": "app.example.com"},
    )
    assert status == 201
    good = quote("https://app.example.com/cb", safe="")
    evil = quote("https://evil.example/", safe="")
    assert status_of(await served.get(f"/oauth/authorize?redirect_uri={good}", key)) == 200
    for query in (
        f"redirect_uri[]={evil}",
        f"redirect_uri[0]={evil}",
        f"redirect_uri[a][b]={evil}",
        f"redirect.uri={evil}",
        f"redirect+uri={evil}",
        f"redirect%20uri={evil}",
        f"Redirect_URI={evil}",
        f"%20redirect_uri={evil}",
        f"redirect_uri%5B%5D={evil}",
        f"redirect_uri={good}&redirect_uri[]={evil}",
        f"redirect_uri={good};redirect.uri={evil}",
        f"redirect_uri[]={good}",  # even a good value: the spelling itself is ambiguous
        f"%5Bredirect_uri%5D={evil}",  # qs, Rack: [redirect_uri]
        f"redirect_uri%5D={evil}",  # Rack
        f"redirect%5Buri={evil}",  # PHP: an unclosed [ is _
        f"redirect_uri%00x={evil}",  # PHP cuts the name at NUL
    ):
        reply = await served.get(f"/oauth/authorize?{query}", key)
        assert status_of(reply) == 403, query
        assert b"unauthorized origin" in reply, query


# -- 4. control characters in stored text ------------------------------------------------------


async def test_control_characters_are_refused_in_names_and_descriptions(served: Served) -> None:
    status, account = await served.admin(
        "POST", "/admin/v1/accounts", {"name": "r", "provision_production_key": False}
    )
    forged = "ok\x1b[2K\x1b[1Aadmin  revoked\x1b]0;owned\x07"
    for field, body in (
        ("name", {"account_id": account["id"], "name": forged}),
        ("description", {"account_id": account["id"], "description": "a\x9bb"}),
        ("name", {"account_id": account["id"], "name": "line\nbreak"}),
    ):
        status, problem = await served.admin("POST", "/admin/v1/keys", body)
        assert status == 400, body
        assert [e["field"] for e in problem["errors"]] == [field]
        assert "control characters" in problem["errors"][0]["message"]
    status, problem = await served.admin("POST", "/admin/v1/accounts", {"name": "\x1b[31mred"})
    assert status == 400 and problem["errors"][0]["field"] == "name"
    _, key = await served.key(name="plain")
    status, problem = await served.admin(
        "PATCH", f"/admin/v1/keys/{key['id']}", {"description": "x\x00y"}
    )
    assert status == 400 and problem["errors"][0]["field"] == "description"
    # The self-service door applies the same rule.
    manager, _ = await served.key(scopes=["management:all"])
    async with served.session.post(
        served.url + "/api/v1/access-keys/",
        json={"name": forged},
        headers={"Authorization": f"Bearer {manager}"},
    ) as resp:
        problem = await resp.json(content_type=None)
        assert resp.status == 400 and problem["errors"][0]["field"] == "name"
    status, problem = await served.admin(
        "POST", "/admin/v1/keys", {"account_id": account["id"], "name": "a\u202eb"}
    )
    assert status == 400 and problem["errors"][0]["field"] == "name"  # reorders what is shown
    # Unicode text that is not a control character is fine.
    _, key = await served.key(name="Zürich 東京 ✓")
    assert key["name"] == "Zürich 東京 ✓"


# -- 6. file modes -------------------------------------------------------------------------------


async def test_the_store_and_its_directory_are_private(served: Served) -> None:
    await served.key()  # a write, so the -wal and -shm files exist
    for path in (served.state, served.state.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for suffix in ("", "-wal", "-shm", "-rev"):
        path = served.db.with_name(served.db.name + suffix)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# -- 7. timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2030-W05-1T12:00:00Z",  # ISO 8601 week date
        "2030-032T12:00:00Z",  # ISO 8601 ordinal date
        "2030-01-31T12:00:00+05",
        "2030-01-31T12:00:00+0530",
        "2030-01-31T12:00:00.123456789Z",
        "2030-01-31 12:00:00Z",
        "2030-01-31T12:00Z",
        "2030-01-31T12:00:00",
        "20300131T120000Z",
        "2030-02-30T12:00:00Z",
        "2030-01-31T24:00:00Z",
        "\uff12\uff10\uff13\uff10-01-31T12:00:00Z",  # fullwidth digits
    ],
)
async def test_only_rfc3339_timestamps_are_accepted(served: Served, text: str) -> None:
    status, account = await served.admin(
        "POST", "/admin/v1/accounts", {"name": "t", "provision_production_key": False}
    )
    status, problem = await served.admin(
        "POST", "/admin/v1/keys", {"account_id": account["id"], "expires_at": text}
    )
    assert status == 400 and problem["errors"][0]["field"] == "expires_at", problem
    status, problem = await served.admin("GET", "/admin/v1/audit?since=" + quote(text, safe=""))
    assert status == 400 and problem["errors"][0]["field"] == "since", problem


async def test_rfc3339_offsets_and_fractions_are_read_exactly(served: Served) -> None:
    _, key = await served.key(expires_at="2030-01-31T17:30:00.5+05:30")
    assert key["expires_at"] == "2030-01-31T12:00:00.500000Z"
    _, key = await served.key(expires_at="2030-01-31t12:00:00z")
    assert key["expires_at"] == "2030-01-31T12:00:00.000000Z"


# -- 8. IPv6 origins -----------------------------------------------------------------------------


async def test_ipv6_origins_are_stored_in_one_spelling(served: Served) -> None:
    key, created = await served.key()
    path = f"/admin/v1/accounts/{created['account_id']}/callback-origins"
    status, problem = await served.admin("POST", path, {"origin": "[fe80::1%eth0]:3000"})
    assert status == 400 and problem["errors"][0]["field"] == "origin"
    assert "zone id" in problem["errors"][0]["message"]
    status, added = await served.admin("POST", path, {"origin": "[0:0::1]:3000"})
    assert status == 201 and added["origin"] == "[::1]:3000"
    status, again = await served.admin("POST", path, {"origin": "[::1]:3000"})
    _, listed = await served.admin("GET", path)
    assert [o["origin"] for o in listed["data"]] == ["[::1]:3000"]
    for url in ("http://[::1]:3000/cb", "http://[0:0::1]:3000/cb", "https://[::1]:3000/"):
        target = "/oauth/authorize?redirect_uri=" + quote(url, safe="")
        assert status_of(await served.get(target, key)) == 200, url
    target = "/oauth/authorize?redirect_uri=" + quote("http://[::1]:3001/cb", safe="")
    assert status_of(await served.get(target, key)) == 403
    # Removing it by another spelling of the same address removes the stored entry.
    async with served.session.delete(
        served.admin_url + path + "/" + quote("[0:0::1]:3000", safe=""), headers=ADMIN
    ) as resp:
        assert resp.status == 204
    _, listed = await served.admin("GET", path)
    assert listed["data"] == []


# -- fuzz: any request the gateway lets through is allowed under every reading ---------------------

TABLE = RouteTable(
    parse_settings(
        {
            "upstream": {"url": "http://127.0.0.1:1"},
            "routes": [
                {"path": "/mcp/*", "scopes": ["runtime:all"]},
                {"path": "/status/*", "public": True},
            ],
        },
        "<fuzz>",
    ).routes
)


def oracle_readings(raw: bytes) -> list[list[bytes]]:
    """How real upstreams map a raw path to segments, written independently of routes.py."""
    parts = raw.split(b"/")[1:]
    plain = resolve_dots([unquote_to_bytes(p) for p in parts])  # most frameworks
    tomcat = resolve_dots([unquote_to_bytes(p.split(b";")[0]) for p in parts])  # strip, then decode
    jetty = resolve_dots([unquote_to_bytes(p).split(b";")[0] for p in parts])  # decode, then strip
    # Strip raw segments, decode, then split on the decoded slashes (Tomcat with
    # encodedSolidusHandling=decode, Spring's UrlPathHelper).
    cut = b"/".join(p.split(b";")[0] for p in parts)
    decoded_split = resolve_dots(unquote_to_bytes(cut).split(b"/"))
    return [plain, tomcat, jetty, decoded_split]


def oracle_kind(segments: list[bytes]) -> str:
    first = segments[0] if segments else b""
    return {b"mcp": "scoped", b"status": "public"}.get(first, "none")


SEGMENT = st.lists(
    st.sampled_from(
        ["mcp", "status", "x", ";", ";x", "%3B", "%3b", "..", ".", "", "%2e", "m", "%2F", ";%2F"]
    ),
    min_size=1,
    max_size=3,
).map("".join)


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(SEGMENT, min_size=1, max_size=4))
@example(["mcp;x", "tools"])
@example(["status", "..;", "mcp", "x"])
@example(["status;", "x"])
def test_fuzz_path_parameters_never_widen_access(segments: list[str]) -> None:
    raw = ("/" + "/".join(segments)).encode()
    if has_dot_segments(raw):
        return  # refused with 400: nothing to compare
    matched = TABLE.match("GET", raw)
    anonymous_passes = bool(matched) and all(route.public for route, _ in matched)
    unscoped_passes = all(not route.scopes for route, _ in matched)
    for reading in oracle_readings(raw):
        kind = oracle_kind(reading)
        if anonymous_passes:
            assert kind == "public", (raw, reading)
        if unscoped_passes:
            assert kind != "scoped", (raw, reading)


NAME = "redirect_uri"
KEY_SPELLING = st.sampled_from(
    [
        "redirect_uri",
        "redirect_uri[]",
        "redirect_uri[0]",
        "redirect_uri[a]",
        "redirect.uri",
        "redirect+uri",
        "redirect%20uri",
        "Redirect_Uri",
        "REDIRECT_URI",
        "%20redirect_uri",
        "redirect%5Furi",
        "redirect_uri%5B%5D",
        "redirect_url",
        "client_id",
        "redirect-uri",
        "%5Bredirect_uri%5D",
        "redirect_uri%5D",
        "redirect%5Buri",
        "redirect_uri%00x",
    ]
)


def php_name(key: str) -> str:
    """PHP's parse_str: cut at NUL, leading spaces dropped, `.`/space to `_`, `[...]` opens an
    array, an unclosed `[` is `_`."""
    key = key.split("\x00")[0].lstrip(" ")
    i = key.find("[")
    if i >= 0 and "]" in key[i:]:
        key = key[:i]
    return key.replace(".", "_").replace(" ", "_").replace("[", "_")


def rack_name(key: str) -> str:
    """Rack (and qs): leading brackets and the first bracketed run's trailing `]` dropped."""
    key = key.lstrip("[")
    end = min((key.find(c) for c in "[]" if c in key), default=len(key))
    return key[:end]


@settings(max_examples=400, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(KEY_SPELLING, st.sampled_from(["https://app.example.com/", "https://evil/"])),
        max_size=3,
    ),
    st.sampled_from(["&", ";"]),
)
def test_fuzz_callback_spellings_never_hide_a_value(
    pairs: list[tuple[str, str]], separator: str
) -> None:
    from urllib.parse import parse_qsl

    query = separator.join(f"{k}={quote(v, safe='')}" for k, v in pairs)
    checked = callback_values(query.encode(), NAME)
    if checked is None:
        return  # refused
    readings = [query, query.replace(";", "&")]
    for reading in readings:
        decoded = parse_qsl(reading, keep_blank_values=True)
        for framework in (php_name, rack_name, str.lower, lambda k: k):
            seen = [v for k, v in decoded if framework(k) in (NAME, NAME.lower())]
            assert set(seen) <= set(checked), (query, seen, checked)
            assert len(seen) <= 1, (query, seen)


async def test_an_existing_store_readable_by_others_is_named_at_start(
    tmp_path: Path, upstream: TestServer, umask_022: None
) -> None:
    db = tmp_path / "old.db"
    db.touch(mode=0o644)
    db.chmod(0o644)
    port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path / "gw.toml", str(upstream.make_url("")).rstrip("/"), db, port, admin_port
    )
    process = GatewayProcess(config, tmp_path / "out.log")
    process.start(port, admin_port)
    assert process.stop() == 0
    text = (tmp_path / "out.log").read_text()
    assert "readable by others (mode 0644)" in text and str(db) in text
    assert stat.S_IMODE(db.stat().st_mode) == 0o644  # named, not changed behind the operator's back
