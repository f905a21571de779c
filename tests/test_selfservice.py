"""Self-service keys on the data plane: /api/v1/access-keys for management:all keys, confined to
their account and environment, children never wider than their parent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import Running, bearer

pytestmark = pytest.mark.both_stores

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


# -- one implementation behind two doors ----------------------------------------------------------


async def test_the_self_service_document_describes_exactly_what_the_door_serves(
    gw: Running, manager: dict
) -> None:
    """The document is generated from the door's route table by the admin API's generator; each
    documented operation answers through the data plane as documented, bodies checked against
    the schemas."""
    import re

    from jsonschema import Draft202012Validator
    from openapi_spec_validator import validate

    status, doc = await gw.admin("GET", "/admin/v1/self-service/openapi.json")
    assert status == 200
    validate(doc)
    assert doc["components"]["securitySchemes"] == {
        "managementKey": {"type": "http", "scheme": "bearer"}
    }
    app = gw.gateway.plane.selfservice.app  # type: ignore[union-attr]
    served = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        served.add((route.method.lower(), path if path.endswith("/") else path + "/"))
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented and len(documented) == 6
    _, child = await call(gw, manager["key"], "POST", BASE, json={"name": "victim"})
    order = sorted(documented, key=lambda mp: mp[1].endswith("revoke/"))  # revoke last
    for method, path in order:
        op = doc["paths"][path][method]
        url = path.replace("{key_id}", child["id"])
        body = {"name": "made"} if method == "post" and "{key_id}" not in path else None
        if method == "patch":
            body = {"name": "renamed"}
        status, got = await call(gw, manager["key"], method.upper(), url, json=body)
        assert 200 <= status < 300 and str(status) in op["responses"], (method, path, got)
        schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**schema, "components": doc["components"]})
        assert not [e.message for e in validator.iter_errors(got)], (method, path)
    # A key without management:all is refused by the door before any handler runs.
    status, problem = await call(gw, await gw.new_key(scopes=["runtime:all"]), "GET", BASE)
    assert status == 403 and problem["required_scopes"] == ["management:all"]
    assert re.fullmatch(r"[0-9a-f]{32}", problem["request_id"])


async def test_both_doors_answer_the_same_mistake_the_same_way(gw: Running, manager: dict) -> None:
    """Same validation, same problem rendering: only `instance` and `request_id` differ."""
    bad = {"name": "x" * 300, "scopes": "runtime:all", "nope": 1}
    status_a, admin = await gw.admin(
        "POST", "/admin/v1/keys", json={"account_id": manager["account_id"], **bad}
    )
    status_s, door = await call(gw, manager["key"], "POST", BASE, json=bad)
    assert status_a == status_s == 400
    assert admin["errors"] == door["errors"] and len(door["errors"]) == 3
    assert {k: v for k, v in admin.items() if k not in ("instance", "request_id")} == {
        k: v for k, v in door.items() if k not in ("instance", "request_id")
    }
    assert door["instance"] == BASE
    # Not JSON: 415 at both doors.
    for url, headers in (
        (gw.admin_url + "/admin/v1/keys", gw.admin_headers),
        (gw.url + BASE, bearer(manager["key"])),
    ):
        async with gw.session.post(
            url, data=b"name=x", headers={**headers, "Content-Type": "text/plain"}
        ) as resp:
            assert resp.status == 415, url
            assert resp.headers["Content-Type"] == "application/problem+json"


async def test_the_door_keeps_the_data_plane_answer_conventions(gw: Running, manager: dict) -> None:
    """Request id echoed (the client's when well-formed), `Server: keygate`, no aiohttp version,
    `Allow` on a 405, and 100-continue answered once, after the key checked out."""
    rid = "a" * 32
    async with gw.session.get(
        gw.url + BASE, headers={**bearer(manager["key"]), "X-Request-Id": rid}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == rid
        assert resp.headers["Server"] == "keygate"
        assert resp.headers.getall("X-Request-Id") == [rid]
    async with gw.session.delete(gw.url + BASE + "/", headers=bearer(manager["key"])) as resp:
        problem = await resp.json(content_type=None)
        assert resp.status == 405 and sorted(resp.headers["Allow"].split(",")) == ["GET", "POST"]
        assert problem["request_id"] == resp.headers["X-Request-Id"]
        assert problem["detail"] == f"DELETE is not allowed on {BASE}/."
    import asyncio

    from support import raw_exchange

    body = b'{"name": "continued"}'
    for path, expected in ((BASE, b"201"), (BASE + "/x/y/z", b"404")):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {manager['key']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\nConnection: close\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.data_port)
        writer.write(head)
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 " + expected), reply
        assert b"100 Continue" not in reply
        assert b"aiohttp" not in reply and b"Python" not in reply
    # An unknown key never reaches the door, and gets no 100 Continue.
    reply = await raw_exchange(
        gw.gateway.data_port,
        b"POST " + BASE.encode() + b" HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in reply
