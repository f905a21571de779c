"""Self-service keys on the data plane: /api/v1/access-keys for management:all keys, confined to
their account and environment, children never wider than their parent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import Running, bearer

BASE = "/api/v1/access-keys"


async def call(
    gw: Running, key: str, method: str, path: str, json: Any = None, **kw: Any
) -> tuple[int, Any]:
    async with gw.session.request(
        method, gw.url + path, headers=bearer(key), json=json, **kw
    ) as resp:
        ctype = resp.headers.get("Content-Type", "")
        body = await resp.json(content_type=None) if "json" in ctype else await resp.text()
        return resp.status, body


async def auth_status(gw: Running, key: str) -> int:
    async with gw.session.get(gw.url + "/v1/auth", headers=bearer(key)) as resp:
        return resp.status


@pytest.fixture
async def manager(gw: Running) -> dict[str, Any]:
    account = await gw.account(provision_production_key=False)
    key = await gw.key(
        account["id"],
        name="manager",
        scopes=["runtime:all", "management:all"],
        tool_pack_ids=["tp1", "tp2"],
        expires_in=86400,
    )
    return {"account": account, **key}


async def test_a_management_key_mints_a_child_that_inherits_and_records_its_parent(
    gw: Running, manager: dict
) -> None:
    status, child = await call(gw, manager["key"], "POST", BASE + "/", json={"name": "child"})
    assert status == 201, child
    assert child["parent_key_id"] == manager["id"]
    assert child["account_id"] == manager["account_id"] and child["is_test"] is False
    assert child["scopes"] == ["runtime:all", "management:all"]
    assert child["tool_pack_ids"] == ["tp1", "tp2"] and child["registered_user_ids"] is None
    assert (
        child["expires_at"] <= manager["expires_at"]
    )  # default: the earlier of 90 days and the parent's
    assert child["key"].startswith("sk_live_") and child["created_by"] == f"key:{manager['id']}"
    assert await auth_status(gw, child["key"]) == 200
    status, audit = await gw.admin(
        "GET",
        "/admin/v1/audit",
        params={"account_id": manager["account_id"], "action": "key.created"},
    )
    mine = [e for e in audit["data"] if e["key_id"] == child["id"]]
    assert mine and mine[0]["actor"] == f"key:{manager['id']}" and mine[0]["ip"] == "127.0.0.1"


async def test_narrower_children_are_allowed(gw: Running, manager: dict) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, child = await call(
        gw,
        manager["key"],
        "POST",
        BASE,
        json={
            "scopes": ["runtime:all"],
            "tool_pack_ids": ["tp2"],
            "registered_user_ids": ["u1"],
            "expires_at": soon,
        },
    )
    assert status == 201, child
    assert child["scopes"] == ["runtime:all"] and child["tool_pack_ids"] == ["tp2"]
    assert child["registered_user_ids"] == ["u1"]
    status, child = await call(gw, manager["key"], "POST", BASE, json={"expires_in": 3600})
    assert status == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["runtime:all", "other:scope"]}, "scopes"),
        ({"scopes": None}, "scopes"),
        ({"tool_pack_ids": ["tp1", "tp3"]}, "tool_pack_ids"),
        ({"tool_pack_ids": None}, "tool_pack_ids"),
        ({"expires_at": None}, "expires_at"),
        ({"expires_at": "2999-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_in": 86400 * 30}, "expires_in"),
        ({"account_id": "another"}, "account_id"),
        ({"is_test": True}, "is_test"),
        ({"parent_key_id": "x"}, "parent_key_id"),
        ({"created_by": "admin"}, "created_by"),
    ],
)
async def test_a_child_wider_than_its_parent_is_400_naming_the_field(
    gw: Running, manager: dict, body: dict, field: str
) -> None:
    status, problem = await call(gw, manager["key"], "POST", BASE, json=body)
    assert status == 400, problem
    assert field in [e["field"] for e in problem["errors"]]


async def test_unrestricted_lists_only_under_an_unrestricted_parent(gw: Running) -> None:
    account = await gw.account(provision_production_key=False)
    parent = await gw.key(account["id"], registered_user_ids=["u1"], expires_at=None)
    status, child = await call(
        gw, parent["key"], "POST", BASE, json={"tool_pack_ids": None, "expires_at": None}
    )
    assert status == 201 and child["tool_pack_ids"] is None and child["expires_at"] is None
    status, problem = await call(
        gw, parent["key"], "POST", BASE, json={"registered_user_ids": None}
    )
    assert status == 400 and problem["errors"][0]["field"] == "registered_user_ids"


async def test_the_management_scope_is_required(gw: Running) -> None:
    runtime_only = await gw.new_key(scopes=["runtime:all"])
    status, problem = await call(gw, runtime_only, "GET", BASE)
    assert status == 403 and "management:all" in problem["detail"]
    async with gw.session.get(gw.url + BASE) as resp:
        assert resp.status == 401


async def test_list_get_and_isolation_between_accounts_and_environments(
    gw: Running, manager: dict
) -> None:
    _, child = await call(gw, manager["key"], "POST", BASE, json={"name": "c1"})
    other_account = await gw.account()
    foreign = other_account["production_key"]
    test_key = await gw.key(manager["account_id"], is_test=True, scopes=["management:all"])
    for path in (BASE, BASE + "/"):
        status, page = await call(gw, manager["key"], "GET", path)
        assert status == 200
        assert {k["id"] for k in page["data"]} == {manager["id"], child["id"]}
        assert all("key" not in k for k in page["data"])
    status, got = await call(gw, manager["key"], "GET", f"{BASE}/{child['id']}/")
    assert status == 200 and got["id"] == child["id"] and "key" not in got
    assert (await call(gw, manager["key"], "GET", f"{BASE}/{child['id']}"))[0] == 200
    for other in (foreign["id"], test_key["id"], "no-such-id"):
        for method, suffix in (("GET", ""), ("POST", "/revoke/"), ("POST", "/regenerate")):
            status, problem = await call(gw, manager["key"], method, f"{BASE}/{other}{suffix}")
            assert status == 404, (other, suffix)
    status, page = await call(gw, test_key["key"], "GET", BASE)
    assert [k["id"] for k in page["data"]] == [test_key["id"]]
    status, test_child = await call(gw, test_key["key"], "POST", BASE, json={})
    assert (
        status == 201
        and test_child["key"].startswith("sk_test_")
        and test_child["environment"] == "test"
    )


async def test_regenerate_and_revoke_a_child(gw: Running, manager: dict) -> None:
    _, child = await call(gw, manager["key"], "POST", BASE, json={"scopes": ["runtime:all"]})
    status, regenerated = await call(
        gw, manager["key"], "POST", f"{BASE}/{child['id']}/regenerate/"
    )
    assert status == 200 and regenerated["key"] != child["key"]
    assert await auth_status(gw, child["key"]) == 401
    assert await auth_status(gw, regenerated["key"]) == 200
    status, revoked = await call(gw, manager["key"], "POST", f"{BASE}/{child['id']}/revoke")
    assert status == 200 and revoked["status"] == "revoked"
    assert await auth_status(gw, regenerated["key"]) == 401
    status, audit = await gw.admin(
        "GET", "/admin/v1/audit", params={"account_id": manager["account_id"]}
    )
    actors = {e["action"]: e["actor"] for e in audit["data"] if e["key_id"] == child["id"]}
    assert actors == {
        "key.created": f"key:{manager['id']}",
        "key.regenerated": f"key:{manager['id']}",
        "key.revoked": f"key:{manager['id']}",
    }


async def test_a_manager_acts_only_on_itself_and_the_keys_minted_under_it(
    gw: Running, manager: dict
) -> None:
    wide = await gw.key(manager["account_id"], expires_at=None)  # unrestricted, never expires
    narrow = await gw.key(
        manager["account_id"], scopes=["runtime:all"], tool_pack_ids=["tp1"], expires_in=600
    )
    _, child = await call(gw, manager["key"], "POST", BASE, json={})
    _, sibling = await call(gw, manager["key"], "POST", BASE, json={})
    for target in (wide, narrow):
        for action in ("regenerate", "revoke"):
            status, problem = await call(
                gw, manager["key"], "POST", f"{BASE}/{target['id']}/{action}"
            )
            assert status == 403, (target["name"], action)
    for action in ("regenerate", "revoke"):  # a child may not touch its sibling or its parent
        for target in (sibling, manager):
            status, _ = await call(gw, child["key"], "POST", f"{BASE}/{target['id']}/{action}")
            assert status == 403
    assert await auth_status(gw, wide["key"]) == 200
    assert await auth_status(gw, narrow["key"]) == 200
    status, rotated = await call(gw, manager["key"], "POST", f"{BASE}/{manager['id']}/regenerate")
    assert status == 200  # itself: yes
    assert await auth_status(gw, manager["key"]) == 401
    assert await auth_status(gw, rotated["key"]) == 200


async def test_a_leaked_manager_cannot_keep_access_through_the_production_key(gw: Running) -> None:
    account = await gw.account()
    production = account["production_key"]
    manager = await gw.key(account["id"], scopes=["management:all", "runtime:all"])
    status, _ = await call(gw, manager["key"], "POST", f"{BASE}/{production['id']}/regenerate")
    assert status == 403
    assert await auth_status(gw, production["key"]) == 200


async def test_revoking_a_parent_revokes_its_descendants_but_regenerating_it_does_not(
    gw: Running, manager: dict
) -> None:
    _, child = await call(gw, manager["key"], "POST", BASE, json={"name": "child"})
    _, grandchild = await call(
        gw, child["key"], "POST", BASE, json={"name": "grandchild", "scopes": ["runtime:all"]}
    )
    assert grandchild["parent_key_id"] == child["id"]
    status, regenerated = await gw.admin("POST", f"/admin/v1/keys/{manager['id']}/regenerate")
    assert status == 200
    assert await auth_status(gw, child["key"]) == 200
    assert await auth_status(gw, grandchild["key"]) == 200
    status, _ = await gw.admin("POST", f"/admin/v1/keys/{manager['id']}/revoke")
    assert status == 200
    assert await auth_status(gw, child["key"]) == 401
    assert await auth_status(gw, grandchild["key"]) == 401
    status, audit = await gw.admin(
        "GET",
        "/admin/v1/audit",
        params={"account_id": manager["account_id"], "action": "key.revoked"},
    )
    cascades = {e["key_id"]: e["details"].get("cascade_from") for e in audit["data"]}
    assert cascades == {
        manager["id"]: None,
        child["id"]: manager["id"],
        grandchild["id"]: manager["id"],
    }
    status, _ = await call(gw, child["key"], "POST", BASE, json={})
    assert status == 401


async def test_deleting_a_parent_revokes_its_children(gw: Running, manager: dict) -> None:
    _, child = await call(gw, manager["key"], "POST", BASE, json={})
    assert (await gw.admin("DELETE", f"/admin/v1/keys/{manager['id']}"))[0] == 204
    assert await auth_status(gw, child["key"]) == 401
    status, got = await gw.admin("GET", f"/admin/v1/keys/{child['id']}")
    assert got["status"] == "revoked" and got["parent_key_id"] == manager["id"]


async def test_wrong_methods_unknown_paths_and_bad_bodies(gw: Running, manager: dict) -> None:
    key = manager["key"]
    status, problem = await call(gw, key, "DELETE", BASE)
    assert status == 405
    status, _ = await call(gw, key, "GET", f"{BASE}/{manager['id']}/revoke")
    assert status == 405
    status, _ = await call(gw, key, "POST", f"{BASE}/{manager['id']}/explode")
    assert status == 404
    async with gw.session.post(
        gw.url + BASE, data=b"{nope", headers={**bearer(key), "Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
    async with gw.session.post(gw.url + BASE, data=b"x" * 100_000, headers=bearer(key)) as resp:
        assert resp.status == 413
    status, problem = await call(gw, key, "GET", BASE, params={"limit": "0"})
    assert status == 400
    status, problem = await call(gw, key, "GET", BASE, params={"bogus": "1"})
    assert status == 400


async def test_self_service_respects_the_production_key_limit(tmp_path, upstream) -> None:
    from support import make_settings, running_gateway

    settings = make_settings(
        tmp_path,
        str(upstream.make_url("")).rstrip("/"),
        keys={"max_production_keys_per_account": 2},
    )
    async with running_gateway(settings) as gw:
        account = await gw.account()
        key = account["production_key"]["key"]
        assert (await call(gw, key, "POST", BASE, json={}))[0] == 201
        status, problem = await call(gw, key, "POST", BASE, json={})
        assert status == 409
