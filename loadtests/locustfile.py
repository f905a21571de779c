"""Load-test user classes an operator mixes (`locust -f loadtests/locustfile.py ...`).

    ValidTraffic    valid-key GET/POST over a spread of paths; anything but 200 is a failure
    InvalidTraffic  missing, malformed, unknown and revoked keys; anything but 401 is a failure
    KeyChurn        create, use, regenerate and revoke keys through the admin API; an old secret
                    that still works on its next request is a failure
    StreamReader    reads SSE streams to the end through the gateway

Environment: GATEWAY_URL (data plane, or locust's --host), GATEWAY_ADMIN_URL and
GATEWAY_ADMIN_TOKEN (admin API). GATEWAY_KEY and GATEWAY_REVOKED_KEY may name keys to use;
otherwise an account, a key and a revoked key are minted through the admin API at start.
"""

from __future__ import annotations

import json
import os
import random
import string
import urllib.request
import zlib
from typing import Any

from locust import FastHttpUser, between, events, task

ADMIN_URL = os.environ.get("GATEWAY_ADMIN_URL", "http://127.0.0.1:8081").rstrip("/")
ADMIN_TOKEN = os.environ.get("GATEWAY_ADMIN_TOKEN", "")
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
STATE: dict[str, Any] = {}


def admin(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        ADMIN_URL + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


def well_formed_unknown_key() -> str:
    """Right length, valid checksum, never issued: must still be refused."""
    body = "sk_live_" + "".join(random.choice(BASE62) for _ in range(82))
    value, out = zlib.crc32(body.encode()), []
    for _ in range(6):
        value, digit = divmod(value, 62)
        out.append(BASE62[digit])
    return body + "".join(reversed(out))


@events.test_start.add_listener
def mint(environment: Any, **_: Any) -> None:
    STATE["key"] = os.environ.get("GATEWAY_KEY")
    STATE["revoked"] = os.environ.get("GATEWAY_REVOKED_KEY")
    if STATE["key"] and STATE["revoked"]:
        return
    account = admin(
        "POST", "/admin/v1/accounts", {"name": "locust", "provision_production_key": False}
    )
    STATE["account_id"] = account["id"]
    STATE["key"] = admin("POST", "/admin/v1/keys", {"account_id": account["id"], "name": "load"})[
        "key"
    ]
    revoked = admin("POST", "/admin/v1/keys", {"account_id": account["id"], "name": "revoked"})
    admin("POST", f"/admin/v1/keys/{revoked['id']}/revoke")
    STATE["revoked"] = revoked["key"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class ValidTraffic(FastHttpUser):
    weight = 6
    wait_time = between(0.0, 0.02)

    @task(4)
    def get(self) -> None:
        path = random.choice(["/v1/items", "/v1/items/42", "/users/7/orders", "/search?q=abc"])
        with self.client.get(
            path, headers=bearer(STATE["key"]), name="valid GET", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"valid key got {r.status_code}")

    @task(2)
    def post(self) -> None:
        body = os.urandom(random.choice([100, 2000, 64000]))
        with self.client.post(
            "/v1/items",
            data=body,
            headers=bearer(STATE["key"]),
            name="valid POST",
            catch_response=True,
        ) as r:
            if r.status_code != 200 or r.json().get("bytes") != len(body):
                r.failure(f"valid POST got {r.status_code}")

    @task(1)
    def auth(self) -> None:
        with self.client.get(
            "/v1/auth", headers=bearer(STATE["key"]), name="/v1/auth", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"/v1/auth got {r.status_code}")


class InvalidTraffic(FastHttpUser):
    weight = 2
    wait_time = between(0.0, 0.02)

    def expect_401(self, name: str, headers: dict[str, str]) -> None:
        with self.client.get("/v1/items", headers=headers, name=name, catch_response=True) as r:
            if r.status_code == 401 and r.content == b"Unauthorized":
                r.success()
            else:
                r.failure(f"{name} got {r.status_code}, expected 401 Unauthorized")

    @task
    def missing(self) -> None:
        self.expect_401("401 missing", {})

    @task
    def malformed(self) -> None:
        self.expect_401("401 malformed", {"Authorization": "Bearer not-a-key"})

    @task
    def unknown(self) -> None:
        self.expect_401("401 unknown", bearer(well_formed_unknown_key()))

    @task
    def revoked(self) -> None:
        self.expect_401("401 revoked", bearer(STATE["revoked"]))


class KeyChurn(FastHttpUser):
    weight = 1
    wait_time = between(0.1, 0.3)

    def status(self, key: str, name: str) -> int:
        with self.client.get("/v1/auth", headers=bearer(key), name=name, catch_response=True) as r:
            r.success()
            return int(r.status_code)

    @staticmethod
    def violation(name: str, message: str) -> None:
        events.request.fire(
            request_type="CHURN",
            name=name,
            response_time=0,
            response_length=0,
            exception=AssertionError(message),
        )

    @task
    def churn(self) -> None:
        account_id = STATE.get("account_id")
        if account_id is None:
            return
        created = admin("POST", "/admin/v1/keys", {"account_id": account_id, "name": "churn"})
        if self.status(created["key"], "churn: new key") != 200:
            self.violation("new key works", "new key refused")
        regenerated = admin("POST", f"/admin/v1/keys/{created['id']}/regenerate")
        if self.status(created["key"], "churn: old secret") != 401:
            self.violation("old secret dead", "old secret still works after regenerate")
        if self.status(regenerated["key"], "churn: regenerated") != 200:
            self.violation("regenerated works", "regenerated key refused")
        admin("POST", f"/admin/v1/keys/{created['id']}/revoke")
        if self.status(regenerated["key"], "churn: revoked") != 401:
            self.violation("revoked dead", "revoked key still works")


class StreamReader(FastHttpUser):
    weight = 1
    wait_time = between(0.05, 0.2)

    @task
    def sse(self) -> None:
        with self.client.get(
            "/sse?events=5", headers=bearer(STATE["key"]), name="SSE stream", catch_response=True
        ) as r:
            data = r.content or b""
            if r.status_code != 200 or data.count(b"data: ") != 5:
                r.failure(f"SSE got {r.status_code} with {data.count(b'data: ')} events")
