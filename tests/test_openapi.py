"""/admin/v1/openapi.json describes exactly the routes the admin port serves."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from support import Running, store_execute

pytestmark = pytest.mark.both_stores


async def fetch_spec(gw: Running) -> dict[str, Any]:
    status, doc = await gw.admin("GET", "/admin/v1/openapi.json")
    assert status == 200
    return doc  # type: ignore[no-any-return]


async def test_document_is_valid_openapi_3_1(gw: Running) -> None:
    doc = await fetch_spec(gw)
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_the_description_names_every_part_of_the_api() -> None:
    from gateway.admin.app import routes
    from gateway.admin.openapi import build_openapi

    doc = build_openapi(routes())
    tags = {op["tags"][0] for ops in doc["paths"].values() for op in ops.values()}
    described = doc["info"]["description"].lower()
    assert not sorted(tag for tag in tags if tag not in described), described


async def test_every_served_route_is_documented(gw: Running) -> None:
    doc = await fetch_spec(gw)
    app = gw.gateway.admin._runner.app  # type: ignore[union-attr]
    served = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path == "/ui" or path.startswith("/ui/"):
            continue  # the web console's HTML pages, not the JSON API
        served.add((route.method.lower(), path))
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented


async def test_every_documented_route_answers_as_documented(gw: Running) -> None:
    doc = await fetch_spec(gw)
    account = await gw.account()
    key = account["production_key"]
    await gw.admin(
        "POST", f"/admin/v1/accounts/{account['id']}/callback-origins", json={"origin": "a.example"}
    )
    # A delivery in the outbox, put there directly (the gateway itself only queues them for
    # keys with a webhook; its URL here is refused at delivery, so nothing leaves loopback).
    await store_execute(
        gw,
        "INSERT INTO webhook_deliveries (id, key_id, account_id, environment, event_type, url,"
        f" body, created_at, status, next_attempt_at) VALUES ('msg_doc', '{key['id']}',"
        f" '{account['id']}', 'production', 'key.created', 'http://127.0.0.1:9/x', '{{}}', 1,"
        " 'failed', NULL)",
    )
    values = {
        "account_id": account["id"],
        "key_id": key["id"],
        "origin": "a.example",
        "delivery_id": "msg_doc",
    }
    bodies = {
        ("post", "/admin/v1/accounts"): {"name": "x"},
        ("patch", "/admin/v1/accounts/{account_id}"): {"name": "y"},
        ("post", "/admin/v1/accounts/{account_id}/callback-origins"): {"origin": "b.example"},
        ("post", "/admin/v1/keys"): {"account_id": account["id"]},
        ("patch", "/admin/v1/keys/{key_id}"): {"name": "z"},
        ("post", "/admin/v1/events"): {"type": "order.paid", "account_id": account["id"]},
    }
    order = sorted(
        ((p, m) for p, ops in doc["paths"].items() for m in ops),
        key=lambda pm: (pm[1] == "delete", pm[0].endswith("revoke")),  # destroy last
    )
    for path, method in order:
        op = doc["paths"][path][method]
        url = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)
        status, body = await gw.admin(method.upper(), url, json=bodies.get((method, path)))
        assert str(status) in op["responses"], (method, path, status, body)
        if path.endswith("/portal-sessions"):  # portal.enabled is off here: see test_ui_sessions
            assert status == 409, body
            continue
        assert 200 <= status < 300, (method, path, status, body)
        content = op["responses"][str(status)].get("content", {})
        schema = content.get("application/json", {}).get("schema")
        if schema is not None:
            validator = Draft202012Validator({**schema, "components": doc["components"]})
            errors = [e.message for e in validator.iter_errors(body)]
            assert not errors, (method, path, errors)
