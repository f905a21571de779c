"""The settings dataclasses, the JSON Schema of the file, config.example.toml and the
configuration reference agree (issue 16): one description, checked from each side."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.config import RouteSettings, Settings, json_schema, load_settings, parse_settings
from gateway.errors import ConfigError
from gateway.reference import pages

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"
MINIMAL = {"upstream": {"url": "http://127.0.0.1:9000"}}
# Set in the example although they have no default: the one required key, and one of the two
# ways to give an admin token (without either the gateway refuses to start).
SET_WITHOUT_DEFAULT = {("upstream", "url"), ("admin", "token_env")}


def _sections() -> dict[str, type[Any]]:
    """Every `[section]` of the file and the dataclass that describes it."""
    fields = Settings.__pydantic_fields__
    return {
        name: info.annotation
        for name, info in fields.items()
        if isinstance(info.annotation, type) and hasattr(info.annotation, "__pydantic_fields__")
    }


def _validator() -> jsonschema.protocols.Validator:
    schema = json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _section_text(text: str, name: str) -> str:
    """The lines of `[name]` in the example, up to the next table header."""
    match = re.search(rf"^\[{name}\]\n(.*?)(?=^#? ?\[)", text + "\n[", flags=re.M | re.S)
    assert match, f"[{name}] missing from config.example.toml"
    return match.group(1)


def test_the_schema_covers_every_key_the_gateway_accepts() -> None:
    schema = json_schema()
    # `source` is the file's name, filled in by parse_settings, never a key of the file.
    assert set(schema["properties"]) == set(Settings.__pydantic_fields__) - {"source"}
    for name, cls in _sections().items():
        props = schema["$defs"][cls.__name__]["properties"]
        assert set(props) == set(cls.__pydantic_fields__), name
    assert set(schema["$defs"]["RouteSettings"]["properties"]) == set(
        RouteSettings.__pydantic_fields__
    )


def test_example_config_is_valid_by_the_schema_and_by_the_gateway() -> None:
    text = EXAMPLE.read_text()
    assert text.startswith("#:schema ./docs/gateway.schema.json\n")
    doc = tomllib.loads(text)
    _validator().validate(doc)
    load_settings(EXAMPLE)


def test_example_config_sets_every_key_to_its_default() -> None:
    text = EXAMPLE.read_text()
    doc = tomllib.loads(text)
    loaded = load_settings(EXAMPLE)
    schema = json_schema()
    for name, cls in _sections().items():
        props = schema["$defs"][cls.__name__]["properties"]
        for key, info in cls.__pydantic_fields__.items():
            where = f"{name}.{key}"
            if (name, key) in SET_WITHOUT_DEFAULT:
                assert key in doc[name], f"{where} missing from config.example.toml"
                continue
            default = info.get_default(call_default_factory=True)
            if default is None:  # optional without a default: shown commented out
                assert key not in doc[name], f"{where} has no default; comment it out"
                assert re.search(rf"^# {key} = ", _section_text(text, name), flags=re.M), (
                    f"{where} missing from config.example.toml"
                )
                assert "default" not in props[key]
                continue
            assert key in doc[name], f"{where} missing from config.example.toml"
            # The example's value is the default, as the schema states it and as loaded.
            assert doc[name][key] == props[key]["default"], where
            assert getattr(getattr(loaded, name), key) == default, where


def test_example_routes_are_valid_by_the_schema_and_by_the_gateway() -> None:
    text = EXAMPLE.read_text()
    commented = text[text.index("\n# [[routes]]\n") :]
    routes = tomllib.loads(re.sub(r"^# ?", "", commented, flags=re.M))
    assert len(routes["routes"]) >= 2
    for field in RouteSettings.__pydantic_fields__:
        assert f"{field} =" in text, f"routes.{field} missing from config.example.toml"
    _validator().validate({**MINIMAL, **routes})
    settings = parse_settings({**MINIMAL, **routes}, "example")
    assert [r.path for r in settings.routes] == [r["path"] for r in routes["routes"]]


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {**MINIMAL, "sever": {}},
        {**MINIMAL, "source": "x"},
        {**MINIMAL, "server": {"prot": 1}},
        {**MINIMAL, "server": {"port": "8080"}},
        {**MINIMAL, "server": {"port": 70000}},
        {**MINIMAL, "server": {"workers": 0}},
        {**MINIMAL, "server": {"port": True}},
        {**MINIMAL, "server": 3},
        {"upstream": {"url": "ftp://x"}},
        {"upstream": {"url": "http://x", "read_timeout": 0}},
        {"upstream": {"url": "http://x", "read_timeout": "60"}},
        {**MINIMAL, "log": {"format": "xml"}},
        {**MINIMAL, "store": {"url": "mysql://x"}},
        {**MINIMAL, "keys": {"prefix": "SK"}},
        {**MINIMAL, "keys": {"scopes": ["a b"]}},
        {**MINIMAL, "keys": {"scopes": "runtime:all"}},
        {**MINIMAL, "admin": {"token_sha256": "abc"}},
        {**MINIMAL, "admin": {"token_env": "1X"}},
        {**MINIMAL, "webhooks": {"retry_schedule": [0]}},
        {**MINIMAL, "webhooks": {"expiry_warning_days": 4000}},
        {**MINIMAL, "portal": {"path": "portal/"}},
        {**MINIMAL, "routes": [{"methods": ["GET"]}]},
        {**MINIMAL, "routes": [{"path": "/x", "methods": []}]},
        {**MINIMAL, "routes": [{"path": "/x", "public": "yes"}]},
    ],
)
def test_what_the_schema_rejects_the_gateway_rejects(doc: dict[str, Any]) -> None:
    assert not _validator().is_valid(doc)
    with pytest.raises(ConfigError):
        parse_settings(doc, "g.toml")


def test_every_key_the_gateway_accepts_is_in_the_configuration_reference() -> None:
    page = pages()["docs/reference/configuration.md"]
    parts = re.split(r"^## ", page, flags=re.M)
    sections = dict(_sections())
    sections["routes"] = RouteSettings
    for name, cls in sections.items():
        header = f"`[[{name}]]`" if name == "routes" else f"`[{name}]`"
        found = [p for p in parts if p.split("\n", 1)[0].endswith(header)]
        assert len(found) == 1, f"no section {header} in the configuration reference"
        for key, info in cls.__pydantic_fields__.items():
            row = re.search(rf"^\| `{key}` \| (.*)$", found[0], flags=re.M)
            assert row, f"{name}.{key} missing from the configuration reference"
            assert info.description and " ".join(info.description.split()) in row.group(1)


def test_every_settings_object_can_be_copied_with_changes() -> None:
    """dataclasses.replace validates every field again: parsed values and None defaults
    must pass (the store copy, the reload and the tests build settings this way)."""
    import dataclasses

    from gateway.config import load_settings, parse_settings

    example = Path(__file__).resolve().parents[1] / "config.example.toml"
    for settings in (
        load_settings(example),
        parse_settings({"upstream": {"url": "http://127.0.0.1:9"}}, "g.toml"),
    ):
        assert dataclasses.replace(settings) == settings
        for f in dataclasses.fields(settings):
            value = getattr(settings, f.name)
            if dataclasses.is_dataclass(value):
                assert dataclasses.replace(value) == value, f.name
        store = dataclasses.replace(
            settings.store, url="postgresql://gw@127.0.0.1:5432/keys", password_env=None
        )
        assert store.is_postgres and store.password_env is None
