"""`gateway admin ...` driven as a subprocess against a running admin port."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from support import ADMIN_TOKEN, Running, bearer


async def cli(gw: Running, *args: str, token: str | None = ADMIN_TOKEN) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_ADMIN_TOKEN"}
    if token is not None:
        env["GATEWAY_ADMIN_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "admin",
        "--url",
        gw.admin_url,
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
