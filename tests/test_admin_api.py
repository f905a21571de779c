"""Admin API (contract section 5): life cycle, accounts, lists, origins, audit, errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from support import Running, bearer, store_execute

pytestmark = pytest.mark.both_stores


async def data_status(gw: Running, key: str) -> int:
    async with gw.session.get(gw.url + "/v1/auth", headers=bearer(key)) as resp:
        return resp.status


async def test_key_life_cycle_end_to_end(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    created = await gw.key(account["id"], name="life")
    old = created["key"]
    assert await data_status(gw, old) == 200

    status, regenerated = await gw.admin("POST", f"/admin/v1/keys/{created['id']}/regenerate")
    assert status == 200
    new = regenerated["key"]
    assert regenerated["id"] == created["id"] and new != old
    assert regenerated["key_prefix"] == new[:11]
    assert await data_status(gw, old) == 401
    assert await data_status(gw, new) == 200

    status, revoked = await gw.admin("POST", f"/admin/v1/keys/{created['id']}/revoke")
    assert status == 200 and revoked["status"] == "revoked" and revoked["revoked_at"]
    assert "key" not in revoked
    assert await data_status(gw, new) == 401
    status, again = await gw.admin("POST", f"/admin/v1/keys/{created['id']}/revoke")
    assert status == 200 and again["revoked_at"] == revoked["revoked_at"]

    status, _ = await gw.admin("POST", f"/admin/v1/keys/{created['id']}/regenerate")
    assert status == 409

    status, body = await gw.admin("DELETE", f"/admin/v1/keys/{created['id']}")
    assert status == 204 and body == ""
    status, problem = await gw.admin("GET", f"/admin/v1/keys/{created['id']}")
    assert status == 404 and problem["title"] == "Key not found"
    assert await data_status(gw, new) == 401
    status, _ = await gw.admin("DELETE", f"/admin/v1/keys/{created['id']}")
    assert status == 404


async def test_read_and_update_a_key(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    created = await gw.key(account["id"], name="before", description="d1")
    status, key = await gw.admin("GET", f"/admin/v1/keys/{created['id']}")
    assert status == 200 and "key" not in key and "signing_secret" not in key  # shown once
    assert {k: v for k, v in created.items() if k not in ("key", "signing_secret")} == key
    status, key = await gw.admin("PATCH", f"/admin/v1/keys/{created['id']}", json={"name": "after"})
    assert status == 200 and key["name"] == "after" and key["description"] == "d1"
    status, key = await gw.admin(
        "PATCH", f"/admin/v1/keys/{created['id']}", json={"description": None}
    )
    assert status == 200 and key["description"] is None
    for bad in ({"name": None}, {"name": ""}, {"scopes": ["runtime:all"]}, {"is_test": True}):
        status, problem = await gw.admin("PATCH", f"/admin/v1/keys/{created['id']}", json=bad)
        assert status == 400, bad
    assert await data_status(gw, created["key"]) == 200  # renaming does not disturb the key


async def test_accounts_read_rename_deactivate_reactivate(gw: Running) -> None:
    account = await gw.account("Old name")
    key = account["production_key"]["key"]
    path = f"/admin/v1/accounts/{account['id']}"
    status, got = await gw.admin("GET", path)
    assert status == 200 and got["name"] == "Old name" and "production_key" not in got
    status, got = await gw.admin("PATCH", path, json={"name": "New name"})
    assert status == 200 and got["name"] == "New name"
    status, got = await gw.admin("PATCH", path, json={"status": "deactivated"})
    assert status == 200 and got["status"] == "deactivated"
    assert await data_status(gw, key) == 401
    status, got = await gw.admin("PATCH", path, json={"status": "active"})
    assert got["status"] == "active"
    assert await data_status(gw, key) == 200
    for bad in ({"status": "paused"}, {"status": None}, {"name": None}, {"id": "x"}):
        status, _ = await gw.admin("PATCH", path, json=bad)
        assert status == 400, bad
    status, problem = await gw.admin("GET", "/admin/v1/accounts/nobody")
    assert status == 404 and problem["title"] == "Account not found"
    status, _ = await gw.admin("PATCH", "/admin/v1/accounts/nobody", json={"name": "x"})
    assert status == 404


async def test_account_list_paginates(gw: Running) -> None:
    ids = [(await gw.account(f"a{i}", provision_production_key=False))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        status, page = await gw.admin("GET", "/admin/v1/accounts", params=query)
        assert status == 200
        assert len(page["data"]) <= 2
        seen += [a["id"] for a in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first, each exactly once
    await gw.admin("PATCH", f"/admin/v1/accounts/{ids[0]}", json={"status": "deactivated"})
    status, page = await gw.admin("GET", "/admin/v1/accounts", params={"status": "deactivated"})
    assert [a["id"] for a in page["data"]] == [ids[0]]


async def test_key_list_filters_and_paginates(gw: Running) -> None:
    a = await gw.account(provision_production_key=False)
    b = await gw.account(provision_production_key=False)
    live = [await gw.key(a["id"], name=f"live{i}") for i in range(3)]
    test = await gw.key(a["id"], is_test=True)
    other = await gw.key(b["id"])
    revoked = await gw.key(a["id"])
    await gw.admin("POST", f"/admin/v1/keys/{revoked['id']}/revoke")

    async def ids(**params: str) -> list[str]:
        out, cursor = [], None
        while True:
            q = params | ({"cursor": cursor} if cursor else {})
            status, page = await gw.admin("GET", "/admin/v1/keys", params=q)
            assert status == 200, page
            out += [k["id"] for k in page["data"]]
            assert all("key" not in k for k in page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                return out

    assert await ids(account_id=a["id"], limit="2") == [
        k["id"] for k in reversed([*live, test, revoked])
    ]
    assert await ids(account_id=a["id"], is_test="true") == [test["id"]]
    assert set(await ids(account_id=a["id"], is_test="false")) == {
        k["id"] for k in [*live, revoked]
    }
    assert await ids(account_id=a["id"], status="revoked") == [revoked["id"]]
    assert set(await ids(status="active")) >= {other["id"], test["id"]}
    assert revoked["id"] not in await ids(status="active")
    assert await ids(account_id=b["id"]) == [other["id"]]


async def test_expired_status_is_derived(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    key = await gw.key(account["id"], expires_in=60)
    # move the expiry into the past the way time would
    await store_execute(gw, f"UPDATE api_keys SET expires_at = 1 WHERE id = '{key['id']}'")
    status, got = await gw.admin("GET", f"/admin/v1/keys/{key['id']}")
    assert got["status"] == "expired"
    status, page = await gw.admin("GET", "/admin/v1/keys", params={"status": "expired"})
    assert [k["id"] for k in page["data"]] == [key["id"]]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "x"},
        {"is_test": "yes"},
        {"status": "gone"},
        {"cursor": "garbage"},
        {"acount_id": "typo"},
    ],
)
async def test_bad_list_parameters_are_400(gw: Running, params: dict[str, str]) -> None:
    status, problem = await gw.admin("GET", "/admin/v1/keys", params=params)
    assert status == 400
    assert problem["errors"][0]["field"] == next(iter(params))


async def test_callback_origins(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    path = f"/admin/v1/accounts/{account['id']}/callback-origins"
    status, added = await gw.admin("POST", path, json={"origin": "App.Example.COM"})
    assert status == 201 and added["origin"] == "app.example.com"
    status, _ = await gw.admin("POST", path, json={"origin": "localhost:3000"})
    assert status == 201
    status, problem = await gw.admin("POST", path, json={"origin": "app.example.com"})
    assert status == 409
    status, page = await gw.admin("GET", path)
    assert [o["origin"] for o in page["data"]] == ["app.example.com", "localhost:3000"]
    status, _ = await gw.admin("DELETE", path + "/localhost:3000")
    assert status == 204
    status, _ = await gw.admin("DELETE", path + "/localhost:3000")
    assert status == 404
    status, page = await gw.admin("GET", path)
    assert [o["origin"] for o in page["data"]] == ["app.example.com"]
    status, _ = await gw.admin("GET", "/admin/v1/accounts/nobody/callback-origins")
    assert status == 404
    status, _ = await gw.admin(
        "POST", "/admin/v1/accounts/nobody/callback-origins", json={"origin": "a.com"}
    )
    assert status == 404


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com",
        "app.example.com/path",
        "*.example.com",
        "user@app.example.com",
        "app.example.com:0",
        "app.example.com:65536",
        "app.example.com:abc",
        "app.example.com.",
        "app..example.com",
        "-app.example.com",
        "app example.com",
        "bücher.example",
        "",
        "app.example.com:",
        "256.1.1.1",
        "[not-ipv6]",
        "app.example.com?x=1",
    ],
)
async def test_invalid_origin_entries_are_400(gw: Running, origin: str) -> None:
    account = await gw.account(provision_production_key=False)
    status, problem = await gw.admin(
        "POST", f"/admin/v1/accounts/{account['id']}/callback-origins", json={"origin": origin}
    )
    assert status == 400, origin
    assert problem["errors"][0]["field"] == "origin"


async def test_every_action_is_audited_with_actor_ip_and_request_id(gw: Running) -> None:
    account = await gw.account("Audited")
    acct = account["id"]
    await gw.admin("PATCH", f"/admin/v1/accounts/{acct}", json={"name": "Renamed"})
    key = await gw.key(acct, name="k1")
    await gw.admin("PATCH", f"/admin/v1/keys/{key['id']}", json={"name": "k2"})
    await gw.admin(
        "POST", f"/admin/v1/keys/{key['id']}/regenerate", headers={"X-Request-Id": "req-regen-1"}
    )
    await gw.admin("POST", f"/admin/v1/keys/{key['id']}/revoke")
    await gw.admin("DELETE", f"/admin/v1/keys/{key['id']}")
    await gw.admin(
        "POST", f"/admin/v1/accounts/{acct}/callback-origins", json={"origin": "a.example"}
    )
    await gw.admin("DELETE", f"/admin/v1/accounts/{acct}/callback-origins/a.example")
    test_key = await gw.key(acct, is_test=True)

    status, page = await gw.admin("GET", "/admin/v1/audit", params={"account_id": acct})
    assert status == 200
    actions = [e["action"] for e in page["data"]]
    assert actions == [
        "callback_origin.removed",
        "callback_origin.added",
        "key.deleted",
        "key.revoked",
        "key.regenerated",
        "key.updated",
        "key.created",
        "account.updated",
        "key.created",
        "account.created",
    ]
    for entry in page["data"]:
        assert entry["actor"] == "admin" and entry["environment"] == "production"
        assert entry["ip"] == "127.0.0.1" and entry["request_id"]
        assert entry["account_id"] == acct
    regen = next(e for e in page["data"] if e["action"] == "key.regenerated")
    assert regen["request_id"] == "req-regen-1" and regen["key_id"] == key["id"]
    assert regen["details"]["old_key_prefix"] == key["key_prefix"]
    renamed = next(e for e in page["data"] if e["action"] == "account.updated")
    assert renamed["details"] == {"changes": {"name": {"from": "Audited", "to": "Renamed"}}}
    text = str(page)
    assert key["key"] not in text and account["production_key"]["key"] not in text

    status, tests = await gw.admin(
        "GET", "/admin/v1/audit", params={"account_id": acct, "environment": "test"}
    )
    assert [(e["action"], e["key_id"]) for e in tests["data"]] == [("key.created", test_key["id"])]
    status, only = await gw.admin(
        "GET", "/admin/v1/audit", params={"account_id": acct, "action": "key.revoked"}
    )
    assert [e["action"] for e in only["data"]] == ["key.revoked"]


async def test_audit_since_and_pagination(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    await asyncio.sleep(0.01)
    mark = datetime.now(UTC)
    await asyncio.sleep(0.01)
    for i in range(4):
        await gw.key(account["id"], name=f"k{i}")
    since = mark.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    got, cursor = [], None
    while True:
        params = {"account_id": account["id"], "since": since, "limit": "3"} | (
            {"cursor": cursor} if cursor else {}
        )
        status, page = await gw.admin("GET", "/admin/v1/audit", params=params)
        assert status == 200
        got += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [e["details"]["name"] for e in got] == ["k3", "k2", "k1", "k0"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, page = await gw.admin("GET", "/admin/v1/audit", params={"since": future})
    assert page["data"] == []
    for bad in ({"since": "yesterday"}, {"action": "key.exploded"}, {"environment": "staging"}):
        status, _ = await gw.admin("GET", "/admin/v1/audit", params=bad)
        assert status == 400, bad


async def test_a_change_and_its_audit_row_commit_together_or_not_at_all(gw: Running) -> None:
    """If the audit row cannot be written, the change is rolled back (503, nothing changed)."""
    account = await gw.account(provision_production_key=False)
    await store_execute(
        gw,
        "CREATE TRIGGER refuse_key_audit BEFORE INSERT ON audit_log"
        " WHEN NEW.action = 'key.created' BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$;"
        " CREATE TRIGGER refuse_key_audit BEFORE INSERT ON audit_log FOR EACH ROW"
        " WHEN (NEW.action = 'key.created') EXECUTE FUNCTION refuse()",
    )
    status, problem = await gw.admin("POST", "/admin/v1/keys", json={"account_id": account["id"]})
    assert status == 503 and problem["status"] == 503
    assert "audit refused" not in str(problem)
    status, page = await gw.admin("GET", "/admin/v1/keys", params={"account_id": account["id"]})
    assert page["data"] == []
    await store_execute(
        gw,
        "DROP TRIGGER refuse_key_audit; CREATE TRIGGER refuse_revoke BEFORE UPDATE OF"
        " revoked_at ON api_keys BEGIN SELECT RAISE(ABORT, 'no'); END;",
        "DROP TRIGGER refuse_key_audit ON audit_log; CREATE TRIGGER refuse_revoke BEFORE UPDATE"
        " OF revoked_at ON api_keys FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    key = await gw.key(account["id"])
    status, _ = await gw.admin("POST", f"/admin/v1/keys/{key['id']}/revoke")
    assert status == 503
    status, page = await gw.admin("GET", "/admin/v1/audit", params={"action": "key.revoked"})
    assert page["data"] == []
    assert await data_status(gw, key["key"]) == 200


async def test_usage_is_written_behind_within_the_flush_interval(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    key = await gw.key(account["id"])
    before = datetime.now(UTC)
    async with gw.session.get(
        gw.url + "/x", headers={**bearer(key["key"]), "User-Agent": "usage-test/1.0"}
    ) as resp:
        assert resp.status == 200
    for _ in range(40):  # usage_flush_seconds = 0.2 in tests
        status, got = await gw.admin("GET", f"/admin/v1/keys/{key['id']}")
        if got["last_used_at"]:
            break
        await asyncio.sleep(0.05)
    assert datetime.fromisoformat(got["last_used_at"]) >= before - timedelta(seconds=1)
    assert got["last_used_ip"] == "127.0.0.1"
    assert got["last_used_user_agent"] == "usage-test/1.0"


async def test_metrics_need_the_token_and_count_requests(gw: Running) -> None:
    key = await gw.new_key()
    await data_status(gw, key)
    async with gw.session.get(gw.url + "/x", headers=bearer(key)) as resp:
        assert resp.status == 200
    async with gw.session.get(gw.url + "/x") as resp:
        assert resp.status == 401
    async with gw.session.get(gw.admin_url + "/metrics") as resp:
        assert resp.status == 401
    status, text = await gw.admin("GET", "/metrics")
    assert status == 200
    assert 'gateway_requests_total{class="2xx"} 2.0' in text
    assert 'gateway_auth_failures_total{reason="missing"} 1.0' in text
    assert "gateway_upstream_latency_seconds_count 1.0" in text
    assert 'gateway_upstream_latency_seconds_bucket{le="+Inf"} 1.0' in text
    assert "gateway_keys_cached 1.0" in text
    assert "gateway_store_write_lag_seconds" in text


async def test_errors_are_problem_json_with_request_id(gw: Running) -> None:
    for method, path in [
        ("GET", "/admin/v1/keys/nope"),
        ("POST", "/admin/v1/keys/nope/revoke"),
        ("PUT", "/admin/v1/keys"),
        ("GET", "/admin/v2/x"),
    ]:
        async with gw.session.request(
            method, gw.admin_url + path, headers=gw.admin_headers
        ) as resp:
            assert resp.status in (404, 405)
            assert resp.headers["Content-Type"] == "application/problem+json"
            doc = await resp.json(content_type=None)
            assert set(doc) >= {"type", "title", "status", "detail", "instance", "request_id"}
            assert doc["request_id"] == resp.headers["X-Request-Id"]
            assert doc["instance"] == path


async def test_non_json_content_type_is_415(gw: Running) -> None:
    status, problem = await gw.admin(
        "POST",
        "/admin/v1/accounts",
        data="name=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415 and problem["status"] == 415


async def test_revocation_holds_on_the_next_request_while_admin_reads_run_concurrently(
    gw: Running,
) -> None:
    """The index refresh must never read an older snapshot because an admin read is in flight."""
    account = await gw.account(provision_production_key=False)
    for _ in range(60):
        await gw.key(account["id"], is_test=True)
    stop = asyncio.Event()

    async def lister() -> None:
        while not stop.is_set():
            await gw.admin("GET", "/admin/v1/keys", params={"limit": "500"})

    readers = [asyncio.create_task(lister()) for _ in range(4)]
    keys = [await gw.key(account["id"]) for _ in range(30)]
    leaked = stale = 0
    try:
        for key in keys:
            assert await data_status(gw, key["key"]) == 200
            status, _ = await gw.admin("POST", f"/admin/v1/keys/{key['id']}/revoke")
            assert status == 200
            leaked += await data_status(gw, key["key"]) == 200
            status, got = await gw.admin("GET", f"/admin/v1/keys/{key['id']}")
            stale += got["status"] != "revoked"
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert (leaked, stale) == (0, 0)


@pytest.mark.parametrize(
    ("path", "params", "body"),
    [
        ("/admin/v1/keys", {"cursor": "WzE4NDQ2NzQ0MDczNzA5NTUxNjE1LCJ4Il0"}, None),
        ("/admin/v1/accounts", {"limit": "²"}, None),
        ("/admin/v1/audit", {"cursor": "WzE4NDQ2NzQ0MDczNzA5NTUxNjE1XQ"}, None),
        ("/admin/v1/keys", None, {"expires_at": "9999-12-31T23:59:59-10:00"}),
    ],
)
async def test_edge_values_are_400_not_500(
    gw: Running, path: str, params: dict | None, body: dict | None
) -> None:
    if body is not None:
        account = await gw.account(provision_production_key=False)
        status, problem = await gw.admin("POST", path, json={"account_id": account["id"], **body})
    else:
        status, problem = await gw.admin("GET", path, params=params)
    assert status == 400, problem
