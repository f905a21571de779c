"""Shared by the browser tests: a real `gateway serve` process (one per test module) and a real
Chromium driven by Playwright (Debian's `chromium`; Playwright's own download is not used)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import ADMIN_TOKEN, GatewayProcess, free_port, write_config

CHROMIUM = "/usr/bin/chromium"
DOCS_SCREENSHOTS = Path(__file__).parent.parent / "docs" / "screenshots"


def screenshots(tmp_path: Path) -> Path:
    """Where a test's screenshots go: the documentation's own folder only when asked
    (KEYGATE_SCREENSHOTS=1 python -m pytest tests/test_console.py tests/test_portal.py), so an
    ordinary run leaves the tree as it found it."""
    target = DOCS_SCREENSHOTS if os.environ.get("KEYGATE_SCREENSHOTS") == "1" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    return target


# Webhook receivers in these tests are on loopback (and absent): let the URLs through.
WEBHOOKS = """
[webhooks]
allow_http_hosts = ["127.0.0.1"]
allow_networks = ["127.0.0.0/8"]
"""


def http(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    """One request with the standard library: (status, decoded JSON or text, headers)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, head = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, head = exc.code, exc.read(), dict(exc.headers)
        exc.close()
    text = raw.decode()
    is_json = "json" in head.get("Content-Type", "")
    return status, json.loads(text) if is_json and text else text, head


@dataclass
class Served:
    """A running `gateway serve` and what the tests learned that must never be logged."""

    process: GatewayProcess
    url: str
    admin_url: str
    log: Path
    secrets: list[str] = field(default_factory=list)

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, doc, _ = http(
            method,
            self.admin_url + path,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            body=body,
        )
        return status, doc

    def auth_status(self, key: str) -> int:
        """What the data plane answers this key (the gateway answers /v1/auth itself)."""
        return http("GET", self.url + "/v1/auth", headers={"Authorization": f"Bearer {key}"})[0]

    def account(self, name: str, **extra: Any) -> dict[str, Any]:
        status, doc = self.admin("POST", "/admin/v1/accounts", {"name": name, **extra})
        assert status == 201, doc
        if "production_key" in doc:
            self.secrets.append(doc["production_key"]["key"])
        return doc  # type: ignore[no-any-return]

    def keys(self, account_id: str, is_test: bool) -> list[dict[str, Any]]:
        flag = "true" if is_test else "false"
        status, doc = self.admin("GET", f"/admin/v1/keys?account_id={account_id}&is_test={flag}")
        assert status == 200, doc
        return doc["data"]  # type: ignore[no-any-return]


def serve(directory: Path, extra: str = "", workers: int = 1) -> Iterator[Served]:
    port, admin_port = free_port(), free_port()
    config = write_config(
        directory / "gateway.toml",
        "http://127.0.0.1:9",  # nothing there: these tests use what the gateway answers itself
        directory / "gateway.db",
        port,
        admin_port,
        WEBHOOKS + extra,
    )
    text = config.read_text()
    config.write_text(text.replace("[server]\n", f"[server]\nworkers = {workers}\n", 1))
    process = GatewayProcess(config, directory / "gateway.log")
    process.start(port, admin_port)
    served = Served(
        process=process,
        url=f"http://127.0.0.1:{port}",
        admin_url=f"http://127.0.0.1:{admin_port}",
        log=directory / "gateway.log",
    )
    try:
        yield served
    finally:
        assert process.stop() == 0
    text = served.log.read_text()
    for secret in [ADMIN_TOKEN, *served.secrets]:
        assert secret not in text, "a secret reached the gateway's log"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


def new_context(browser: Any, **options: Any) -> Any:
    """A fresh browser profile (no cookies) that may use the clipboard."""
    return browser.new_context(permissions=["clipboard-read", "clipboard-write"], **options)


def clipboard(page: Any) -> str:
    return str(page.evaluate("navigator.clipboard.readText()"))
