"""Console and portal sessions and one-time links, in the store (SQLite and PostgreSQL): idle
expiry, one use per link under a race, the `[portal]` settings, and in a fleet the console's
and the portal's changes waiting for every instance like the admin API's."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import support
from aiohttp.test_utils import TestServer
from conftest import SECRET_KEY_ENV
from jsonschema import Draft202012Validator
from support import ADMIN_TOKEN, Running, make_settings, running_gateway, url_of

import gateway.store.sessions
from gateway.config import parse_settings
from gateway.errors import ConfigError
from gateway.store.records import Actor
from gateway.store.sessions import MAX_AGE_US, SessionStore, digest, new_token
from gateway.store.sql import SqlStore

MINIMAL = {"upstream": {"url": "http://127.0.0.1:9000"}}


def sessions(gw: Running) -> SessionStore:
    store = gw.gateway.store
    assert isinstance(store, SqlStore)
    return SessionStore(store)


@pytest.mark.both_stores
async def test_a_session_ends_when_idle_and_on_sign_out(gw: Running) -> None:
    store = sessions(gw)
    token, session = await store.create_session("portal", "acct_1", idle_seconds=0.5)
    assert (await store.session(token, "portal")) is not None
    assert await store.session(token, "console") is None  # a portal session is not the console's
    assert await store.session(token + "x", "portal") is None
    await asyncio.sleep(0.7)
    assert await store.session(token, "portal") is None

    token, _ = await store.create_session("console", None, idle_seconds=60)
    found = await store.session(token, "console")
    assert found is not None and found.account_id is None
    await store.end_session(token)
    assert await store.session(token, "console") is None


@pytest.mark.both_stores
async def test_a_link_opens_once_even_when_two_browsers_race(gw: Running) -> None:
    store = sessions(gw)
    token, _ = await store.create_link("acct_1", ttl_seconds=60)
    results = await asyncio.gather(*(store.redeem_link(token) for _ in range(5)))
    assert (results.count("acct_1"), results.count(None)) == (1, 4)
    expired, _ = await store.create_link("acct_1", ttl_seconds=0.2)
    await asyncio.sleep(0.3)
    assert await store.redeem_link(expired) is None
    assert await store.redeem_link("made-up") is None


@pytest.mark.both_stores
async def test_junk_tokens_and_cookies_never_make_the_store_write(
    gw: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone can post to {portal}/enter or send a `keygate_portal` cookie: a value that is not
    of the generated format costs nothing, an unknown well-formed one a read, never a write."""
    store = sessions(gw)
    sql = store.store
    link, _ = await store.create_link("acct_1", ttl_seconds=60)
    calls: list[str] = []
    real_write, real_one = sql._write, sql._one

    # Only the session store's own calls count: the gateway's background tasks (the expiry
    # watch, the webhook sender) use the same store meanwhile.
    def ours() -> bool:
        return sys._getframe(2).f_code.co_filename == gateway.store.sessions.__file__

    def write(*args: Any, **kwargs: Any) -> Any:
        if ours():
            calls.append("write")
        return real_write(*args, **kwargs)

    async def one(*args: Any, **kwargs: Any) -> Any:
        if ours():
            calls.append("read")
        return await real_one(*args, **kwargs)

    monkeypatch.setattr(sql, "_write", write)
    monkeypatch.setattr(sql, "_one", one)
    for junk in ("", "made-up", link[:-1], link + "A", link[:-1] + "!", "é" * 43, link + "\n"):
        assert await store.redeem_link(junk) is None
        assert await store.session(junk, "portal") is None
        await store.end_session(junk)
    assert calls == []
    assert await store.redeem_link(new_token()) is None
    assert calls == ["read"]
    assert await store.redeem_link(link) == "acct_1"
    assert calls[1:] == ["read", "write"]
    assert await store.redeem_link(link) is None  # used: a read again, no write
    assert calls[3:] == ["read"]


@pytest.mark.both_stores
async def test_only_digests_of_the_secrets_are_stored(gw: Running) -> None:
    store = sessions(gw)
    token, session = await store.create_session("console", None, idle_seconds=60)
    link, _ = await store.create_link("acct_1", ttl_seconds=60)
    sql = store.store
    rows = await sql._all("SELECT id, token_hash FROM ui_sessions")
    assert [(r[0], bytes(r[1])) for r in rows] == [(session.id, digest(token))]
    rows = await sql._all("SELECT token_hash FROM portal_links")
    assert [bytes(r[0]) for r in rows] == [digest(link)]


@pytest.mark.parametrize(
    ("portal", "key", "fragment"),
    [
        ({"enabled": True}, "portal.public_url", "is required when portal.enabled = true"),
        ({"public_url": "ftp://x"}, "portal.public_url", "http:// or https://"),
        ({"public_url": "https://a.example/?t=1"}, "portal.public_url", "query"),
        ({"path": "portal"}, "portal.path", 'like "/portal"'),
        ({"path": "/portal/"}, "portal.path", "no trailing /"),
        ({"path": "/a/../b"}, "portal.path", "dot segment"),
        ({"path": "/v1/auth"}, "portal.path", "taken by the gateway's own endpoints"),
        ({"path": "/v1"}, "portal.path", "taken by the gateway's own endpoints"),
        ({"path": "/api"}, "portal.path", "taken by the gateway's own endpoints"),
        ({"path": "/api/v1"}, "portal.path", "taken by the gateway's own endpoints"),
        ({"path": "/api/v1/access-keys"}, "portal.path", "taken by the gateway's own endpoints"),
        ({"path": "/api/v1/access-keys/x"}, "portal.path", "taken by the gateway's own endpoints"),
        ({"path": "/v1/auth/portal"}, "portal.path", "taken by the gateway's own endpoints"),
        ({"link_ttl_seconds": 0}, "portal.link_ttl_seconds", "between 1 and 86400"),
        ({"session_idle_seconds": "30"}, "portal.session_idle_seconds", "an integer"),
        ({"colour": "blue"}, "portal.colour", "unknown key"),
    ],
)
def test_bad_portal_settings_name_the_file_and_the_key(
    portal: dict[str, Any], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({**MINIMAL, "portal": portal}, "g.toml")
    message = str(info.value)
    assert message.startswith(f"g.toml: {key}: "), message
    assert fragment in message and "\n" not in message


def test_portal_defaults_and_a_public_url_without_its_trailing_slash() -> None:
    s = parse_settings(MINIMAL, "g.toml").portal
    assert (s.enabled, s.path, s.public_url) == (False, "/portal", None)
    assert (s.link_ttl_seconds, s.session_idle_seconds) == (300, 1800)
    on = {"enabled": True, "public_url": "https://api.example.com/", "path": "/keys"}
    s = parse_settings({**MINIMAL, "portal": on}, "g.toml").portal
    assert (s.public_url, s.path) == ("https://api.example.com", "/keys")
    for beside in ("/v1x", "/v2", "/v1/keys", "/api/v2", "/api/v1/keys"):
        assert parse_settings({**MINIMAL, "portal": {"path": beside}}, "g.toml").portal.path


async def test_portal_sessions_need_the_portal_enabled_and_a_live_account(gw: Running) -> None:
    await gw.account(id="acct_off")
    status, doc = await gw.admin("POST", "/admin/v1/accounts/acct_off/portal-sessions")
    assert status == 409 and "portal.enabled" in doc["detail"]


async def test_a_portal_session_answers_as_documented(tmp_path: Path, upstream: TestServer) -> None:
    portal = {"enabled": True, "public_url": "https://api.example.com/", "link_ttl_seconds": 60}
    settings = make_settings(tmp_path, url_of(upstream), portal=portal)
    async with running_gateway(settings) as gw:
        status, spec = await gw.admin("GET", "/admin/v1/openapi.json")
        operation = spec["paths"]["/admin/v1/accounts/{account_id}/portal-sessions"]["post"]
        schema = operation["responses"]["201"]["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**schema, "components": spec["components"]})
        await gw.account(id="acct_on")
        before = time.time()
        status, doc = await gw.admin("POST", "/admin/v1/accounts/acct_on/portal-sessions")
        assert status == 201
        assert [e.message for e in validator.iter_errors(doc)] == []
        assert re.fullmatch(r"https://api\.example\.com/portal/enter#[A-Za-z0-9_-]{43}", doc["url"])
        expires = datetime.fromisoformat(doc["expires_at"]).timestamp()
        assert before + 59 <= expires <= time.time() + 61
        status, doc = await gw.admin("POST", "/admin/v1/accounts/nobody/portal-sessions")
        assert status == 404
        await gw.admin("PATCH", "/admin/v1/accounts/acct_on", json={"status": "deactivated"})
        status, doc = await gw.admin("POST", "/admin/v1/accounts/acct_on/portal-sessions")
        assert status == 409 and "deactivated" in doc["detail"]


async def test_cookies_are_secure_behind_https(tmp_path: Path, upstream: TestServer) -> None:
    portal = {"enabled": True, "public_url": "https://api.example.com"}
    settings = make_settings(tmp_path, url_of(upstream), portal=portal)
    async with running_gateway(settings) as gw:
        await gw.account(id="acct_tls", provision_production_key=False)
        status, doc = await gw.admin("POST", "/admin/v1/accounts/acct_tls/portal-sessions")
        token = doc["url"].partition("#")[2]
        async with gw.session.post(
            gw.url + "/portal/enter", data={"token": token}, allow_redirects=False
        ) as resp:
            assert resp.status == 303
            cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith("keygate_portal=")
        assert "; Secure" in cookie and "; HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert token not in cookie
        for proto, secure in (("https", True), ("http", False)):
            async with gw.session.post(
                gw.admin_url + "/ui/sign-in",
                data={"token": ADMIN_TOKEN},
                headers={"X-Forwarded-Proto": proto},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303
                cookie = resp.headers["Set-Cookie"]
            assert ("; Secure" in cookie) is secure
            assert ADMIN_TOKEN not in cookie


CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


async def test_in_a_fleet_console_and_portal_changes_wait_for_every_instance(
    tmp_path: Path, upstream: TestServer, pg_url: str
) -> None:
    portal = {"enabled": True, "public_url": "http://portal.invalid"}
    settings = make_settings(
        tmp_path,
        url_of(upstream),
        store={"url": pg_url},
        webhooks={"secret_key_env": SECRET_KEY_ENV},
        portal=portal,
    )
    async with running_gateway(settings) as gw:
        await gw.account(id="acct_fleet", provision_production_key=False)
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as browser:
            # The console on the admin port.
            await post(browser, gw.admin_url + "/ui/sign-in", {"token": ADMIN_TOKEN})
            page = await get(browser, gw.admin_url + "/ui/accounts/acct_fleet/")
            async with browser.post(
                gw.admin_url + "/ui/accounts/acct_fleet/origins",
                data={"csrf": csrf_of(page), "origin": "app.fleet.example"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303
                confirmed = resp.headers["X-Gateway-Propagation"]
            assert re.fullmatch(r"confirmed=1/1; revision=\d+", confirmed)

            # The portal on the data plane (the link's token posted as the page's script does).
            status, doc = await gw.admin("POST", "/admin/v1/accounts/acct_fleet/portal-sessions")
            token = doc["url"].partition("#")[2]
            await post(browser, gw.url + "/portal/enter", {"token": token})
            page = await get(browser, gw.url + "/portal/accounts/acct_fleet/")
            async with browser.post(
                gw.url + "/portal/accounts/acct_fleet/keys",
                data={"csrf": csrf_of(page), "environment": "test", "name": "fleet"},
            ) as resp:
                assert resp.status == 200 and "sk_test_" in await resp.text()
                confirmed = resp.headers["X-Gateway-Propagation"]
            assert re.fullmatch(r"confirmed=1/1; revision=\d+", confirmed)
        status, doc = await gw.admin(
            "GET", "/admin/v1/audit?account_id=acct_fleet&environment=test"
        )
        assert doc["data"][0]["actor"].startswith("portal:")


async def post(browser: aiohttp.ClientSession, url: str, form: dict[str, str]) -> None:
    async with browser.post(url, data=form) as resp:
        assert resp.status == 200, await resp.text()


async def get(browser: aiohttp.ClientSession, url: str) -> str:
    async with browser.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None
    return found.group(1)


PORTAL_ON = {"enabled": True, "public_url": "http://portal.invalid", "link_ttl_seconds": 60}
FORM = "application/x-www-form-urlencoded"


async def raw_post(
    gw: Running, url: str, body: bytes, ctype: str = FORM, **headers: str
) -> tuple[int, str, aiohttp.ClientResponse]:
    async with gw.session.post(
        url, data=body, headers={"Content-Type": ctype, **headers}, allow_redirects=False
    ) as resp:
        return resp.status, await resp.text(), resp


async def test_hostile_forms_are_refused_with_400_not_a_crash(
    tmp_path: Path, upstream: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not valid in the form's charset, an unknown charset, a CSRF token that
    is not ASCII: a page that says so, never a 500 and never a traceback in the log."""
    settings = make_settings(tmp_path, url_of(upstream), portal=PORTAL_ON)
    async with running_gateway(settings) as gw:
        caplog.set_level("WARNING")
        for url in (gw.admin_url + "/ui/sign-in", gw.url + "/portal/enter"):
            for body, ctype in (
                (b"token=\xff\xfe", FORM),
                (b"token=abc", FORM + "; charset=bogus"),
                (b"token=abc", FORM + "; charset=utf-32"),
            ):
                status, text, _ = await raw_post(gw, url, body, ctype)
                assert status == 400, (url, body, ctype, status)
                assert "could not be read" in text
        # With a session: a CSRF token that is not ASCII.
        status, _, resp = await raw_post(
            gw, gw.admin_url + "/ui/sign-in", f"token={ADMIN_TOKEN}".encode()
        )
        assert status == 303
        cookie = resp.cookies["keygate_console"].value
        status, text, _ = await raw_post(
            gw,
            gw.admin_url + "/ui/accounts",
            "csrf=é&name=x".encode(),
            Cookie=f"keygate_console={cookie}",
        )
        assert status == 403 and "no valid CSRF token" in text
        status, text, _ = await raw_post(
            gw,
            gw.admin_url + "/ui/accounts",
            b"csrf=\xff&name=x",
            Cookie=f"keygate_console={cookie}",
        )
        assert status == 400
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]


@pytest.mark.both_stores
async def test_a_session_in_use_still_ends_after_its_maximum_age(
    gw: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sessions(gw)
    made = [await store.create_session(kind, "acct_1", 86_400) for kind in ("console", "portal")]
    tokens = [token for token, _ in made]
    started = max(session.created_at for _, session in made)
    for offset, alive in ((MAX_AGE_US - 60_000_000, True), (MAX_AGE_US + 1, False)):
        monkeypatch.setattr(gateway.store.sessions, "now_us", lambda o=offset: started + o)
        for token, kind in zip(tokens, ("console", "portal"), strict=True):
            assert (await store.session(token, kind) is not None) is alive, (kind, offset)


async def console_sign_in(gw: Running, cookie: str = "") -> str:
    status, _, resp = await raw_post(
        gw,
        gw.admin_url + "/ui/sign-in",
        f"token={support.ADMIN_TOKEN}".encode(),
        Cookie=f"keygate_console={cookie}",
    )
    assert status == 303
    return resp.cookies["keygate_console"].value


async def console_status(gw: Running, cookie: str) -> int:
    async with gw.session.get(
        gw.admin_url + "/ui/",
        headers={"Cookie": f"keygate_console={cookie}"},
        allow_redirects=False,
    ) as resp:
        return resp.status


async def test_changing_the_admin_token_ends_console_sessions(
    tmp_path: Path, upstream: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, url_of(upstream))
    async with running_gateway(settings) as gw:
        cookie = await console_sign_in(gw)
        assert await console_status(gw, cookie) == 200
        store = sessions(gw).store
        rows = await store._all("SELECT token_hash FROM ui_sessions")
        (stored,) = [bytes(r[0]) for r in rows]
        assert stored != digest(cookie)
        assert hashlib.sha256(ADMIN_TOKEN.encode()).digest() != stored
    async with running_gateway(settings) as gw:  # a restart with the same token: still in
        assert await console_status(gw, cookie) == 200
    monkeypatch.setattr(support, "ADMIN_TOKEN", "a-new-admin-token-9876543210")
    async with running_gateway(settings) as gw:  # the token changed: signed out
        assert await console_status(gw, cookie) == 303
        assert await console_status(gw, await console_sign_in(gw)) == 200


async def test_a_new_sign_in_or_link_in_the_same_browser_ends_the_previous_session(
    tmp_path: Path, upstream: TestServer
) -> None:
    settings = make_settings(tmp_path, url_of(upstream), portal=PORTAL_ON)
    async with running_gateway(settings) as gw:
        first = await console_sign_in(gw)
        second = await console_sign_in(gw, first)
        assert await console_status(gw, first) == 303
        assert await console_status(gw, second) == 200

        await gw.account(id="acct_twice", provision_production_key=False)
        cookies = []
        for _ in range(2):
            status, doc = await gw.admin("POST", "/admin/v1/accounts/acct_twice/portal-sessions")
            token = doc["url"].partition("#")[2]
            previous = f"keygate_portal={cookies[-1]}" if cookies else ""
            status, _, resp = await raw_post(
                gw, gw.url + "/portal/enter", f"token={token}".encode(), Cookie=previous
            )
            assert status == 303
            cookies.append(resp.cookies["keygate_portal"].value)
        for cookie, wanted in zip(cookies, (401, 200), strict=True):
            async with gw.session.get(
                gw.url + "/portal/accounts/acct_twice/",
                headers={"Cookie": f"keygate_portal={cookie}"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == wanted


async def test_sign_in_and_link_forms_sent_from_another_site_are_refused(
    tmp_path: Path, upstream: TestServer
) -> None:
    """Login CSRF: a page elsewhere cannot sign a browser in, nor use up a link, by posting
    the form; `Sec-Fetch-Site` decides when present, else `Origin`."""
    settings = make_settings(tmp_path, url_of(upstream), portal=PORTAL_ON)
    async with running_gateway(settings) as gw:
        await gw.account(id="acct_xsite", provision_production_key=False)
        status, doc = await gw.admin("POST", "/admin/v1/accounts/acct_xsite/portal-sessions")
        link = f"token={doc['url'].partition('#')[2]}".encode()
        sign_in = f"token={ADMIN_TOKEN}".encode()
        admin_host, data_host = gw.admin_url.partition("//")[2], gw.url.partition("//")[2]
        refused: list[dict[str, str]] = [
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Sec-Fetch-Site": "none"},
            {"Sec-Fetch-Site": "cross-site", "Origin": "{own}"},
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
        ]
        for headers in refused:
            for url, host, body in (
                (gw.admin_url + "/ui/sign-in", admin_host, sign_in),
                (gw.url + "/portal/enter", data_host, link),
            ):
                sent = {k: v.format(own=f"http://{host}") for k, v in headers.items()}
                status, text, resp = await raw_post(gw, url, body, **sent)
                assert status == 403, (url, sent)
                assert "from another site" in text and "Set-Cookie" not in resp.headers
        # The link was not used up by any of those: it still opens the page once.
        for headers in (
            {"Sec-Fetch-Site": "same-origin"},
            {"Origin": f"http://{admin_host}"},
            {"Origin": f"https://{admin_host}"},  # behind a proxy that terminates TLS
            {},
        ):
            status, _, _ = await raw_post(gw, gw.admin_url + "/ui/sign-in", sign_in, **headers)
            assert status == 303, headers
        status, _, _ = await raw_post(
            gw,
            gw.url + "/portal/enter",
            link,
            Origin="http://portal.invalid",  # public_url
        )
        assert status == 303


async def test_the_portal_refuses_what_its_page_does_not_offer(
    tmp_path: Path, upstream: TestServer
) -> None:
    """A portal session cannot delete the production key nor create a second active one by
    posting forms the page does not show; it deletes test keys, and creates a production key
    when the account has none active. The console may do both (as the admin API may)."""
    settings = make_settings(tmp_path, url_of(upstream), portal=PORTAL_ON)
    async with running_gateway(settings) as gw:
        account = await gw.account(id="acct_door")
        live = account["production_key"]
        test = await gw.key("acct_door", is_test=True, name="t")
        status, doc = await gw.admin("POST", "/admin/v1/accounts/acct_door/portal-sessions")
        token = doc["url"].partition("#")[2]
        status, _, resp = await raw_post(gw, gw.url + "/portal/enter", f"token={token}".encode())
        cookie = f"keygate_portal={resp.cookies['keygate_portal'].value}"
        base = gw.url + "/portal/accounts/acct_door"
        async with gw.session.get(base + "/", headers={"Cookie": cookie}) as page:
            csrf = csrf_of(await page.text())

        async def production_keys() -> list[tuple[str, str]]:
            status, doc = await gw.admin("GET", "/admin/v1/keys?account_id=acct_door&is_test=false")
            return [(k["id"], k["status"]) for k in doc["data"]]

        form = f"csrf={csrf}&environment=production".encode()
        status, text, _ = await raw_post(gw, base + "/keys", form, Cookie=cookie)
        assert status == 400 and "already has an active production key" in text
        status, text, _ = await raw_post(
            gw, f"{base}/keys/{live['id']}/delete", f"csrf={csrf}".encode(), Cookie=cookie
        )
        assert status == 400 and "Only test keys" in text
        assert await production_keys() == [(live["id"], "active")]
        status, _, _ = await raw_post(
            gw, f"{base}/keys/{test['id']}/delete", f"csrf={csrf}".encode(), Cookie=cookie
        )
        assert status == 303
        await gw.admin("POST", f"/admin/v1/keys/{live['id']}/revoke")
        status, text, _ = await raw_post(gw, base + "/keys", form, Cookie=cookie)
        assert status == 200 and "sk_live_" in text
        assert len(await production_keys()) == 2


async def test_a_form_larger_than_64_kib_is_refused(tmp_path: Path, upstream: TestServer) -> None:
    """The console is mounted on the admin app, whose 1 MiB limit is the one aiohttp applies:
    the console's own 64 KiB is checked when the form is read (the portal's door reads at
    most 64 KiB in the first place)."""
    settings = make_settings(tmp_path, url_of(upstream), portal=PORTAL_ON)
    async with running_gateway(settings) as gw:
        body = b"token=" + b"a" * (100 * 1024)
        status, text, _ = await raw_post(gw, gw.admin_url + "/ui/sign-in", body)
        assert status == 413 and "Form too large" in text
        status, _, _ = await raw_post(gw, gw.url + "/portal/enter", body)
        assert status == 413


async def test_an_origin_with_a_slash_stored_by_an_older_release_can_be_removed(
    tmp_path: Path, upstream: TestServer
) -> None:
    settings = make_settings(tmp_path, url_of(upstream))
    async with running_gateway(settings) as gw:
        await gw.account(id="acct_legacy", provision_production_key=False)
        store = sessions(gw).store
        await store.add_origin("acct_legacy", "legacy.example/app", Actor(actor="admin"))
        cookie = f"keygate_console={await console_sign_in(gw)}"
        base = gw.admin_url + "/ui/accounts/acct_legacy/"
        async with gw.session.get(base, headers={"Cookie": cookie}) as resp:
            page = await resp.text()
        found = re.search(r'action="([^"]*/origins/[^"]*/remove)"', page)
        assert found is not None
        action = found.group(1)
        assert action == "/ui/accounts/acct_legacy/origins/legacy.example%2Fapp/remove"
        form = f"csrf={csrf_of(page)}".encode()
        status, _, _ = await raw_post(gw, gw.admin_url + action, form, Cookie=cookie)
        assert status == 303
        status, doc = await gw.admin("GET", "/admin/v1/accounts/acct_legacy/callback-origins")
        assert doc["data"] == []
