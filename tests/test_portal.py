"""The customer portal on the data plane (`portal.path`): one-time links from the admin API, a
session for one account, and nothing else reachable. Real Chromium, real `gateway serve`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Served, browser, clipboard, http, new_context, screenshots, serve
from playwright.sync_api import Browser, Page, expect

__all__ = ["browser"]  # the module-scoped Chromium fixture
pytestmark = pytest.mark.slow
LINK_TTL = 6  # seconds; links are opened at once, and one test waits this long


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("portal")
    # public_url is how browsers reach the data plane; the port is only known inside serve(),
    # so the links are checked and rebased onto the real one (see portal_link).
    extra = f"""
[portal]
enabled = true
public_url = "http://portal.invalid"
link_ttl_seconds = {LINK_TTL}
"""
    # Two workers share the port: a session made by one is used by the other (it lives in
    # the store, not in a process).
    yield from serve(directory, extra, workers=2)


def portal_link(served: Served, account_id: str) -> str:
    status, doc = served.admin("POST", f"/admin/v1/accounts/{account_id}/portal-sessions")
    assert status == 201, doc
    url = doc["url"]
    assert re.fullmatch(r"http://portal\.invalid/portal/enter#[A-Za-z0-9_-]{43}", url)
    served.secrets.append(url.partition("#")[2])
    return served.url + url.removeprefix("http://portal.invalid")


def open_portal(browser: Browser, link: str) -> Page:
    page = new_context(browser).new_page()
    page.goto(link)
    page.get_by_role("button", name="Open API keys").click()  # never posted without a click
    return page


def test_a_link_opens_its_account_once_and_is_refused_the_second_time(
    browser: Browser, served: Served
) -> None:
    served.account("Portal Co", id="acct_portal")
    link = portal_link(served, "acct_portal")
    page = open_portal(browser, link)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Portal Co")
    assert page.url == f"{served.url}/portal/accounts/acct_portal/"
    assert "#" not in page.url
    expect(page.get_by_role("link", name="Accounts")).to_have_count(0)  # nothing of the console
    expect(page.get_by_role("button", name="Deactivate account")).to_have_count(0)
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "keygate_portal"
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/portal/"
    assert link.partition("#")[2] not in cookie["value"]

    again = open_portal(browser, link)
    expect(again.get_by_role("heading", name="Link used or expired")).to_be_visible()
    assert again.context.cookies() == []
    page.context.close()
    again.context.close()


def test_a_link_is_used_only_when_its_button_is_clicked(browser: Browser, served: Served) -> None:
    """A scanner that runs the page's script loads it without using the link up."""
    served.account("Scan Co", id="acct_scan", provision_production_key=False)
    link = portal_link(served, "acct_scan")
    scanner = new_context(browser).new_page()
    scanner.goto(link)
    expect(scanner.get_by_role("button", name="Open API keys")).to_be_visible()
    scanner.wait_for_load_state("networkidle")
    assert "#" not in scanner.url
    assert scanner.context.cookies() == []
    scanner.context.close()
    page = open_portal(browser, link)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Scan Co")
    page.context.close()

    incomplete = new_context(browser).new_page()
    incomplete.goto(link.partition("#")[0])
    expect(incomplete.get_by_role("alert")).to_contain_text("This link is incomplete")
    expect(incomplete.get_by_role("button", name="Open API keys")).to_be_hidden()
    incomplete.context.close()


def test_a_link_is_refused_after_it_expires(browser: Browser, served: Served) -> None:
    served.account("Late Co", id="acct_late")
    link = portal_link(served, "acct_late")
    time.sleep(LINK_TTL + 0.5)
    page = open_portal(browser, link)
    expect(page.get_by_role("heading", name="Link used or expired")).to_be_visible()
    page.context.close()


def test_a_session_reaches_its_own_account_only(browser: Browser, served: Served) -> None:
    served.account("Mine Co", id="acct_mine", provision_production_key=False)
    served.account("Theirs Co", id="acct_theirs")
    theirs_key = served.keys("acct_theirs", is_test=False)[0]
    page = open_portal(browser, portal_link(served, "acct_mine"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Mine Co")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf

    response = page.goto(f"{served.url}/portal/accounts/acct_theirs/")
    assert response is not None and response.status == 404
    assert "Theirs Co" not in page.content()
    # Ids edited into a form: the other account's key, under either account's path.
    for path in (
        f"/portal/accounts/acct_theirs/keys/{theirs_key['id']}/regenerate",
        f"/portal/accounts/acct_mine/keys/{theirs_key['id']}/regenerate",
        f"/portal/accounts/acct_mine/keys/{theirs_key['id']}/delete",
        "/portal/accounts/acct_theirs/origins",
    ):
        answer = page.request.post(served.url + path, form={"csrf": csrf, "origin": "x.example"})
        assert answer.status == 404, path
    assert served.keys("acct_theirs", is_test=False) == [theirs_key]
    status, doc = served.admin("GET", "/admin/v1/accounts/acct_theirs/callback-origins")
    assert doc["data"] == []
    status, doc = served.admin("GET", "/admin/v1/audit?account_id=acct_theirs")
    assert [e["action"] for e in doc["data"]] == ["key.created", "account.created"]
    page.context.close()


def test_portal_changes_are_the_api_s_own_and_audited_as_the_session(
    browser: Browser, served: Served
) -> None:
    served.account("Self Co", id="acct_self")
    page = open_portal(browser, portal_link(served, "acct_self"))
    page.get_by_label("Key name").fill("from-the-portal")
    page.get_by_role("button", name="Create test key").click()
    reveal = page.get_by_role("dialog")
    reveal.get_by_role("button", name="Copy API key").click()
    expect(reveal.get_by_role("status")).to_have_text("Copied.")
    key = clipboard(page)
    served.secrets.append(key)
    reveal.get_by_role("button", name="Done").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert key not in page.content()
    assert served.auth_status(key) == 200

    page.get_by_label("Origin", exact=True).fill("app.self.example")
    page.get_by_role("button", name="Add origin").click()
    expect(page.get_by_role("list", name="Allowed callback origins")).to_contain_text(
        "app.self.example"
    )
    status, doc = served.admin("GET", "/admin/v1/audit?account_id=acct_self&environment=test")
    (created,) = doc["data"]
    assert created["action"] == "key.created"
    assert re.fullmatch(r"portal:[0-9a-f]{32}", created["actor"])
    assert created["actor"].removeprefix("portal:") not in page.context.cookies()[0]["value"]
    expect(page.get_by_role("list", name="Test audit trail")).to_contain_text(created["actor"])

    page.get_by_role("region", name="from-the-portal").get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_role("region", name="from-the-portal")).to_have_count(0)
    assert served.auth_status(key) == 401

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Signed out")).to_be_visible()
    response = page.goto(f"{served.url}/portal/accounts/acct_self/")
    assert response is not None and response.status == 401
    page.context.close()


def test_a_deactivated_account_s_portal_shows_and_changes_nothing(
    browser: Browser, served: Served
) -> None:
    served.account("Gone Co", id="acct_gone", provision_production_key=False)
    page = open_portal(browser, portal_link(served, "acct_gone"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Gone Co")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    status, _ = served.admin("PATCH", "/admin/v1/accounts/acct_gone", {"status": "deactivated"})
    assert status == 200
    response = page.reload()
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Account deactivated")).to_be_visible()
    answer = page.request.post(
        f"{served.url}/portal/accounts/acct_gone/keys",
        form={"csrf": csrf or "", "environment": "test", "name": "sneaky"},
    )
    assert answer.status == 403
    assert served.keys("acct_gone", is_test=True) == []
    page.context.close()


def test_the_portal_is_served_by_the_data_plane_with_its_headers(served: Served) -> None:
    status, body, headers = http("GET", served.url + "/portal/accounts/acct_self/")
    assert status == 401
    assert headers["Server"] == "keygate"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    # Elsewhere the data plane is unchanged: no key, 401.
    assert http("GET", served.url + "/portalx")[0] == 401
    status, script, headers = http("GET", served.url + "/portal/static/console.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    # Portal links are made by the admin API only.
    status, doc, _ = http("POST", served.url + "/admin/v1/accounts/acct_self/portal-sessions")
    assert status == 401


def test_screenshot_of_the_portal(browser: Browser, served: Served, tmp_path: Path) -> None:
    served.account("Northwind Traders", id="acct_northwind")
    status, doc = served.admin(
        "POST",
        "/admin/v1/keys",
        {"account_id": "acct_northwind", "name": "local development", "is_test": True},
    )
    served.secrets.append(doc["key"])
    page = open_portal(browser, portal_link(served, "acct_northwind"))
    page.set_viewport_size({"width": 1000, "height": 900})
    page.get_by_label("Key name").fill("ci")
    page.get_by_role("button", name="Create test key").click()
    reveal = page.get_by_role("dialog")
    served.secrets.extend(c.inner_text() for c in reveal.locator("code").all())
    shots = screenshots(tmp_path)
    page.screenshot(path=str(shots / "portal-new-key.png"))
    reveal.get_by_role("button", name="Done").click()
    page.screenshot(path=str(shots / "portal-api-keys.png"), full_page=True)
    page.context.close()
