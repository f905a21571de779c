"""The reference files in docs/ and config.example.toml are what the code generates now
(issue 16)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.reference import pages

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "stale: run `python -m gateway.reference` and commit the result"
GENERATED_FILES = [
    "docs/reference/admin-api.md",
    "docs/reference/self-service-api.md",
    "docs/reference/cli.md",
    "docs/reference/configuration.md",
    "docs/gateway.schema.json",
    "config.example.toml",
]


@pytest.mark.parametrize("name", GENERATED_FILES)
def test_each_generated_reference_file_is_current(name: str) -> None:
    if name == "docs/reference/cli.md" and sys.version_info[:2] != (3, 11):
        pytest.skip("argparse words its help differently on other Pythons; CI runs 3.11")
    assert (ROOT / name).read_text() == pages()[name], f"{name} is {REGENERATE}"


def test_every_generated_file_is_checked() -> None:
    assert set(pages()) == set(GENERATED_FILES)


def test_every_admin_route_and_command_is_in_the_reference() -> None:
    from gateway.admin.app import routes
    from gateway.cli import build_parser

    generated = pages()
    for route in routes():
        assert f"`{route.method} {route.path}`" in generated["docs/reference/admin-api.md"]
    for command in ("serve", "demo", "migrate", "store backup", "store check", "admin keys update"):
        assert f"`gateway {command}`" in generated["docs/reference/cli.md"]
    assert build_parser().prog == "gateway"


def test_no_generated_page_mentions_the_contract() -> None:
    """Readers of the reference, the OpenAPI documents and config.example.toml have no
    "contract section N" to look up: each says what it means itself."""
    import json

    from gateway import selfservice
    from gateway.admin.app import routes
    from gateway.admin.openapi import build_openapi

    texts = dict(pages())
    texts["admin openapi.json"] = json.dumps(build_openapi(routes()))
    texts["self-service openapi.json"] = json.dumps(selfservice.openapi())
    for name, text in texts.items():
        assert "contract" not in text.lower(), name
