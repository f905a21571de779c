"""The operators' console on the admin port (`/ui/`), driven in a real Chromium against a real
`gateway serve` process: sign-in, accounts, the API Keys page and what it must never leak."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Served, browser, clipboard, new_context, screenshots, serve
from playwright.sync_api import Browser, Page, expect
from support import ADMIN_TOKEN

__all__ = ["browser"]  # the module-scoped Chromium fixture
pytestmark = pytest.mark.slow
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(tmp_path_factory.mktemp("console"))


def sign_in(page: Page, served: Served) -> None:
    page.goto(served.admin_url + "/ui/")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Accounts", level=1)).to_be_visible()


@pytest.fixture(scope="module")
def console(browser: Browser, served: Served) -> Iterator[Page]:
    """One signed-in console tab for the module (each test makes its own accounts)."""
    context = new_context(browser)
    page = context.new_page()
    alerts: list[str] = []
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    sign_in(page, served)
    yield page
    context.close()
    assert alerts == [], "a script ran that the page never ships"


def open_account(page: Page, served: Served, account_id: str) -> None:
    page.goto(f"{served.admin_url}/ui/accounts/{account_id}/")
    expect(page.get_by_role("heading", name="Production key", exact=True)).to_be_visible()


def close_reveal(page: Page, value: str) -> None:
    """Close the copy-once dialog and check its value has left the page."""
    page.get_by_role("dialog").get_by_role("button", name="Done").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert value not in page.content()
    assert value not in page.url


def test_sign_in_is_refused_with_a_wrong_token_and_accepted_with_the_right_one(
    browser: Browser, served: Served
) -> None:
    context = new_context(browser)
    page = context.new_page()
    page.goto(served.admin_url + "/ui/")
    assert page.url.endswith("/ui/sign-in")
    page.get_by_label("Admin token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That is not the admin token.")
    assert context.cookies() == []

    sign_in(page, served)
    (cookie,) = context.cookies()
    assert cookie["name"] == "keygate_console"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui/"
    assert ADMIN_TOKEN not in cookie["value"]
    assert ADMIN_TOKEN not in page.url and ADMIN_TOKEN not in page.content()
    assert (
        page.evaluate("Object.keys(localStorage).length + Object.keys(sessionStorage).length") == 0
    )

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(served.admin_url + "/ui/")
    assert page.url.endswith("/ui/sign-in")
    context.close()


def test_an_account_is_created_searched_and_deactivated_with_its_name_shown_as_text(
    console: Page, served: Served
) -> None:
    page = console
    page.goto(served.admin_url + "/ui/")
    page.get_by_label("Name").fill(XSS)
    page.get_by_label("Id (optional)").fill("acct_xss")
    page.get_by_role("button", name="Create account").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    key = dialog.locator("code").first.inner_text()
    served.secrets.append(key)
    assert key.startswith("sk_live_")
    close_reveal(page, key)
    expect(page.get_by_role("heading", level=1)).to_contain_text(XSS)
    assert page.locator("main img").count() == 0
    assert served.auth_status(key) == 200

    page.goto(served.admin_url + "/ui/?q=ACCT_X")
    expect(page.get_by_role("link", name=XSS)).to_be_visible()
    page.goto(served.admin_url + "/ui/?q=nothing-like-it")
    expect(page.get_by_text("No accounts match")).to_be_visible()

    open_account(page, served, "acct_xss")
    page.get_by_role("button", name="Deactivate account").click()
    expect(page.get_by_role("dialog")).to_contain_text("Every key of this account stops working")
    page.get_by_role("button", name="Yes, deactivate").click()
    expect(page.get_by_role("button", name="Reactivate account")).to_be_visible()
    assert served.auth_status(key) == 401  # a deactivated account authenticates nothing
    page.get_by_role("button", name="Reactivate account").click()
    expect(page.get_by_role("button", name="Deactivate account")).to_be_visible()
    assert served.auth_status(key) == 200


def test_regenerate_asks_first_then_the_old_key_is_dead_at_once_and_the_new_one_works(
    console: Page, served: Served
) -> None:
    account = served.account("Regen Co", id="acct_regen")
    old = account["production_key"]["key"]
    page = console
    open_account(page, served, "acct_regen")
    card = page.get_by_role("region", name="default production key")
    expect(card).to_contain_text(account["production_key"]["key_masked"])
    assert old not in page.content()

    card.get_by_role("button", name="Regenerate", exact=True).click()
    confirm = page.get_by_role("dialog")
    expect(confirm).to_contain_text("The old key stops working at once")
    confirm.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert served.auth_status(old) == 200  # cancelled: nothing happened

    card.get_by_role("button", name="Regenerate", exact=True).click()
    page.get_by_role("button", name="Yes, regenerate").click()
    reveal = page.get_by_role("dialog")
    expect(reveal).to_contain_text("Regenerated")
    reveal.get_by_role("button", name="Copy API key").click()
    expect(reveal.get_by_role("status")).to_have_text("Copied.")
    new = clipboard(page)
    served.secrets.append(new)
    assert new.startswith("sk_live_") and len(new) == 96 and new != old
    assert served.auth_status(old) == 401  # the very next request, no waiting
    assert served.auth_status(new) == 200
    close_reveal(page, new)
    assert page.url.endswith("/ui/accounts/acct_regen/")
    page.reload()
    assert new not in page.content()
    expect(page.get_by_role("region", name="default production key")).to_contain_text(
        new[:11] + "..." + new[-4:]
    )


def test_a_test_key_is_created_copied_used_and_deleted(console: Page, served: Served) -> None:
    served.account("Test Keys Co", id="acct_tk", provision_production_key=False)
    page = console
    open_account(page, served, "acct_tk")
    page.get_by_label("Key name").fill("ci-runner")
    page.get_by_role("button", name="Create test key").click()
    reveal = page.get_by_role("dialog")
    expect(reveal).to_contain_text("New test key “ci-runner”")
    reveal.get_by_role("button", name="Copy API key").click()
    expect(reveal.get_by_role("status")).to_have_text("Copied.")
    key = clipboard(page)
    served.secrets.append(key)
    assert key.startswith("sk_test_")
    close_reveal(page, key)
    assert served.auth_status(key) == 200

    card = page.get_by_role("region", name="ci-runner")
    expect(card).to_contain_text(key[:11] + "..." + key[-4:])
    expect(card).to_contain_text("runtime:all, management:all")
    card.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_role("region", name="ci-runner")).to_have_count(0)
    assert served.auth_status(key) == 401
    assert served.keys("acct_tk", is_test=True) == []


def test_callback_origins_are_added_and_removed(console: Page, served: Served) -> None:
    served.account("Origins Co", id="acct_origins", provision_production_key=False)
    page = console
    open_account(page, served, "acct_origins")
    origins = page.get_by_role("list", name="Allowed callback origins")
    for origin in ("app.example.com", "localhost:3000"):
        page.get_by_label("Origin", exact=True).fill(origin)
        page.get_by_role("button", name="Add origin").click()
        expect(origins).to_contain_text(origin)
    page.get_by_label("Origin", exact=True).fill("not an origin")
    page.get_by_role("button", name="Add origin").click()
    expect(page.get_by_role("alert")).to_contain_text("origin")
    status, doc = served.admin("GET", "/admin/v1/accounts/acct_origins/callback-origins")
    assert [o["origin"] for o in doc["data"]] == ["app.example.com", "localhost:3000"]

    page.get_by_role("button", name="Remove localhost:3000").click()
    expect(origins).not_to_contain_text("localhost:3000")
    status, doc = served.admin("GET", "/admin/v1/accounts/acct_origins/callback-origins")
    assert [o["origin"] for o in doc["data"]] == ["app.example.com"]


def test_the_audit_trail_shows_production_and_test_apart(console: Page, served: Served) -> None:
    served.account("Audit Co", id="acct_audit")
    page = console
    open_account(page, served, "acct_audit")
    page.get_by_label("Key name").fill("audit-test-key")
    page.get_by_role("button", name="Create test key").click()
    reveal = page.get_by_role("dialog")
    served.secrets.append(reveal.locator("code").first.inner_text())
    close_reveal(page, served.secrets[-1])
    production = page.get_by_role("list", name="Production audit trail")
    test = page.get_by_role("list", name="Test audit trail")
    expect(production).to_contain_text("account.created")
    expect(production).to_contain_text("key.created")
    expect(production).not_to_contain_text("audit-test-key")
    expect(test).to_contain_text("key.created")
    expect(test).to_contain_text("admin:console")
    expect(test).to_contain_text("audit-test-key")
    expect(test).not_to_contain_text("account.created")
    status, doc = served.admin("GET", "/admin/v1/audit?account_id=acct_audit&environment=test")
    assert [(e["action"], e["actor"]) for e in doc["data"]] == [("key.created", "admin:console")]


def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(
    console: Page, served: Served
) -> None:
    served.account("Csrf Co", id="acct_csrf", provision_production_key=False)
    page = console
    open_account(page, served, "acct_csrf")
    url = f"{served.admin_url}/ui/accounts/acct_csrf/keys"
    form = {"environment": "test", "name": "forged"}
    for extra in ({}, {"csrf": "0" * 64}):
        # The browser's own cookie goes with it (same origin), as with a forged form.
        response = page.request.post(url, form={**form, **extra})
        assert response.status == 403
        assert "nothing was changed" in response.text()
    origin = page.request.post(
        f"{served.admin_url}/ui/accounts/acct_csrf/origins", form={"origin": "evil.example"}
    )
    assert origin.status == 403
    assert served.keys("acct_csrf", is_test=True) == []
    status, doc = served.admin("GET", "/admin/v1/accounts/acct_csrf/callback-origins")
    assert doc["data"] == []


def test_pages_carry_a_csp_without_inline_script(console: Page, served: Served) -> None:
    served.account("Csp Co", id="acct_csp")
    response = console.goto(f"{served.admin_url}/ui/accounts/acct_csp/")
    assert response is not None
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    html = console.content()
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # every script is a file
    assert re.findall(r"\son[a-z]+\s*=", html) == []  # no inline event handlers


def test_webhook_settings_are_saved_and_a_rotated_secret_is_shown_once(
    console: Page, served: Served
) -> None:
    account = served.account("Hooks Co", id="acct_hooks")
    key_id = account["production_key"]["id"]
    page = console
    open_account(page, served, "acct_hooks")
    card = page.get_by_role("region", name="default production key")
    card.get_by_text("Webhook of").click()
    card.get_by_label("Webhook URL").fill("http://127.0.0.1:9/hooks")
    card.get_by_label("Events").fill("key.regenerated key.revoked")
    card.get_by_role("button", name="Save webhook").click()
    status, doc = served.admin("GET", f"/admin/v1/keys/{key_id}")
    assert doc["webhook_url"] == "http://127.0.0.1:9/hooks"
    assert doc["webhook_events"] == ["key.regenerated", "key.revoked"]
    assert doc["webhook_enabled"] is True

    card = page.get_by_role("region", name="default production key")
    card.get_by_text("Webhook of").click()
    card.get_by_role("button", name="Rotate signing secret").click()
    reveal = page.get_by_role("dialog")
    expect(reveal).to_contain_text("New signing secret")
    reveal.get_by_role("button", name="Copy Signing secret").click()
    expect(reveal.get_by_role("status")).to_have_text("Copied.")
    secret = clipboard(page)
    served.secrets.append(secret)
    assert secret.startswith("whsec_")
    close_reveal(page, secret)
    status, doc = served.admin("GET", f"/admin/v1/keys/{key_id}")
    assert secret.startswith(doc["signing_secret_prefix"])

    # A regeneration raises key.regenerated: the delivery log lists it.
    card = page.get_by_role("region", name="default production key")
    card.get_by_role("button", name="Regenerate", exact=True).click()
    page.get_by_role("button", name="Yes, regenerate").click()
    reveal = page.get_by_role("dialog")
    served.secrets.extend(c.inner_text() for c in reveal.locator("code").all())
    close_reveal(page, served.secrets[-1])
    card = page.get_by_role("region", name="default production key")
    card.get_by_text("Webhook of").click()
    expect(card.get_by_role("list", name=re.compile("Deliveries of"))).to_contain_text(
        "key.regenerated"
    )


def test_screenshots_of_the_console(console: Page, served: Served, tmp_path: Path) -> None:
    account = served.account("Acme Robotics", id="acct_acme")
    served.admin(
        "POST", "/admin/v1/accounts/acct_acme/callback-origins", {"origin": "app.acme.dev"}
    )
    status, doc = served.admin(
        "POST", "/admin/v1/keys", {"account_id": "acct_acme", "name": "staging", "is_test": True}
    )
    served.secrets.append(doc["key"])
    served.auth_status(account["production_key"]["key"])
    shots = screenshots(tmp_path)
    page = console
    page.set_viewport_size({"width": 1100, "height": 900})
    open_account(page, served, "acct_acme")
    page.screenshot(path=str(shots / "console-api-keys.png"), full_page=True)
    page.get_by_role("region", name="default production key").get_by_role(
        "button", name="Regenerate", exact=True
    ).click()
    page.screenshot(path=str(shots / "console-regenerate.png"))
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.reload()
    page.screenshot(path=str(shots / "console-phone.png"))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways at phone width"
    page.set_viewport_size({"width": 1280, "height": 720})
    assert (shots / "console-api-keys.png").stat().st_size > 10_000
