"""Configuration: validated once; every problem is one line naming the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import admin_token_error, load_settings, parse_settings
from gateway.errors import ConfigError

MINIMAL = {"upstream": {"url": "http://127.0.0.1:9000"}}


def test_minimal_config_gets_the_documented_defaults() -> None:
    s = parse_settings(MINIMAL, "g.toml")
    assert (s.server.host, s.server.port, s.server.workers) == ("0.0.0.0", 8080, 1)
    assert (s.admin.host, s.admin.port) == ("127.0.0.1", 8081)
    assert s.upstream.connect_timeout == 5 and s.upstream.read_timeout == 60
    assert s.store.url == "sqlite:///gateway.db" and s.store.usage_flush_seconds == 5
    assert s.keys.prefix == "sk" and s.keys.default_ttl_days == 90
    assert s.keys.max_production_keys_per_account == 0
    assert s.log.format == "json" and s.log.level == "info"


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = Path(__file__).parent.parent / "config.example.toml"
    s = load_settings(example)
    text = example.read_text()
    for section in ("server", "log", "upstream", "admin", "store", "keys", "webhooks"):
        obj = getattr(s, section)
        for name in obj.__dataclass_fields__:
            assert f"{name} =" in text or f"# {name} =" in text, f"{section}.{name} undocumented"


@pytest.mark.parametrize(
    ("doc", "key", "fragment"),
    [
        ({}, "upstream.url", "is required"),
        ({"upstream": {}}, "upstream.url", "is required"),
        ({**MINIMAL, "sever": {}}, "sever", "unknown key"),
        ({**MINIMAL, "server": {"prot": 1}}, "server.prot", "unknown key"),
        ({**MINIMAL, "server": {"port": "8080"}}, "server.port", "must be an integer"),
        ({**MINIMAL, "server": {"port": 70000}}, "server.port", "between 0 and 65535"),
        ({**MINIMAL, "server": {"workers": 0}}, "server.workers", "between 1"),
        ({**MINIMAL, "server": {"port": True}}, "server.port", "must be an integer"),
        (
            {**MINIMAL, "server": {"trusted_proxies": ["10.0.0.0/8", "nope"]}},
            "server.trusted_proxies",
            "'nope'",
        ),
        ({"upstream": {"url": "ftp://x"}}, "upstream.url", "http"),
        ({"upstream": {"url": "http://u:p@x"}}, "upstream.url", "credentials"),
        ({"upstream": {"url": "http://x", "read_timeout": 0}}, "upstream.read_timeout", "> 0"),
        (
            {"upstream": {"url": "http://x", "read_timeout": "60"}},
            "upstream.read_timeout",
            "must be a number",
        ),
        ({**MINIMAL, "log": {"format": "xml"}}, "log.format", "'json'"),
        ({**MINIMAL, "store": {"url": "mysql://x"}}, "store.url", "unsupported"),
        (
            {**MINIMAL, "store": {"url": "mysql://admin:hunter22@db/x"}},
            "store.url",
            "'mysql://admin:***@db/x'",  # a password is never echoed
        ),
        ({**MINIMAL, "store": {"url": "postgresql://u:pw@h:99999/x"}}, "store.url", "u:***@h"),
        ({**MINIMAL, "store": {"password_env": "PGPASS"}}, "store.password_env", "postgresql"),
        (
            {**MINIMAL, "store": {"url": "postgresql://h:0x/db?sslpassword=pw1&password=pw2"}},
            "store.url",
            "postgresql://h:0x/db?sslpassword=***&password=*** has an invalid port",
        ),
        (
            {**MINIMAL, "store": {"url": "postgresql://h/x", "poll_seconds": 0}},
            "store.poll_seconds",
            "> 0",
        ),
        ({**MINIMAL, "keys": {"prefix": "SK"}}, "keys.prefix", "lower-case"),
        ({**MINIMAL, "keys": {"scopes": ["a b"]}}, "keys.scopes", "not a valid scope"),
        ({**MINIMAL, "keys": {"scopes": "runtime:all"}}, "keys.scopes", "list of strings"),
        ({**MINIMAL, "admin": {"token_sha256": "abc"}}, "admin.token_sha256", "64 hex"),
        (
            {**MINIMAL, "admin": {"token_env": "A", "token_sha256": "a" * 64}},
            "admin.token_sha256",
            "not both",
        ),
        ({**MINIMAL, "server": 3}, "server", "must be a table"),
    ],
)
def test_bad_values_name_the_file_and_the_key(doc: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(doc, "conf/g.toml")
    message = str(info.value)
    assert message.startswith(f"conf/g.toml: {key}: "), message
    assert fragment in message
    assert "\n" not in message


def test_postgresql_store_urls_and_their_settings() -> None:
    for url in ("postgresql://gw@db.internal:5432/keys", "postgres://gw@10.0.0.5/keys"):
        s = parse_settings({**MINIMAL, "store": {"url": url, "password_env": "PGPASS"}}, "g")
        assert s.store.is_postgres and s.store.password_env == "PGPASS"
        assert s.store.poll_seconds == 1.0


def test_missing_admin_token_is_reported() -> None:
    s = parse_settings(MINIMAL, "g.toml")
    assert "no admin token configured" in (admin_token_error(s, {}) or "")
    s = parse_settings({**MINIMAL, "admin": {"token_env": "TOK"}}, "g.toml")
    assert "TOK is not set" in (admin_token_error(s, {}) or "")
    assert admin_token_error(s, {"TOK": "x" * 32}) is None


def _serve(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '[upstream]\nurl = "http://127.0.0.1:1"\n[server]\nport = "x"\n',
            "server.port: must be an integer",
        ),
        ('[upstream]\nurl = "http://127.0.0.1:1"\nbogus = 1\n', "upstream.bogus: unknown key"),
        ("[upstream\n", "invalid TOML"),
        ("[server]\nport = 1\n", "upstream.url: is required"),
    ],
)
def test_gateway_serve_refuses_bad_config_in_one_line_with_exit_2(
    tmp_path: Path, content: str, expected: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    result = _serve(config)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0] and expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_gateway_serve_without_an_admin_token_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text('[upstream]\nurl = "http://127.0.0.1:1"\n')
    result = _serve(config)
    assert result.returncode == 2
    assert "no admin token configured" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = _serve(tmp_path / "nope.toml")
    assert result.returncode == 2
    assert "nope.toml: file not found" in result.stderr


def test_a_reload_keeps_every_restart_only_setting_it_warns_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gateway.runtime import reloadable

    base = {"upstream": {"url": "http://127.0.0.1:9000"}}
    old = parse_settings({**base, "webhooks": {"secret_key_env": "OLD_KEY"}}, "g.toml")
    new = parse_settings(
        {
            **base,
            "server": {"port": 9999, "workers": 3},
            "store": {"url": "sqlite:///other.db"},
            "admin": {"port": 9998},
            "webhooks": {"secret_key_env": "NEW_KEY", "timeout": 7},
            "keys": {"prefix": "xy"},
        },
        "g.toml",
    )
    with caplog.at_level("WARNING"):
        got = reloadable(old, new)
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("server.host/port", "server.workers", "store", "admin", "webhooks.secret_key_env"):
        assert f"reload: {name} changed" in warned
    assert (got.server.port, got.server.workers) == (old.server.port, old.server.workers)
    assert (got.store, got.admin) == (old.store, old.admin)
    assert got.webhooks.secret_key_env == "OLD_KEY"
    assert got.webhooks.timeout == 7 and got.keys.prefix == "xy"  # the rest is applied
