"""Webhook delivery from the outbox (contract section 9): every delivery verified by a receiver
on loopback with `standardwebhooks` (the reference library, an oracle we did not write)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook
from support import Running

pytestmark = pytest.mark.both_stores


class Receiver:
    """Records every request; answers with the next planned status (then 200)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.plan: list[int] = []
        self.redirects_followed = 0

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            self.seen.append(
                {"headers": dict(request.headers), "body": await request.text(), "at": time.time()}
            )
            status = self.plan.pop(0) if self.plan else 200
            if status == 302:
                raise web.HTTPFound("/elsewhere")
            return web.Response(status=status, text="ok" * 50_000)  # more than 64 KiB

        async def elsewhere(request: web.Request) -> web.Response:
            self.redirects_followed += 1
            return web.Response(text="followed")

        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_route("*", "/elsewhere", elsewhere)
        return app


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Any]) -> tuple[Receiver, str]:
    r = Receiver()
    server: TestServer = await aiohttp_server(r.app())
    return r, str(server.make_url("/hook"))


@pytest.fixture
async def hooks(
    tmp_path: Path, upstream: TestServer, store_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    from conftest import LOOPBACK_WEBHOOKS, gateway_on

    quick = {**LOOPBACK_WEBHOOKS, "retry_schedule": [0.2, 0.2], "timeout": 2}
    async with gateway_on(store_kind, request, tmp_path, upstream, quick) as gw:
        yield gw


async def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


def verify(secret: str, seen: dict[str, Any]) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    return Webhook(secret).verify(seen["body"], headers)  # type: ignore[no-any-return]


async def settled(gw: Running, count: int, **query: str) -> list[dict[str, Any]]:
    """The deliveries matching `query` (a final status), once there are `count` of them: an
    attempt's outcome is recorded just after the receiver has answered."""
    deadline = time.monotonic() + 10
    while len(found := await deliveries(gw, **query)) < count:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)
    return found


def soon(seconds: float) -> str:
    """An RFC 3339 time `seconds` from now (expires_in cannot be under a minute)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def deliveries(gw: Running, **query: str) -> list[dict[str, Any]]:
    status, page = await gw.admin("GET", "/admin/v1/webhook-deliveries", params=query)
    assert status == 200, page
    return page["data"]  # type: ignore[no-any-return]


async def test_events_arrive_signed_and_verifiable(
    hooks: Running, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    account = await hooks.account(provision_production_key=False)
    key = await hooks.key(account["id"], webhook_url=url)
    secret = key["signing_secret"]
    await wait_for(lambda: len(r.seen) == 1)
    event = verify(secret, r.seen[0])
    assert event["type"] == "key.created" and event["data"]["key_id"] == key["id"]
    assert event["data"]["environment"] == "production" and event["data"]["key"]["id"] == key["id"]
    assert secret not in r.seen[0]["body"] and key["key"] not in r.seen[0]["body"]
    await hooks.admin("POST", f"/admin/v1/keys/{key['id']}/revoke")
    await wait_for(lambda: len(r.seen) == 2)
    revoked = verify(secret, r.seen[1])
    assert revoked["type"] == "key.revoked" and revoked["data"]["key"]["revoked_at"] is not None
    (done, first) = await settled(hooks, 2, key_id=key["id"], status="succeeded")
    assert done["status"] == first["status"] == "succeeded"
    assert done["attempts"][0]["status_code"] == 200
    _, text = await hooks.admin("GET", "/metrics")
    assert 'gateway_webhook_attempts_total{outcome="succeeded"}' in text
    assert "gateway_webhook_outbox_depth" in text
    # Test keys and production keys live in separate worlds.
    await hooks.key(account["id"], is_test=True, name="t")
    await asyncio.sleep(0.6)
    assert len(r.seen) == 2


async def test_retries_use_the_same_webhook_id_then_fail_for_good(
    hooks: Running, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    account = await hooks.account(provision_production_key=False)
    r.plan = [500, 503]  # twice down, then up
    key = await hooks.key(account["id"], webhook_url=url, webhook_events=["key.created"])
    await wait_for(lambda: len(r.seen) == 3)
    ids = {s["headers"]["webhook-id"] for s in r.seen}
    assert len(ids) == 1
    for seen in r.seen:
        verify(key["signing_secret"], seen)
    (delivery,) = await settled(hooks, 1, key_id=key["id"], status="succeeded")
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]
    assert delivery["status"] == "succeeded"
    # Down for good: the schedule (two retries) runs out, then `failed`; a retry queues it again.
    r.plan = [500, 500, 500]
    await hooks.admin("POST", f"/admin/v1/keys/{key['id']}/regenerate")  # not subscribed: none
    await hooks.admin(
        "PATCH", f"/admin/v1/keys/{key['id']}", json={"webhook_events": ["key.revoked"]}
    )
    await hooks.admin("POST", f"/admin/v1/keys/{key['id']}/revoke")
    await wait_for(lambda: len(r.seen) == 6)
    (failed,) = await settled(hooks, 1, key_id=key["id"], status="failed")
    assert failed["event_type"] == "key.revoked" and len(failed["attempts"]) == 3
    status, again = await hooks.admin("POST", f"/admin/v1/webhook-deliveries/{failed['id']}/retry")
    assert status == 202 and again["status"] == "pending"
    await wait_for(lambda: len(r.seen) == 7)
    assert r.seen[-1]["headers"]["webhook-id"] == failed["id"]
    status, _ = await hooks.admin("POST", "/admin/v1/webhook-deliveries/msg_nope/retry")
    assert status == 404
    # The same through the CLI.
    from test_admin_cli import cli

    code, out, _ = await cli(hooks, "webhooks", "deliveries", "--key", key["id"])
    assert code == 0 and failed["id"] in out and "key.revoked" in out and "TRIES" in out
    code, out, _ = await cli(hooks, "webhooks", "retry", failed["id"])
    assert code == 0 and out.strip() == f"queued {failed['id']} again"


async def test_redirects_are_not_followed(hooks: Running, receiver: tuple[Receiver, str]) -> None:
    r, url = receiver
    r.plan = [302]
    account = await hooks.account(provision_production_key=False)
    key = await hooks.key(account["id"], webhook_url=url)
    await wait_for(lambda: len(r.seen) == 2)  # the 302, then the retry
    assert r.redirects_followed == 0
    (delivery,) = await settled(hooks, 1, key_id=key["id"], status="succeeded")
    assert [a["status_code"] for a in delivery["attempts"]] == [302, 200]


async def test_during_a_rotation_deliveries_carry_both_signatures(
    hooks: Running, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    account = await hooks.account(provision_production_key=False)
    key = await hooks.key(account["id"], webhook_url=url, webhook_events=["key.revoked"])
    old = key["signing_secret"]
    _, rotated = await hooks.admin("POST", f"/admin/v1/keys/{key['id']}/signing-secret/rotate")
    await hooks.admin("POST", f"/admin/v1/keys/{key['id']}/revoke")
    await wait_for(lambda: len(r.seen) == 1)
    assert len(r.seen[0]["headers"]["webhook-signature"].split(" ")) == 2
    assert verify(old, r.seen[0])["type"] == "key.revoked"  # receivers not yet updated
    assert verify(rotated["signing_secret"], r.seen[0])["type"] == "key.revoked"


def test_the_delivery_resolver_refuses_private_answers() -> None:
    from gateway.config import WebhookSettings
    from gateway.webhooks import GuardedResolver

    async def main() -> None:
        strict = GuardedResolver(lambda: WebhookSettings())
        with pytest.raises(OSError, match="refused address"):
            await strict.resolve("localhost", 443)
        await strict.close()
        import ipaddress

        lenient = GuardedResolver(
            lambda: WebhookSettings(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))
        )
        assert any(a["host"] == "127.0.0.1" for a in await lenient.resolve("localhost", 443))
        await lenient.close()

    asyncio.run(main())


@pytest.mark.slow
async def test_pending_deliveries_survive_kill_9(tmp_path: Path, upstream: TestServer) -> None:
    """The outbox is in the store: deliveries queued while the receiver was down, the gateway
    killed with SIGKILL, then restarted: each arrives, with the webhook-id it was given."""
    import signal

    import aiohttp
    from support import ADMIN_TOKEN, GatewayProcess, free_port, write_config

    hook_port, port, admin_port = free_port(), free_port(), free_port()
    config = write_config(
        tmp_path / "g.toml",
        str(upstream.make_url("")).rstrip("/"),
        tmp_path / "g.db",
        port,
        admin_port,
        '\n[webhooks]\nallow_http_hosts = ["127.0.0.1"]\nallow_networks = ["127.0.0.0/8"]\n'
        "retry_schedule = [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]\n"
        "timeout = 1\n",  # a lease cut short by the kill ends 7 s later
    )
    admin = f"http://127.0.0.1:{admin_port}"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    proc = GatewayProcess(config, tmp_path / "g.log")
    proc.start(port, admin_port)
    try:
        async with aiohttp.ClientSession(headers=headers) as s:
            async with s.post(admin + "/admin/v1/accounts", json={"name": "K9"}) as resp:
                account = await resp.json()
            body = {
                "account_id": account["id"],
                "webhook_url": f"http://127.0.0.1:{hook_port}/hook",
            }
            async with s.post(admin + "/admin/v1/keys", json=body) as resp:
                key = await resp.json()
            async with s.post(admin + f"/admin/v1/keys/{key['id']}/revoke") as resp:
                assert resp.status == 200
            await asyncio.sleep(1.0)  # a few attempts, all refused: nobody listens yet
            async with s.get(admin + "/admin/v1/webhook-deliveries") as resp:
                queued = {d["id"] for d in (await resp.json())["data"]}
            assert len(queued) == 2
        proc.signal(signal.SIGKILL)
        proc.wait(5)
        r = Receiver()
        runner = web.AppRunner(r.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", hook_port)
        await site.start()
        try:
            proc = GatewayProcess(config, tmp_path / "g2.log")
            proc.start(port, admin_port)
            await wait_for(lambda: len(r.seen) >= 2, 25)
            assert {seen["headers"]["webhook-id"] for seen in r.seen} == queued
            for seen in r.seen:
                verify(key["signing_secret"], seen)
        finally:
            await runner.cleanup()
    finally:
        proc.stop()


async def test_undeliverable_deliveries_fail_at_once(
    hooks: Running, receiver: tuple[Receiver, str]
) -> None:
    """A webhook switched off, a key deleted, an address that is only an address to aiohttp
    (2130706433 is 127.0.0.1 to the socket): failed without retries, nothing sent."""
    from support import store_execute

    r, url = receiver
    account = await hooks.account(provision_production_key=False)
    r.plan = [500] * 10
    off = await hooks.key(account["id"], webhook_url=url, webhook_events=["key.revoked"])
    await hooks.admin("PATCH", f"/admin/v1/keys/{off['id']}", json={"webhook_enabled": False})
    await hooks.admin("POST", f"/admin/v1/keys/{off['id']}/revoke")
    # The key's webhook must be on for the event to be queued; switch it off after that.
    sneaky = await hooks.key(account["id"], webhook_url=url, webhook_events=["key.revoked"])
    port = url.split(":")[2].split("/")[0]
    await store_execute(
        hooks,
        f"UPDATE api_keys SET webhook_url = 'https://2130706433:{port}/hook'"
        f" WHERE id = '{sneaky['id']}'",
    )
    await hooks.admin("POST", f"/admin/v1/keys/{sneaky['id']}/revoke")
    (refused,) = await settled(hooks, 1, key_id=sneaky["id"], status="failed")
    assert "canonical" in refused["attempts"][0]["error"] and len(refused["attempts"]) == 1
    assert await deliveries(hooks, key_id=off["id"]) == []  # switched off: never queued
    # A delivery waiting for a key that is then deleted fails with the key.
    doomed = await hooks.key(account["id"], webhook_url=url, webhook_events=["key.regenerated"])
    r.plan = [500] * 10
    await hooks.admin("POST", f"/admin/v1/keys/{doomed['id']}/regenerate")
    await wait_for(lambda: any(s["body"].find("key.regenerated") > 0 for s in r.seen))
    await hooks.admin("DELETE", f"/admin/v1/keys/{doomed['id']}")
    (gone,) = await settled(hooks, 1, key_id=doomed["id"], status="failed")
    assert gone["event_type"] == "key.regenerated"
    assert all(seen["headers"].get("Host", "").startswith("127.0.0.1") for seen in r.seen)


async def test_upstream_events_reach_the_keys_that_listen_in_their_own_world(
    hooks: Running, receiver: tuple[Receiver, str]
) -> None:
    """POST /admin/v1/events: to every live key of the account in one environment (or to one
    key) whose webhook lists the type; never to a revoked key or across environments."""
    r, url = receiver
    account = await hooks.account(provision_production_key=False)
    aid = account["id"]
    paid = ["order.paid"]
    listening = await hooks.key(aid, webhook_url=url, webhook_events=paid)
    await hooks.key(aid, webhook_url=url, webhook_events=["order.refunded"])
    testing = await hooks.key(aid, is_test=True, webhook_url=url, webhook_events=paid)
    revoked = await hooks.key(aid, webhook_url=url, webhook_events=paid)
    await hooks.admin("POST", f"/admin/v1/keys/{revoked['id']}/revoke")
    await hooks.key(aid, webhook_url=url, webhook_events=paid, expires_at=soon(0.5))
    other = await hooks.account("Other", provision_production_key=False)
    await hooks.key(other["id"], webhook_url=url, webhook_events=["*"])
    await asyncio.sleep(0.6)  # the last key has expired
    before = len(r.seen)

    event = {"type": "order.paid", "account_id": aid, "data": {"order": 7, "total": "9.90"}}
    status, accepted = await hooks.admin("POST", "/admin/v1/events", json=event)
    assert status == 202, accepted
    assert accepted["id"].startswith("evt_") and accepted["deliveries"] == 1
    await wait_for(lambda: len(r.seen) == before + 1)
    got = verify(listening["signing_secret"], r.seen[-1])
    assert got["type"] == "order.paid"
    assert got["data"] == {
        "order": 7,
        "total": "9.90",
        "account_id": aid,
        "key_id": listening["id"],
        "environment": "production",
    }
    (delivery,) = await settled(hooks, 1, event_id=accepted["id"], status="succeeded")
    assert delivery["key_id"] == listening["id"] and delivery["event_type"] == "order.paid"
    status, audit = await hooks.admin(
        "GET", "/admin/v1/audit", params={"account_id": aid, "action": "event.published"}
    )
    (entry,) = audit["data"]
    assert entry["details"] == {"event_id": accepted["id"], "type": "order.paid", "deliveries": 1}

    # The test world hears only what is raised for it, by environment or by key.
    for sent in (
        {**event, "environment": "test"},
        {**event, "account_id": None, "key_id": testing["id"]},
    ):
        status, accepted = await hooks.admin("POST", "/admin/v1/events", json=sent)
        assert status == 202 and accepted["deliveries"] == 1, accepted
        expected = len(r.seen) + 1
        await wait_for(lambda: len(r.seen) == expected)  # noqa: B023 - awaited right here
        got = verify(testing["signing_secret"], r.seen[-1])
        assert got["data"]["environment"] == "test" and got["data"]["key_id"] == testing["id"]
    await asyncio.sleep(0.3)
    assert len(r.seen) == before + 3

    # Mistakes get a problem naming the field, and queue nothing.
    bad = [
        ({"type": "order.paid"}, "account_id"),
        ({"type": "order.paid", "account_id": aid, "key_id": listening["id"]}, "account_id"),
        ({"type": "key.revoked", "account_id": aid}, "type"),
        ({"type": "Order Paid", "account_id": aid}, "type"),
        ({"type": "order.paid", "account_id": aid, "data": {"key_id": "x"}}, "data.key_id"),
        ({"type": "order.paid", "account_id": aid, "data": {"blob": "x" * 70_000}}, "data"),
        ({"type": "order.paid", "account_id": aid, "data": {"n": [2**70]}}, "data"),
        (
            {"type": "order.paid", "key_id": testing["id"], "environment": "production"},
            "environment",
        ),
        ({"type": "order.paid", "account_id": aid, "environment": "staging"}, "environment"),
    ]
    for body, field in bad:
        status, problem = await hooks.admin("POST", "/admin/v1/events", json=body)
        assert status == 400, (body, problem)
        assert field in {e["field"] for e in problem["errors"]}, problem
    for body in ({"type": "order.paid", "account_id": "acct_nope"}, {"type": "x.y", "key_id": "k"}):
        status, problem = await hooks.admin("POST", "/admin/v1/events", json=body)
        assert status == 404, problem
    await asyncio.sleep(0.3)
    assert len(r.seen) == before + 3

    # The same through the CLI.
    from test_admin_cli import cli

    code, out, _ = await cli(
        hooks, "webhooks", "publish", "order.paid", "--account", aid, "--data", '{"order": 8}'
    )
    assert code == 0 and out.startswith("published evt_") and "1 deliveries queued" in out, out
    await wait_for(lambda: len(r.seen) == before + 4)
    assert verify(listening["signing_secret"], r.seen[-1])["data"]["order"] == 8
    event_id = out.split()[1].rstrip(":")
    code, out, _ = await cli(hooks, "webhooks", "deliveries", "--event", event_id)
    assert code == 0 and "order.paid" in out and out.count("\n") == 2, out
    code, _, err = await cli(hooks, "webhooks", "publish", "x.y", "--account", aid, "--data", "[1]")
    assert code == 2 and "must be a JSON object" in err


async def test_an_event_without_account_or_key_is_told_to_give_one(hooks: Running) -> None:
    account = await hooks.account()
    for body, message in (
        ({"type": "order.paid"}, "is required: give account_id (every key of the account)"),
        (
            {"type": "order.paid", "account_id": account["id"], "key_id": "k"},
            "give account_id or key_id, not both",
        ),
    ):
        status, problem = await hooks.admin("POST", "/admin/v1/events", json=body)
        assert status == 400, problem
        assert problem["errors"][0]["field"] == "account_id", problem
        assert problem["errors"][0]["message"].startswith(message), problem
        assert problem["detail"].startswith("account_id: " + message), problem


async def test_keys_hear_once_that_they_will_expire_and_once_that_they_have(
    tmp_path: Path,
    upstream: TestServer,
    store_kind: str,
    request: pytest.FixtureRequest,
    receiver: tuple[Receiver, str],
) -> None:
    from conftest import LOOPBACK_WEBHOOKS, gateway_on

    r, url = receiver
    warning = 2.0  # seconds before expires_at
    settings = {**LOOPBACK_WEBHOOKS, "expiry_warning_days": warning / 86400}
    async with gateway_on(store_kind, request, tmp_path, upstream, settings) as gw:
        account = await gw.account(provision_production_key=False)
        events = ["key.expiring", "key.expired"]
        created = time.time()
        key = await gw.key(
            account["id"], expires_at=soon(4), webhook_url=url, webhook_events=events
        )
        # Far from its expiry, and revoked before it: neither hears anything (they are in
        # another account: a key hears of the other keys of its own account too).
        other = await gw.account("Other", provision_production_key=False)
        await gw.key(other["id"], expires_in=3600, webhook_url=url, webhook_events=events)
        doomed = await gw.key(
            other["id"], expires_at=soon(3), webhook_url=url, webhook_events=events
        )
        await gw.admin("POST", f"/admin/v1/keys/{doomed['id']}/revoke")
        await wait_for(lambda: len(r.seen) >= 2, 15)
        await asyncio.sleep(1.5)  # time for a duplicate to show itself
        assert len(r.seen) == 2, [s["body"] for s in r.seen]
        expiring, expired = (verify(key["signing_secret"], s) for s in r.seen)
        assert expiring["type"] == "key.expiring" and expired["type"] == "key.expired"
        assert expiring["data"]["key"]["id"] == expired["data"]["key"]["id"] == key["id"]
        assert expiring["data"]["key"]["expires_at"] == key["expires_at"]
        assert 4 - warning - 1.5 <= r.seen[0]["at"] - created <= 4  # warned ahead, not at once
        assert r.seen[1]["at"] - created >= 3.9
        # The data plane agrees: the key is expired.
        auth = {"Authorization": f"Bearer {key['key']}"}
        async with gw.session.get(gw.url + "/anything", headers=auth) as resp:
            assert resp.status == 401


async def test_a_queued_delivery_is_sent_at_once_not_at_the_next_look(
    hooks: Running, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender is woken by the commit that queued a delivery (and by an admin retry): with
    its periodic look a minute away, deliveries still leave within moments."""
    import gateway.webhooks

    r, url = receiver
    account = await hooks.account(provision_production_key=False)
    await asyncio.sleep(1.2)  # the sender is now in a sleep that began before the change
    monkeypatch.setattr(gateway.webhooks, "IDLE", 60.0)
    await asyncio.sleep(1.2)  # ... and now in one of a minute
    await hooks.key(account["id"], webhook_url=url, webhook_events=["key.created"])
    await wait_for(lambda: len(r.seen) == 1, 3)
    (done,) = await settled(hooks, 1, status="succeeded", account_id=account["id"])
    status, _ = await hooks.admin("POST", f"/admin/v1/webhook-deliveries/{done['id']}/retry")
    assert status == 202
    await wait_for(lambda: len(r.seen) == 2, 3)


async def test_finished_deliveries_are_forgotten_after_their_retention(hooks: Running) -> None:
    from support import store_execute

    account = await hooks.account(provision_production_key=False)
    for i, (status, age) in enumerate(
        [("succeeded", 40), ("failed", 40), ("pending", 40), ("succeeded", 1)]
    ):
        at = int((time.time() - age * 86400) * 1_000_000)
        # (the pending one waits for a retry a day away: the sender leaves it alone)
        nxt = str(int((time.time() + 86400) * 1e6)) if status == "pending" else "NULL"
        await store_execute(
            hooks,
            "INSERT INTO webhook_deliveries (id, key_id, account_id, environment, event_type,"
            f" url, body, created_at, status, next_attempt_at) VALUES ('msg_old{i}', 'k',"
            f" '{account['id']}', 'production', 'x.y', 'https://example.invalid/', '{{}}',"
            f" {at}, '{status}', {nxt})",
        )
    cutoff = int((time.time() - 30 * 86400) * 1_000_000)
    assert await hooks.gateway.store.prune_deliveries(cutoff, batch=1) == 2
    left = {d["id"] for d in await deliveries(hooks, account_id=account["id"])}
    assert left == {"msg_old2", "msg_old3"}  # pending however old; finished but recent
