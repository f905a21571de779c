"""Admin API: accounts and key creation with the full validation of contract section 5."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from support import ADMIN_TOKEN, Running, bearer, make_settings, running_gateway

from gateway.keys import is_well_formed

pytestmark = pytest.mark.both_stores


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_healthz_needs_no_token(gw: Running) -> None:
    async with gw.session.get(gw.admin_url + "/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"


@pytest.mark.parametrize(
    "auth", [None, "Bearer wrong-token", f"bearer {ADMIN_TOKEN}", f"Basic {ADMIN_TOKEN}", "Bearer "]
)
async def test_admin_requires_the_admin_token(gw: Running, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    for path in ("/admin/v1/accounts", "/admin/v1/nope"):
        async with gw.session.post(
            gw.admin_url + path, json={"name": "x"}, headers=headers
        ) as resp:
            assert resp.status == 401
            assert resp.headers["Content-Type"] == "text/plain"
            assert await resp.text() == "Unauthorized"


async def test_a_data_plane_key_does_not_open_the_admin_port(gw: Running) -> None:
    account = await gw.account()
    key = account["production_key"]["key"]
    async with gw.session.post(
        gw.admin_url + "/admin/v1/accounts", json={"name": "x"}, headers=bearer(key)
    ) as resp:
        assert resp.status == 401


async def test_admin_paths_do_not_answer_on_the_data_port(gw: Running) -> None:
    key = (await gw.account())["production_key"]["key"]
    async with gw.session.post(
        gw.url + "/admin/v1/accounts",
        json={"name": "x"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as resp:
        assert resp.status == 401
    async with gw.session.post(
        gw.url + "/admin/v1/accounts", json={"name": "x"}, headers=bearer(key)
    ) as resp:
        echo = await resp.json()  # forwarded to the upstream like any other path
        assert echo["raw_path"] == "/admin/v1/accounts"


async def test_create_account_provisions_a_production_key_once(gw: Running) -> None:
    status, body = await gw.admin(
        "POST", "/admin/v1/accounts", json={"name": "Acme", "id": "acct_42"}
    )
    assert status == 201
    assert body["id"] == "acct_42" and body["name"] == "Acme" and body["status"] == "active"
    key = body["production_key"]
    assert (
        key["account_id"] == "acct_42"
        and key["is_test"] is False
        and key["environment"] == "production"
    )
    assert is_well_formed(key["key"], "sk") and key["key"].startswith("sk_live_")
    assert key["key_prefix"] == key["key"][:11]
    assert key["key_masked"] == f"{key['key'][:11]}...{key['key'][-4:]}"
    status, body = await gw.admin(
        "POST", "/admin/v1/accounts", json={"name": "NoKey", "provision_production_key": False}
    )
    assert status == 201 and "production_key" not in body
    assert re.fullmatch(r"[0-9a-f-]{36}", body["id"])


async def test_duplicate_account_id_is_409(gw: Running) -> None:
    await gw.account(id="dup")
    status, body = await gw.admin("POST", "/admin/v1/accounts", json={"name": "again", "id": "dup"})
    assert status == 409
    assert body["status"] == 409 and body["title"] == "Conflict"


async def test_create_key_returns_the_whole_key_object(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    before = datetime.now(UTC)
    status, key = await gw.admin(
        "POST",
        "/admin/v1/keys",
        json={
            "account_id": account["id"],
            "name": "ci key",
            "description": "for CI",
            "scopes": ["runtime:all"],
            "tool_pack_ids": ["tp_1"],
            "registered_user_ids": ["ru_1", "ru_2"],
            "is_test": True,
            "created_by": "alice",
            "service_account_id": "svc_1",
        },
    )
    assert status == 201, key
    assert set(key) == {
        "id",
        "account_id",
        "name",
        "description",
        "key",
        "key_prefix",
        "key_masked",
        "scopes",
        "tool_pack_ids",
        "registered_user_ids",
        "is_test",
        "environment",
        "status",
        "expires_at",
        "created_at",
        "created_by",
        "service_account_id",
        "parent_key_id",
        "last_used_at",
        "last_used_ip",
        "last_used_user_agent",
        "revoked_at",
        # contract section 9: the signing secret once, and the webhook settings
        "signing_secret",
        "signing_secret_prefix",
        "webhook_url",
        "webhook_events",
        "webhook_enabled",
    }
    assert key["signing_secret"].startswith("whsec_")
    assert key["signing_secret_prefix"] == key["signing_secret"][:10]
    assert key["webhook_url"] is None and key["webhook_enabled"] is False
    assert (
        key["key"].startswith("sk_test_")
        and key["environment"] == "test"
        and key["status"] == "active"
    )
    assert key["scopes"] == ["runtime:all"] and key["tool_pack_ids"] == ["tp_1"]
    assert key["registered_user_ids"] == ["ru_1", "ru_2"]
    assert key["created_by"] == "alice" and key["service_account_id"] == "svc_1"
    assert (
        key["parent_key_id"] is None and key["revoked_at"] is None and key["last_used_at"] is None
    )
    expires = datetime.fromisoformat(key["expires_at"])
    assert timedelta(days=89, hours=23) < expires - before < timedelta(days=90, minutes=1)
    assert key["created_at"].endswith("Z")


async def test_key_defaults(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    key = await gw.key(account["id"])
    assert key["scopes"] == ["runtime:all", "management:all"]
    assert key["tool_pack_ids"] is None and key["registered_user_ids"] is None
    assert key["is_test"] is False and key["name"].startswith("production-key-")


async def test_expiry_options(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    never = await gw.key(account["id"], expires_at=None)
    assert never["expires_at"] is None
    soon = await gw.key(account["id"], expires_in=3600)
    delta = datetime.fromisoformat(soon["expires_at"]) - datetime.now(UTC)
    assert timedelta(minutes=59) < delta <= timedelta(hours=1)
    at = datetime.now(UTC) + timedelta(days=3)
    fixed = await gw.key(account["id"], expires_at=at.isoformat())
    assert abs(datetime.fromisoformat(fixed["expires_at"]) - at) < timedelta(seconds=1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "account_id"),
        ({"name": "x" * 256}, "name"),
        ({"name": ""}, "name"),
        ({"scopes": ["admin:everything"]}, "scopes"),
        ({"scopes": "runtime:all"}, "scopes"),
        ({"is_test": "yes"}, "is_test"),
        ({"is_test": 1}, "is_test"),
        ({"expires_in": 59}, "expires_in"),
        ({"expires_in": 600.0}, "expires_in"),
        ({"expires_in": "600"}, "expires_in"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2099-01-01T00:00:00"}, "expires_at"),
        ({"expires_at": "2099-01-01T00:00:00Z", "expires_in": 600}, "expires_in"),
        ({"tool_pack_ids": ["a,b"]}, "tool_pack_ids.0"),
        ({"registered_user_ids": [""]}, "registered_user_ids.0"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_invalid_key_bodies_are_400_naming_the_field(
    gw: Running, body: dict, field: str
) -> None:
    account = await gw.account(provision_production_key=False)
    payload = {"account_id": account["id"], **body} if field != "account_id" else body
    status, problem = await gw.admin("POST", "/admin/v1/keys", json=payload)
    assert status == 400, problem
    assert problem["status"] == 400 and problem["request_id"]
    assert field in [e["field"] for e in problem["errors"]], problem["errors"]


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b"", b'"string"', b"null"])
async def test_malformed_json_is_400(gw: Running, raw: bytes) -> None:
    status, problem = await gw.admin(
        "POST",
        "/admin/v1/keys",
        data=raw,
        headers={**gw.admin_headers, "Content-Type": "application/json"},
    )
    assert status == 400
    assert problem["errors"][0]["field"] == ""


async def test_unknown_account_is_404_account_not_found(gw: Running) -> None:
    status, problem = await gw.admin("POST", "/admin/v1/keys", json={"account_id": "nobody"})
    assert status == 404
    assert problem["title"] == "Account not found"


async def test_unknown_route_and_wrong_method_are_problem_json(gw: Running) -> None:
    async with gw.session.get(gw.admin_url + "/admin/v1/nothing", headers=gw.admin_headers) as resp:
        assert resp.status == 404
        assert resp.headers["Content-Type"] == "application/problem+json"
    async with gw.session.delete(
        gw.admin_url + "/admin/v1/accounts", headers=gw.admin_headers
    ) as resp:
        assert resp.status == 405
        assert resp.headers["Content-Type"] == "application/problem+json"
        assert "POST" in resp.headers["Allow"]


async def test_production_key_limit_is_409(tmp_path: Path, upstream: TestServer) -> None:
    settings = make_settings(
        tmp_path,
        str(upstream.make_url("")).rstrip("/"),
        keys={"max_production_keys_per_account": 1},
    )
    async with running_gateway(settings) as gw:
        account = await gw.account()  # provisions the one production key
        status, problem = await gw.admin(
            "POST", "/admin/v1/keys", json={"account_id": account["id"]}
        )
        assert status == 409
        assert problem["title"] == "Production key limit reached"
        test_key = await gw.key(account["id"], is_test=True)  # test keys do not count
        assert test_key["is_test"] is True


async def test_new_key_works_on_the_very_next_request(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    for _ in range(5):
        key = await gw.key(account["id"])
        async with gw.session.get(gw.url + "/v1/auth", headers=bearer(key["key"])) as resp:
            assert resp.status == 200


async def test_nul_characters_are_refused_or_not_found_on_every_store(gw: Running) -> None:
    """PostgreSQL text cannot hold NUL: such input must answer like any other unknown id or
    bad value (404/400), never as a store failure (503)."""
    account = await gw.account()
    for path in ("/admin/v1/keys/a%00b", f"/admin/v1/accounts/{account['id']}%00"):
        status, problem = await gw.admin("GET", path)
        assert status == 404, (path, problem)
    status, _ = await gw.admin("POST", "/admin/v1/keys/a%00b/revoke")
    assert status == 404
    status, problem = await gw.admin("GET", "/admin/v1/keys", params={"account_id": "a\x00"})
    assert status == 400 and problem["errors"][0]["field"] == "account_id"
    import base64
    import json

    cursor = base64.urlsafe_b64encode(json.dumps([1, "a\x00"]).encode()).decode().rstrip("=")
    status, problem = await gw.admin("GET", "/admin/v1/keys", params={"cursor": cursor})
    assert status == 400 and problem["errors"][0]["field"] == "cursor"
    status, problem = await gw.admin(
        "POST", "/admin/v1/accounts", json={"name": "ok", "id": "acct\x00x"}
    )
    assert status == 400


async def test_a_nul_in_a_path_is_404_and_in_a_query_400_on_either_store(gw: Running) -> None:
    """PostgreSQL text cannot hold NUL (asyncpg refuses it): nothing is named so, on either
    store, and a filter with one is refused rather than quietly matching nothing."""
    account = await gw.account(provision_production_key=False)
    acct = f"/admin/v1/accounts/{account['id']}"
    status, _ = await gw.admin("POST", acct + "/callback-origins", json={"origin": "a.example"})
    assert status == 201
    not_found = [
        ("GET", "/admin/v1/keys/%00"),
        ("PATCH", "/admin/v1/keys/a%00b"),
        ("DELETE", "/admin/v1/keys/%00"),
        ("POST", "/admin/v1/keys/%00/regenerate"),
        ("POST", "/admin/v1/keys/%00/revoke"),
        ("POST", "/admin/v1/keys/%00/signing-secret/rotate"),
        ("GET", "/admin/v1/accounts/%00"),
        ("PATCH", "/admin/v1/accounts/%00"),
        ("GET", "/admin/v1/accounts/%00/callback-origins"),
        ("POST", "/admin/v1/accounts/%00/callback-origins"),
        ("DELETE", "/admin/v1/accounts/%00/callback-origins/a.example"),
        ("DELETE", acct + "/callback-origins/%00"),
        ("DELETE", acct + "/callback-origins/a.example%00"),
        ("POST", "/admin/v1/webhook-deliveries/%00/retry"),
    ]
    bodies = {"PATCH": {"name": "x"}, "POST": {"origin": "b.example"}}
    for method, path in not_found:
        async with gw.session.request(
            method, gw.admin_url + path, headers=gw.admin_headers, json=bodies.get(method)
        ) as resp:
            assert resp.status == 404, (method, path, await resp.text())
            assert resp.content_type == "application/problem+json"
    bad_queries = [
        ("/admin/v1/keys", "account_id"),
        ("/admin/v1/keys", "cursor"),
        ("/admin/v1/accounts", "cursor"),
        ("/admin/v1/audit", "account_id"),
        ("/admin/v1/webhook-deliveries", "key_id"),
        ("/admin/v1/webhook-deliveries", "account_id"),
        (acct + "/callback-origins", "cursor"),
    ]
    for path, name in bad_queries:
        async with gw.session.get(
            f"{gw.admin_url}{path}?{name}=a%00", headers=gw.admin_headers
        ) as resp:
            assert resp.status == 400, (path, name, await resp.text())
            assert resp.content_type == "application/problem+json"
            assert (await resp.json())["errors"][0]["field"] == name
    status, doc = await gw.admin("GET", acct + "/callback-origins")
    assert [o["origin"] for o in doc["data"]] == ["a.example"]
