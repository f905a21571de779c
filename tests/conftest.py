"""Shared fixtures: a real upstream on loopback and the gateway in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from support import Running, make_settings, running_gateway, upstream_app


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Any]) -> TestServer:
    server: TestServer = await aiohttp_server(upstream_app())
    return server


@pytest.fixture
async def gw(tmp_path: Path, upstream: TestServer) -> AsyncIterator[Running]:
    settings = make_settings(tmp_path, str(upstream.make_url("")).rstrip("/"))
    async with running_gateway(settings) as running:
        yield running
