"""Shared fixtures: a real upstream on loopback, the gateway in front of it, and a throwaway
PostgreSQL cluster (one per session, started only if a test asks) with a fresh database per
test."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from pgcluster import PgCluster, PgUnavailable, database_name
from support import Running, make_settings, running_gateway, upstream_app


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Any]) -> TestServer:
    server: TestServer = await aiohttp_server(upstream_app())
    return server


# The key signing secrets are sealed with on PostgreSQL (SQLite makes a key file by itself);
# gateway subprocesses started by the tests inherit it.
SECRET_KEY_ENV = "KEYGATE_TEST_SECRET_KEY"
os.environ.setdefault(SECRET_KEY_ENV, base64.b64encode(b"k" * 32).decode())


# What must never appear in any log the suite's gateways write: the admin token, the key that
# seals signing secrets, a whole API key, a signing secret.
LEAKS = (
    re.compile(r"[a-z][a-z0-9]{0,19}_(?:live|test)_[0-9A-Za-z]{40,}"),
    re.compile(r"whsec_[A-Za-z0-9+/]{40,}={0,2}"),
)
CAPTURED_LEAKS: list[str] = []


def secrets_in(text: str) -> list[str]:
    """The secrets `text` shows, abbreviated."""
    from support import ADMIN_TOKEN

    from gateway.keys import KEY_LENGTH, has_valid_checksum

    found = [s[:8] + "..." for s in (ADMIN_TOKEN, os.environ[SECRET_KEY_ENV]) if s in text]
    for match in LEAKS[0].finditer(text):
        seen = match.group(0)
        for start in range(seen.index("_")):  # the key may begin anywhere in the prefix part
            key = seen[start : start + KEY_LENGTH]
            if len(key) == KEY_LENGTH and has_valid_checksum(key.encode()):
                found.append(key[:12] + "...")
    found += [m.group(0)[:10] + "..." for m in LEAKS[1].finditer(text)]
    return sorted(set(found))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """What each test's gateways printed or logged (the in-process access log goes to stdout)
    is searched too."""
    for name, text in report.sections:
        if name.startswith("Captured") and (found := secrets_in(text)):
            CAPTURED_LEAKS.append(f"{report.nodeid} ({name}): {found[:5]}")


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the run, every log file the suite's gateways wrote (subprocesses' files,
    and one the in-process gateways' log records also go to) and every test's captured output
    is searched for the secrets in use. (What a test captures itself, e.g. a CLI's answer
    that shows a new key once by design, is not a log and is not searched.)"""
    base = tmp_path_factory.getbasetemp()
    handler = logging.FileHandler(base / "in-process.log")
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("gateway")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield
    logger.removeHandler(handler)
    logger.setLevel(level)
    handler.close()
    leaks = list(CAPTURED_LEAKS)
    for log in base.rglob("*.log"):
        if found := secrets_in(log.read_text(errors="replace")):
            leaks.append(f"{log.relative_to(base)}: {found[:5]}")
    assert not leaks, "secrets in logs:\n" + "\n".join(leaks)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_stores` run once on SQLite and once on PostgreSQL."""
    if "store_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_stores"
    ):
        metafunc.parametrize("store_kind", ["sqlite", "postgres"])


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


@contextlib.asynccontextmanager
async def gateway_on(
    store_kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    upstream: TestServer,
    webhooks: dict[str, Any] | None = None,
) -> AsyncIterator[Running]:
    """A running gateway on SQLite or on a fresh PostgreSQL database (dropped afterwards);
    `webhooks` adds settings to that section."""
    sections: dict[str, Any] = {"webhooks": dict(webhooks or {})}
    cluster: PgCluster | None = None
    name = database_name(request.node.name)
    if store_kind == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        url = await cluster.create_database(name)
        sections["store"] = {"url": url, "usage_flush_seconds": 0.2}
        sections["webhooks"]["secret_key_env"] = SECRET_KEY_ENV
    settings = make_settings(tmp_path, str(upstream.make_url("")).rstrip("/"), **sections)
    try:
        async with running_gateway(settings) as running:
            yield running
    finally:
        if cluster is not None and cluster.running:
            await cluster.drop_database(name)


# Webhook receivers run on loopback: let webhooks reach plain http there.
LOOPBACK_WEBHOOKS = {"allow_http_hosts": ["127.0.0.1"], "allow_networks": ["127.0.0.0/8"]}


@pytest.fixture
async def gw(
    tmp_path: Path, upstream: TestServer, store_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    async with gateway_on(store_kind, request, tmp_path, upstream) as running:
        yield running


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL cluster for the session, created on first request, destroyed at the end.

    Synchronous (subprocesses only), so it is tied to no event loop."""
    try:
        cluster = PgCluster()
    except PgUnavailable as exc:
        pytest.skip(f"no PostgreSQL to test against: {exc}")
    with cluster:
        yield cluster


@pytest.fixture
async def pg_url(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """postgresql://postgres@127.0.0.1:PORT/DBNAME of a database made for this test alone;
    dropped afterwards, even with connections still open."""
    name = database_name(request.node.name)
    url = await pg_cluster.create_database(name)
    try:
        yield url
    finally:
        if pg_cluster.running:
            await pg_cluster.drop_database(name)
