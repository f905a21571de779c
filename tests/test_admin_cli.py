"""`gateway admin ...` driven as a subprocess against a running admin port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from support import ADMIN_TOKEN, Running, bearer

pytestmark = pytest.mark.both_stores

ServerFactory = Callable[..., Awaitable[TestServer]]


async def cli(gw: Running, *args: str, token: str | None = ADMIN_TOKEN) -> tuple[int, str, str]:
    return await cli_at(gw.admin_url, *args, token=token)


async def cli_at(url: str, *args: str, token: str | None = ADMIN_TOKEN) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_ADMIN_TOKEN"}
    if token is not None:
        env["GATEWAY_ADMIN_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "admin",
        "--url",
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_drives_the_whole_life_cycle(gw: Running) -> None:
    code, out, _ = await cli(
        gw, "--json", "accounts", "create", "CLI Co", "--id", "acct_cli", "--no-key"
    )
    assert code == 0 and json.loads(out)["id"] == "acct_cli"

    code, out, _ = await cli(
        gw,
        "keys",
        "create",
        "--account",
        "acct_cli",
        "--name",
        "from-cli",
        "--scope",
        "runtime:all",
        "--expires-in",
        "3600",
    )
    assert code == 0
    secret = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("key: "))
    assert "shown once" in out
    async with gw.session.get(gw.url + "/v1/auth", headers=bearer(secret)) as resp:
        assert resp.status == 200

    code, out, _ = await cli(gw, "keys", "list", "--account", "acct_cli")
    assert code == 0 and "from-cli" in out and "NAME" in out.splitlines()[0]
    assert secret not in out and secret[:11] in out  # masked only
    code, out, _ = await cli(gw, "--json", "keys", "list", "--account", "acct_cli")
    key_id = json.loads(out)["data"][0]["id"]

    code, out, _ = await cli(gw, "keys", "regenerate", key_id)
    assert code == 0
    new_secret = next(
        line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("key: ")
    )
    async with gw.session.get(gw.url + "/v1/auth", headers=bearer(secret)) as resp:
        assert resp.status == 401
    code, out, _ = await cli(gw, "keys", "revoke", key_id)
    assert code == 0 and "revoked" in out
    async with gw.session.get(gw.url + "/v1/auth", headers=bearer(new_secret)) as resp:
        assert resp.status == 401
    code, out, _ = await cli(gw, "keys", "get", key_id)
    assert code == 0 and new_secret not in out
    code, out, _ = await cli(gw, "keys", "delete", key_id)
    assert code == 0

    code, out, _ = await cli(gw, "origins", "add", "acct_cli", "App.Example.com")
    assert code == 0 and "app.example.com" in out
    code, out, _ = await cli(gw, "origins", "list", "acct_cli")
    assert "app.example.com" in out
    code, out, _ = await cli(gw, "origins", "remove", "acct_cli", "app.example.com")
    assert code == 0

    code, out, _ = await cli(gw, "accounts", "deactivate", "acct_cli")
    assert code == 0 and "deactivated" in out
    code, out, _ = await cli(gw, "accounts", "activate", "acct_cli")
    assert code == 0 and "active" in out
    code, out, _ = await cli(gw, "accounts", "list")
    assert "acct_cli" in out
    code, out, _ = await cli(gw, "audit", "--account", "acct_cli")
    assert code == 0 and "key.deleted" in out and "callback_origin.added" in out
    code, out, _ = await cli(gw, "--json", "audit", "--account", "acct_cli", "--all")
    assert len(json.loads(out)["data"]) == 9


async def test_cli_errors_exit_non_zero_with_the_problem(gw: Running) -> None:
    code, _, err = await cli(gw, "keys", "get", "no-such-key")
    assert code == 1 and "Key not found (404)" in err
    code, _, err = await cli(gw, "keys", "create", "--account", "nobody")
    assert code == 1 and "Account not found" in err
    code, _, err = await cli(gw, "origins", "add", "nobody", "https://x.example")
    assert code == 1 and "origin" in err
    code, _, err = await cli(gw, "accounts", "list", token="wrong-token-wrong-token")
    assert code == 1 and "unauthorized" in err
    code, _, err = await cli(gw, "accounts", "list", token=None)
    assert code == 2 and "GATEWAY_ADMIN_TOKEN" in err
    code, _, err = await cli(gw, "--url", "http://127.0.0.1:1", "accounts", "list")
    assert code == 1 and "cannot reach" in err
    assert "Traceback" not in err


async def test_a_problem_is_said_once_on_one_line(gw: Running) -> None:
    await cli(gw, "accounts", "create", "Once", "--id", "acct_once", "--no-key")
    code, _, err = await cli(
        gw, "keys", "create", "--account", "acct_once", "--expires-at", "2030-01-31T12:00:00+05"
    )
    assert code == 1
    assert err.splitlines() == [
        "gateway admin: Validation failed (400): expires_at: must be an RFC 3339 timestamp"
        " with a time zone, e.g. 2030-01-31T12:00:00Z"
    ]
    code, _, err = await cli(
        gw, "keys", "create", "--account", "acct_once", "--expires-in", "5", "--name", "x\ty"
    )
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.count("name: ") == 1 and err.count("expires_in: ") == 1, err
    code, _, err = await cli(gw, "keys", "list", "--limit", "0")
    assert code == 1 and err.count("must be between 1 and 500") == 1, err
    code, _, err = await cli(gw, "keys", "get", "no-such-key")
    assert code == 1 and err.splitlines() == ["gateway admin: Key not found (404)"]


def test_help_names_webhooks_and_what_store_copy_leaves_behind() -> None:
    def help_of(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "gateway", *args, "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        return " ".join(run.stdout.split())  # argparse wraps lines where it likes

    assert "admin manage accounts, keys, origins and webhooks;" in help_of()
    assert "webhook deliveries and events" in help_of("admin")
    copy = help_of("store", "copy")
    assert "signing secrets" in copy and "webhook settings" in copy
    assert "Not copied: the webhook outbox" in copy and "sessions" in copy


async def test_a_reader_that_leaves_early_gets_exit_141_and_no_traceback(gw: Running) -> None:
    """`gateway admin keys list | head -1`: once the reader has gone, the command stops
    quietly with the status a shell gives a process killed by SIGPIPE (128 + 13)."""
    account = await gw.account(provision_production_key=False)
    for n in range(40):
        await gw.key(account["id"], name=f"key-{n}")
    env = dict(os.environ, GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN)
    admin = ("admin", "--url", gw.admin_url)
    for args, codes in (
        ((*admin, "keys", "list"), {141}),  # fits stdout's buffer: fails at the last flush
        ((*admin, "--json", "keys", "list", "--limit", "500"), {141}),  # fails inside print
        # argparse writes these itself and may swallow the failed write, then exit 0.
        (("--version",), {0, 141}),
        (("--help",), {0, 141}),
    ):
        read, write = os.pipe()
        os.close(read)  # the reader has gone before the first byte
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            *args,
            stdout=write,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        os.close(write)
        _, err = await proc.communicate()
        assert proc.returncode in codes and err.decode() == "", (args, proc.returncode, err)


async def stub(aiohttp_server: ServerFactory, answer: Callable[[web.Request], web.Response]) -> str:
    """An admin API stand-in that answers every request with `answer`, recording what it saw."""
    app = web.Application()
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return answer(request)

    app.router.add_route("*", "/{tail:.*}", handler)
    app[SEEN_KEY] = seen
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


SEEN_KEY = web.AppKey("seen", list)


async def test_a_redirect_is_reported_and_never_followed_with_the_token(
    aiohttp_server: ServerFactory,
) -> None:
    catcher_app = web.Application()
    caught: list[dict[str, str]] = []

    async def catch(request: web.Request) -> web.Response:
        caught.append(dict(request.headers))
        return web.json_response({"data": [], "next_cursor": None})

    catcher_app.router.add_route("*", "/{tail:.*}", catch)
    catcher = await aiohttp_server(catcher_app)
    elsewhere = str(catcher.make_url("/admin/v1/accounts"))
    for status in (301, 302, 303, 307, 308):
        url = await stub(
            aiohttp_server,
            lambda _r, status=status: web.Response(status=status, headers={"Location": elsewhere}),
        )
        code, out, err = await cli_at(url, "accounts", "list")
        assert code == 1 and out == ""
        assert "redirect" in err and "not followed" in err and "Traceback" not in err
    assert caught == []  # the second host never heard from the CLI, token or not


async def test_control_characters_from_the_api_never_reach_the_terminal(
    aiohttp_server: ServerFactory,
) -> None:
    forged = "ok\x1b[2K\x1b[1Aadmin  revoked\x1b]0;owned\x07\x9b31m\r"
    key = {
        "id": "k1",
        "name": forged,
        "key_masked": "sk_live_AbC...wxyz",
        "environment": "production",
        "status": "active",
        "expires_at": None,
        "last_used_at": None,
        "scopes": [forged],
        "description": forged,
    }

    def answer(request: web.Request) -> web.Response:
        if request.path.endswith("/keys"):
            return web.json_response({"data": [key], "next_cursor": None})
        if request.path.endswith("/missing"):
            return web.json_response({"title": forged, "status": 404, "detail": forged}, status=404)
        return web.json_response(key)

    url = await stub(aiohttp_server, answer)
    for args in (("keys", "list"), ("keys", "get", "k1"), ("keys", "get", "missing")):
        code, out, err = await cli_at(url, *args)
        for stream in (out, err):
            assert not any(c in stream for c in "\x1b\x07\x9b\r"), (args, stream)
        assert "\\x1b[2K" in out + err  # shown, escaped
    code, out, _ = await cli_at(url, "--json", "keys", "get", "k1")
    assert code == 0 and "\x1b" not in out and json.loads(out)["name"] == forged


async def test_a_bad_url_or_an_unexpected_answer_is_one_line_not_a_traceback(
    aiohttp_server: ServerFactory,
) -> None:
    cases: list[tuple[str, Any]] = []
    for url in ("admin.internal", "ftp://127.0.0.1:1", "http://", "http://[::1"):
        code, out, err = await cli_at(url, "accounts", "list")
        cases.append((url, (code, err)))
        assert code == 1 and "--url" in err and len(err.strip().splitlines()) == 1, (url, err)
        assert "Traceback" not in err
    answers = [
        lambda _r: web.json_response({"unexpected": True}),
        lambda _r: web.json_response([1, 2, 3]),
        lambda _r: web.Response(text="<html>a login page</html>"),
        lambda _r: web.json_response({"data": "not a list", "next_cursor": None}),
    ]
    for answer in answers:
        url = await stub(aiohttp_server, answer)
        for args in (
            ("accounts", "list"),
            ("origins", "add", "a", "b.example"),
            ("keys", "get", "k"),
        ):
            code, out, err = await cli_at(url, *args)
            assert code == 1, (args, out, err)
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


async def test_a_cursor_that_repeats_stops_the_walk_instead_of_looping(
    aiohttp_server: ServerFactory,
) -> None:
    url = await stub(
        aiohttp_server,
        lambda _r: web.json_response({"data": [{"id": "a", "name": "n"}], "next_cursor": "same"}),
    )
    code, out, err = await asyncio.wait_for(cli_at(url, "accounts", "list", "--all"), 20)
    assert code == 1 and "same page cursor twice" in err and "Traceback" not in err


async def test_cli_webhook_settings_and_signing_secret_rotation(gw: Running) -> None:
    code, out, _ = await cli(gw, "--json", "accounts", "create", "Hooks", "--no-key")
    account = json.loads(out)["id"]
    code, out, _ = await cli(gw, "keys", "create", "--account", account, "--name", "h")
    assert code == 0 and "signing secret: whsec_" in out and "shown once" in out
    assert out.count("whsec_") == 2  # the secret once, and its prefix in the details
    code, out, _ = await cli(gw, "--json", "keys", "list", "--account", account)
    key_id = json.loads(out)["data"][0]["id"]
    code, out, err = await cli(
        gw, "keys", "update", key_id, "--webhook-url", "http://example.com/hook"
    )
    assert code == 1 and "webhook_url: must use https" in err
    code, out, err = await cli(
        gw,
        "--json",
        "keys",
        "update",
        key_id,
        "--webhook-url",
        "https://8.8.8.8/hook",
        "--webhook-event",
        "key.revoked",
        "--webhook-event",
        "order.paid",
    )
    got = json.loads(out)
    assert code == 0 and got["webhook_url"] == "https://8.8.8.8/hook"
    assert got["webhook_events"] == ["key.revoked", "order.paid"] and got["webhook_enabled"]
    code, out, _ = await cli(gw, "--json", "keys", "update", key_id, "--disable-webhook")
    assert code == 0 and json.loads(out)["webhook_enabled"] is False
    code, out, _ = await cli(gw, "--json", "keys", "update", key_id, "--no-webhook")
    assert code == 0 and json.loads(out)["webhook_url"] is None
    code, _, err = await cli(gw, "keys", "update", key_id)
    assert code == 1 and "nothing to change" in err
    code, out, _ = await cli(gw, "keys", "rotate-signing-secret", key_id)
    assert code == 0 and "signing secret: whsec_" in out and "\nkey: " not in out
