"""The error answers each admin operation documents are the ones it gives: every error path of
every operation is driven against a real `gateway serve`, and per operation the set of error
statuses seen must equal the set /admin/v1/openapi.json lists. A status a handler can give but
the document omits fails, and so does one the document promises but no request can cause."""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import ADMIN_TOKEN, GatewayProcess, free_port, write_config

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}
# The tables behind every admin read and write: renamed away, the store fails under the gateway.
TABLES = ("accounts", "api_keys", "webhook_deliveries", "audit_log")


class Admin:
    def __init__(self, url: str, session: aiohttp.ClientSession, db: Path) -> None:
        self.url = url
        self.session = session
        self.db = db
        self.seen: dict[tuple[str, str], set[int]] = {}

    async def call(
        self,
        method: str,
        template: str,
        ids: dict[str, str] | None = None,
        *,
        auth: bool = True,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """`method template` with its path parameters from `ids`; the status is recorded under
        the operation (as the document names it)."""
        path = re.sub(r"{(\w+)}", lambda m: (ids or {})[m.group(1)], template)
        headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as resp:
            body = await resp.json() if "json" in resp.content_type else await resp.text()
            self.seen.setdefault((method.lower(), template), set()).add(resp.status)
            return resp.status, body

    async def expect(self, status: int, method: str, template: str, *args: Any, **kw: Any) -> Any:
        got, body = await self.call(method, template, *args, **kw)
        assert got == status, (method, template, kw, got, body)
        return body

    @contextmanager
    def store_failing(self) -> Iterator[None]:
        with sqlite3.connect(self.db) as db:
            for table in TABLES:
                db.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
        try:
            yield
        finally:
            with sqlite3.connect(self.db) as db:
                for table in TABLES:
                    db.execute(f"ALTER TABLE {table}_away RENAME TO {table}")


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    port, admin_port = free_port(), free_port()
    extra = f"""
[keys]
max_production_keys_per_account = 1

[portal]
enabled = true
public_url = "http://127.0.0.1:{port}"
"""
    db = tmp_path / "gw.db"
    config = write_config(
        tmp_path / "gw.toml", f"http://127.0.0.1:{free_port()}", db, port, admin_port, extra
    )
    process = GatewayProcess(config, tmp_path / "gateway.log")
    process.start(port, admin_port)
    try:
        async with aiohttp.ClientSession() as session:
            yield Admin(f"http://127.0.0.1:{admin_port}", session, db)
    finally:
        process.stop()


ACCOUNTS = "/admin/v1/accounts"
ACCOUNT = ACCOUNTS + "/{account_id}"
ORIGINS = ACCOUNT + "/callback-origins"
ORIGIN = ORIGINS + "/{origin}"
PORTAL = ACCOUNT + "/portal-sessions"
KEYS = "/admin/v1/keys"
KEY = KEYS + "/{key_id}"
EVENTS = "/admin/v1/events"
DELIVERIES = "/admin/v1/webhook-deliveries"
RETRY = DELIVERIES + "/{delivery_id}/retry"
AUDIT = "/admin/v1/audit"
NOPE = {"account_id": "acct_nope", "key_id": "key_nope", "origin": "a.example"}


async def test_each_operation_answers_exactly_the_error_statuses_it_documents(
    admin: Admin,
) -> None:
    doc = await admin.expect(200, "GET", "/admin/v1/openapi.json")
    a = await admin.expect(201, "POST", ACCOUNTS, json={"name": "a"})
    ids = {"account_id": a["id"], "key_id": a["production_key"]["id"], "origin": "a.example"}
    await admin.expect(201, "POST", ORIGINS, ids, json={"origin": "a.example"})
    d = await admin.expect(201, "POST", ACCOUNTS, json={"name": "d"})
    await admin.expect(
        200, "PATCH", ACCOUNT, {"account_id": d["id"]}, json={"status": "deactivated"}
    )
    r = await admin.expect(201, "POST", KEYS, json={"account_id": a["id"], "is_test": True})
    await admin.expect(200, "POST", KEY + "/revoke", {"key_id": r["id"]})
    revoked = {"key_id": r["id"]}
    with sqlite3.connect(admin.db) as db:  # deliveries: one whose attempt is under way, one not
        for delivery, lease in (("msg_busy", 2**62), ("msg_idle", None)):
            db.execute(
                "INSERT INTO webhook_deliveries (id, key_id, account_id, environment,"
                " event_type, url, body, created_at, status, claimed_until)"
                " VALUES (?, ?, ?, 'production', 'order.paid', 'http://127.0.0.1:9/', '{}', 1,"
                " 'failed', ?)",
                (delivery, ids["key_id"], a["id"], lease),
            )

    # Validation: bodies and query strings.
    await admin.expect(400, "POST", ACCOUNTS, json={"name": ""})
    await admin.expect(400, "GET", ACCOUNTS, params={"limit": "0"})
    await admin.expect(400, "GET", ACCOUNTS, params={"cursor": "not-a-cursor"})
    await admin.expect(400, "PATCH", ACCOUNT, ids, json={"status": "gone"})
    await admin.expect(400, "GET", ORIGINS, ids, params={"limit": "501"})
    await admin.expect(400, "POST", ORIGINS, ids, json={"origin": "https://a b"})
    await admin.expect(400, "POST", KEYS, json={"account_id": a["id"], "scopes": ["nope"]})
    await admin.expect(400, "GET", KEYS, params={"is_test": "maybe"})
    await admin.expect(400, "PATCH", KEY, ids, json={"name": None})
    await admin.expect(400, "POST", EVENTS, json={"type": "order.paid"})
    await admin.expect(400, "GET", DELIVERIES, params={"status": "lost"})
    await admin.expect(400, "GET", AUDIT, params={"since": "yesterday"})

    # Unknown ids in the path or the body.
    for method, template in (
        ("GET", ACCOUNT),
        ("PATCH", ACCOUNT),
        ("GET", ORIGINS),
        ("POST", ORIGINS),
        ("DELETE", ORIGIN),
        ("POST", PORTAL),
        ("GET", KEY),
        ("PATCH", KEY),
        ("DELETE", KEY),
        ("POST", KEY + "/regenerate"),
        ("POST", KEY + "/signing-secret/rotate"),
        ("POST", KEY + "/revoke"),
    ):
        body = {"origin": "b.example"} if template == ORIGINS else {"name": "n"}
        await admin.expect(
            404,
            method,
            template,
            NOPE,
            json=body if method == "PATCH" or template == ORIGINS else None,
        )
    await admin.expect(404, "DELETE", ORIGIN, {**ids, "origin": "never.example"})
    await admin.expect(404, "POST", KEYS, json={"account_id": "acct_nope"})
    await admin.expect(404, "POST", EVENTS, json={"type": "order.paid", "key_id": "key_nope"})
    await admin.expect(404, "POST", RETRY, {"delivery_id": "msg_nope"})

    # Conflicts with what is there.
    await admin.expect(409, "POST", ACCOUNTS, json={"name": "again", "id": a["id"]})
    await admin.expect(409, "POST", ORIGINS, ids, json={"origin": "a.example"})
    await admin.expect(409, "POST", PORTAL, {"account_id": d["id"]})
    await admin.expect(409, "POST", KEYS, json={"account_id": a["id"]})  # one production key
    await admin.expect(409, "POST", KEY + "/regenerate", revoked)
    await admin.expect(409, "POST", KEY + "/signing-secret/rotate", revoked)
    await admin.expect(409, "POST", RETRY, {"delivery_id": "msg_busy"})

    # The door and the body's envelope, on every operation that has them.
    bodies = {
        (method, path): op["requestBody"]
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op
    }
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            values = {**ids, "delivery_id": "msg_idle"}
            if op.get("security") != []:
                await admin.expect(401, method.upper(), path, values, auth=False)
            if (method, path) in bodies:
                big = b"{" + b" " * (1024**2 + 1) + b"}"
                await admin.expect(
                    413, method.upper(), path, values, data=io.BytesIO(big), headers=JSON
                )
                await admin.expect(415, method.upper(), path, values, data=b"{}", headers=TEXT)

    # The store failing: every operation that touches it answers 503, and nothing else does.
    valid = {
        ("POST", ACCOUNTS): {"name": "during"},
        ("PATCH", ACCOUNT): {"name": "during"},
        ("POST", ORIGINS): {"origin": "c.example"},
        ("POST", KEYS): {"account_id": a["id"], "is_test": True},
        ("PATCH", KEY): {"name": "during"},
        ("POST", EVENTS): {"type": "order.paid", "account_id": a["id"]},
    }
    with admin.store_failing():
        for path, ops in doc["paths"].items():
            for method in ops:
                values = {**ids, "delivery_id": "msg_idle"}
                body = valid.get((method.upper(), path))
                status, _ = await admin.call(method.upper(), path, values, json=body)
                assert status in (200, 503), (method, path, status)
    await admin.expect(200, "GET", ACCOUNT, ids)  # and service resumes

    wrong = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            listed = {int(s) for s in op["responses"] if int(s) >= 400}
            seen = {s for s in admin.seen.get((method, path), set()) if s >= 400}
            if seen != listed:
                wrong.append(
                    f"{method.upper()} {path}: seen {sorted(seen)}, listed {sorted(listed)}"
                )
    assert not wrong, "\n".join(wrong)
