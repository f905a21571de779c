"""Signing secrets and webhook settings on every key (contract section 9, first part): the
Standard Webhooks secret shown once and kept only encrypted; rotation with an overlap; webhook
URLs held to the egress rules on both doors."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook
from support import Running, bearer, make_settings, running_gateway

from gateway.errors import StoreError
from gateway.signing import SecretBox, load_box

pytestmark = pytest.mark.both_stores


async def stored_secrets(gw: Running, key_id: str) -> tuple[bytes | None, bytes | None, Any]:
    settings = gw.gateway.settings.store
    sql = (
        "SELECT signing_secret, previous_signing_secret, previous_signing_secret_until"
        " FROM api_keys WHERE id = "
    )
    if settings.is_postgres:
        import asyncpg

        conn = await asyncpg.connect(settings.url)
        try:
            row = await conn.fetchrow(sql + "$1", key_id)
        finally:
            await conn.close()
    else:
        with sqlite3.connect(settings.sqlite_path) as db:
            row = db.execute(sql + "?", (key_id,)).fetchone()
    return row[0], row[1], row[2]


def box_of(gw: Running) -> SecretBox:
    import os

    return load_box(gw.gateway.settings, os.environ)


async def test_a_new_key_has_a_signing_secret_shown_once_and_stored_sealed(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    key = await gw.key(account["id"])
    secret = key["signing_secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert key["signing_secret_prefix"] == secret[:10]
    _, got = await gw.admin("GET", f"/admin/v1/keys/{key['id']}")
    assert "signing_secret" not in got and got["signing_secret_prefix"] == secret[:10]
    sealed, previous, _ = await stored_secrets(gw, key["id"])
    assert sealed is not None and previous is None
    raw = base64.b64decode(secret[6:])
    assert secret.encode() not in bytes(sealed) and raw not in bytes(sealed)
    # The gateway can sign with what it stored: open it and sign; verify with the reference
    # library and the secret the caller was given.
    opened = box_of(gw).open(bytes(sealed), key["id"])
    assert opened == secret
    now = datetime.now(UTC)
    signature = Webhook(opened).sign("msg_1", now, '{"a":1}')
    Webhook(secret).verify(
        '{"a":1}',
        {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        },
    )
    # Sealed under this key's id: it does not open as another key's.
    with pytest.raises(StoreError):
        box_of(gw).open(bytes(sealed), "another-key")
    # Nothing else holds it: not the audit trail, not the key list.
    _, audit = await gw.admin("GET", "/admin/v1/audit", params={"limit": 500})
    _, keys = await gw.admin("GET", "/admin/v1/keys", params={"account_id": account["id"]})
    assert secret not in str(audit) and secret not in str(keys)
    # An account's provisioned production key gets one too.
    made = await gw.account()
    assert made["production_key"]["signing_secret"].startswith("whsec_")


async def test_rotation_and_regeneration_keep_the_old_secret_for_the_overlap(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    key = await gw.key(account["id"])
    first = key["signing_secret"]
    status, rotated = await gw.admin("POST", f"/admin/v1/keys/{key['id']}/signing-secret/rotate")
    assert status == 200 and rotated["signing_secret"] != first
    assert (
        "key" not in rotated and rotated["signing_secret_prefix"] == rotated["signing_secret"][:10]
    )
    sealed, previous, until = await stored_secrets(gw, key["id"])
    box = box_of(gw)
    assert box.open(bytes(sealed), key["id"]) == rotated["signing_secret"]
    assert previous is not None and box.open(bytes(previous), key["id"]) == first
    overlap_us = 86400 * 1_000_000
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    assert abs(int(until) - (now_us + overlap_us)) < 60 * 1_000_000
    _, audit = await gw.admin(
        "GET", "/admin/v1/audit", params={"action": "key.signing_secret_rotated"}
    )
    (entry,) = audit["data"]
    assert entry["details"]["old_signing_secret_prefix"] == first[:10]
    assert rotated["signing_secret"] not in str(entry) and first not in str(entry)
    # Regenerate: a new key and a new signing secret, both once.
    status, regenerated = await gw.admin("POST", f"/admin/v1/keys/{key['id']}/regenerate")
    assert status == 200 and regenerated["signing_secret"] not in (first, rotated["signing_secret"])
    sealed, previous, _ = await stored_secrets(gw, key["id"])
    assert box.open(bytes(previous), key["id"]) == rotated["signing_secret"]
    status, _ = await gw.admin("POST", "/admin/v1/keys/nope/signing-secret/rotate")
    assert status == 404
    await gw.admin("POST", f"/admin/v1/keys/{key['id']}/revoke")
    status, problem = await gw.admin("POST", f"/admin/v1/keys/{key['id']}/signing-secret/rotate")
    assert status == 409 and problem["title"] == "Key not active"


@pytest.fixture
async def hooks_gw(
    tmp_path: Path, upstream: TestServer, store_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    """A gateway whose webhooks may reach plain http on 127.0.0.1 (the tests' receivers)."""
    from conftest import LOOPBACK_WEBHOOKS, gateway_on

    async with gateway_on(store_kind, request, tmp_path, upstream, LOOPBACK_WEBHOOKS) as gw:
        yield gw


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://example.com/hook", "https"),
        ("ftp://example.com/hook", "https"),
        ("https://10.0.0.7/hook", "not a public address"),
        ("https://192.168.1.10/hook", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://[::1]/hook", "not a public address"),
        ("https://[fe80::1]/hook", "not a public address"),
        ("https://[::ffff:127.0.0.1]/hook", "not a public address"),
        ("https://224.0.0.1/hook", "not a public address"),
        ("https://[::127.0.0.1]/hook", "not a public address"),  # IPv4-compatible
        ("https://[64:ff9b::a9fe:a9fe]/hook", "not a public address"),  # NAT64 to metadata
        ("https://[2002:a9fe:a9fe::1]/hook", "not a public address"),  # 6to4
        ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook", "not a public address"),
        ("https://[fec0::1]/hook", "not a public address"),
        ("https://2130706433/hook", "not a public address"),  # 127.0.0.1, as a number
        ("https://0x7f.1/hook", "not a public address"),
        ("https://0.0.0.0/hook", "not a public address"),
        ("https://localhost/hook", "not a public address"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("https://example.com:99999/hook", "valid URL"),
    ],
)
async def test_webhook_urls_outside_the_rules_are_400_naming_webhook_url(
    gw: Running, url: str, fragment: str
) -> None:
    account = await gw.account(provision_production_key=False)
    status, problem = await gw.admin(
        "POST", "/admin/v1/keys", json={"account_id": account["id"], "webhook_url": url}
    )
    assert status == 400, problem
    assert problem["errors"][0]["field"] == "webhook_url"
    assert fragment in problem["errors"][0]["message"]
    key = await gw.key(account["id"])
    status, problem = await gw.admin(
        "PATCH", f"/admin/v1/keys/{key['id']}", json={"webhook_url": url}
    )
    assert status == 400 and problem["errors"][0]["field"] == "webhook_url"


async def test_webhook_settings_on_both_doors(hooks_gw: Running) -> None:
    gw = hooks_gw
    account = await gw.account(provision_production_key=False)
    hook = "http://127.0.0.1:9/hook"
    key = await gw.key(account["id"], webhook_url=hook, scopes=["management:all"])
    assert key["webhook_url"] == hook and key["webhook_events"] == ["*"]
    assert key["webhook_enabled"] is True
    status, got = await gw.admin(
        "PATCH",
        f"/admin/v1/keys/{key['id']}",
        json={"webhook_events": ["key.revoked", "order.paid", "order.paid"]},
    )
    assert status == 200 and got["webhook_events"] == ["key.revoked", "order.paid"]
    status, got = await gw.admin(
        "PATCH", f"/admin/v1/keys/{key['id']}", json={"webhook_enabled": False}
    )
    assert status == 200 and got["webhook_enabled"] is False and got["webhook_url"] == hook
    # A new URL for a switched-off endpoint leaves it off.
    moved = "http://127.0.0.1:9/v2/hook?token=s3cr3t-in-url"
    status, got = await gw.admin(
        "PATCH", f"/admin/v1/keys/{key['id']}", json={"webhook_url": moved}
    )
    assert status == 200 and got["webhook_url"] == moved and got["webhook_enabled"] is False
    _, audit = await gw.admin("GET", "/admin/v1/audit", params={"action": "key.updated"})
    assert "s3cr3t-in-url" not in str(audit)  # the audit trail keeps the origin only
    status, got = await gw.admin("PATCH", f"/admin/v1/keys/{key['id']}", json={"webhook_url": None})
    assert status == 200 and got["webhook_url"] is None and got["webhook_enabled"] is False
    status, problem = await gw.admin(
        "PATCH", f"/admin/v1/keys/{key['id']}", json={"webhook_enabled": True}
    )
    assert status == 400 and problem["errors"][0]["field"] == "webhook_enabled"
    status, problem = await gw.admin(
        "PATCH", f"/admin/v1/keys/{key['id']}", json={"webhook_events": ["Order Paid"]}
    )
    assert status == 400 and problem["errors"][0]["field"].startswith("webhook_events")
    _, audit = await gw.admin("GET", "/admin/v1/audit", params={"action": "key.updated"})
    assert any("webhook_url" in e["details"]["changes"] for e in audit["data"])
    # The self-service door: create with a webhook, PATCH its own child, not another's key.
    manager = key["key"]
    async with gw.session.post(
        gw.url + "/api/v1/access-keys/",
        json={"webhook_url": hook, "webhook_events": ["key.created"]},
        headers=bearer(manager),
    ) as resp:
        child = await resp.json()
        assert resp.status == 201, child
        assert child["webhook_url"] == hook and child["signing_secret"].startswith("whsec_")
    async with gw.session.patch(
        gw.url + f"/api/v1/access-keys/{child['id']}/",
        json={"webhook_url": "https://10.1.2.3/x"},
        headers=bearer(manager),
    ) as resp:
        problem = await resp.json()
        assert resp.status == 400 and problem["errors"][0]["field"] == "webhook_url"
    async with gw.session.patch(
        gw.url + f"/api/v1/access-keys/{child['id']}",
        json={"webhook_enabled": False, "name": "quiet"},
        headers=bearer(manager),
    ) as resp:
        got = await resp.json()
        assert resp.status == 200 and got["webhook_enabled"] is False and got["name"] == "quiet"
    other = await gw.key(account["id"])
    async with gw.session.patch(
        gw.url + f"/api/v1/access-keys/{other['id']}/",
        json={"webhook_url": hook},
        headers=bearer(manager),
    ) as resp:
        assert resp.status == 403


def test_the_secret_key_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    import os
    import stat

    from support import make_settings as settings_for

    sqlite = settings_for(tmp_path, "http://127.0.0.1:9")
    box = load_box(sqlite, {})
    key_file = Path(str(sqlite.store.sqlite_path) + "-secret.key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    sealed = box.seal("whsec_x", "k1")
    assert load_box(sqlite, {}).open(sealed, "k1") == "whsec_x"  # the same file, the same key
    env = settings_for(tmp_path, "http://127.0.0.1:9", webhooks={"secret_key_env": "SK"})
    key = base64.b64encode(os.urandom(32)).decode()
    assert load_box(env, {"SK": key}).open(load_box(env, {"SK": key}).seal("s", "k"), "k") == "s"
    for bad, message in (
        ({}, "SK, which is not set"),
        ({"SK": "short"}, "base64 of 32 random bytes"),
        ({"SK": base64.b64encode(b"x" * 16).decode()}, "base64 of 32 random bytes"),
    ):
        with pytest.raises(StoreError, match=message):
            load_box(env, bad)
    pg = settings_for(tmp_path, "http://127.0.0.1:9", store={"url": "postgresql://h/db"})
    with pytest.raises(StoreError, match=r"needs webhooks\.secret_key_env"):
        load_box(pg, {})
    # A different key does not open what another sealed.
    with pytest.raises(StoreError, match="does not open"):
        load_box(env, {"SK": key}).open(sealed, "k1")


async def test_keys_from_before_signing_secrets_get_one_by_rotation(
    tmp_path: Path, upstream: TestServer
) -> None:
    """A store made by the first schema: the migration adds the columns, such keys show a
    null prefix and keep working, and a rotation gives them a secret."""
    import hashlib

    from gateway.keys import generate_key
    from gateway.store.schema import MIGRATIONS

    db = tmp_path / "old.db"
    secret = generate_key("sk", False)
    with sqlite3.connect(db) as conn:
        conn.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
        conn.execute("INSERT INTO accounts VALUES ('acct_old', 'Old', 'active', 1, 1)")
        conn.execute(
            "INSERT INTO api_keys (id, account_id, name, key_hash, key_prefix, key_last4,"
            " scopes, is_test, created_at, updated_at) VALUES"
            " ('key_old', 'acct_old', 'old', ?, 'sk_live_Old', 'Old1', '[\"runtime:all\"]',"
            " 0, 1, 1)",
            (hashlib.sha256(secret.encode()).digest(),),
        )
    settings = make_settings(
        tmp_path, str(upstream.make_url("")).rstrip("/"), store={"url": f"sqlite:///{db}"}
    )
    async with running_gateway(settings) as gw:
        status, key = await gw.admin("GET", "/admin/v1/keys/key_old")
        assert status == 200 and key["signing_secret_prefix"] is None
        assert key["webhook_url"] is None and key["webhook_enabled"] is False
        async with gw.session.get(gw.url + "/v1/auth", headers=bearer(secret)) as resp:
            assert resp.status == 200
        status, rotated = await gw.admin("POST", "/admin/v1/keys/key_old/signing-secret/rotate")
        assert status == 200 and rotated["signing_secret"].startswith("whsec_")
        _, previous, until = await stored_secrets(gw, "key_old")
        assert previous is None and until is None  # nothing to overlap with
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
