"""Settings: one TOML file, validated once at start-up into frozen dataclasses (stdlib only).

Everything downstream receives these typed values; nothing reads the TOML or the environment
again. Every problem is a `ConfigError` naming the file, the key and what is wrong.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gateway.errors import ConfigError
from gateway.keys import PREFIX_PATTERN
from gateway.routes import PatternError, Route, compile_pattern

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SCOPE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._*-]{0,63}")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_request_line: int = 8192
    max_header_size: int = 32768
    max_headers: int = 100
    max_body_size: int = 0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    max_connections: int = 10000
    shutdown_timeout: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    format: str = "json"
    level: str = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamTarget:
    """One upstream origin parsed from a URL."""

    url: str
    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSettings:
    url: UpstreamTarget
    test_url: UpstreamTarget | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    pool_size: int = 128
    pool_idle_timeout: float = 4.0
    preserve_host: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSettings:
    host: str = "127.0.0.1"
    port: int = 8081
    token_env: str | None = None
    token_sha256: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSettings:
    url: str = "sqlite:///gateway.db"
    usage_flush_seconds: float = 5.0
    password_env: str | None = None  # PostgreSQL: the variable holding the password
    poll_seconds: float = 1.0  # the change-log poll behind the change signal
    node_timeout: float = 10.0  # fleet: an instance without a heartbeat this long is not live
    propagation_timeout: float = 2.0  # fleet: the longest an admin change waits for the others
    max_staleness: float = 15.0  # fleet: out of touch this long -> 503 for keyed requests
    pool_size: int = 8  # PostgreSQL: connections per process (plus one listening)
    migrate_on_start: bool = True  # false: refuse to start with migrations pending

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))

    @property
    def sqlite_path(self) -> Path:
        return sqlite_path(self.url)

    @property
    def migrate_mode(self) -> str:
        """How `gateway serve` opens the store (see SqlStore.open)."""
        return "apply" if self.migrate_on_start else "require"


RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)  # seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    secret_key_env: str | None = None  # base64 of 32 bytes: encrypts signing secrets at rest
    rotation_overlap_seconds: float = 86400.0  # both secrets sign for this long after a rotation
    allow_http_hosts: tuple[str, ...] = ()  # hosts a webhook_url may reach over plain http
    allow_networks: tuple[IPNetwork, ...] = ()  # private/loopback ranges a webhook may reach
    timeout: float = 10.0  # seconds for one delivery attempt
    retry_schedule: tuple[float, ...] = RETRY_SCHEDULE
    expiry_warning_days: float = 7.0  # key.expiring this long before expires_at (0: never)


@dataclass(frozen=True, slots=True, kw_only=True)
class PortalSettings:
    """The customer portal on the data plane (contract section 10)."""

    enabled: bool = False
    path: str = "/portal"  # where the data plane serves it
    public_url: str | None = None  # how browsers reach the data plane; links are made under it
    link_ttl_seconds: int = 300  # a one-time link is good this long for its first use
    session_idle_seconds: int = 1800  # a portal session ends after this long without a request


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySettings:
    prefix: str = "sk"
    scopes: tuple[str, ...] = ("runtime:all", "management:all")
    default_ttl_days: int = 90
    max_production_keys_per_account: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    upstream: UpstreamSettings
    server: ServerSettings = field(default_factory=ServerSettings)
    log: LogSettings = field(default_factory=LogSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    portal: PortalSettings = field(default_factory=PortalSettings)
    routes: tuple[Route, ...] = ()
    source: str = "<settings>"


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel.db` is relative to the working directory, `sqlite:////abs.db` absolute."""
    if not url.startswith("sqlite:///"):
        raise ValueError("only sqlite:/// URLs are supported")
    rest = url[len("sqlite:///") :]
    if not rest or rest.endswith("/"):
        raise ValueError("the URL names no file")
    return Path(rest)


def parse_upstream_url(url: str) -> UpstreamTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    return UpstreamTarget(
        url=url,
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
        base_path=parts.path.rstrip("/"),
    )


# -- loading --------------------------------------------------------------------------------


class _Section:
    """Reads one TOML table, remembering which keys were consumed so leftovers are errors."""

    def __init__(self, source: str, name: str, data: Any) -> None:
        self.source = source
        self.name = name
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(source, name, "must be a table")
        self.data: Mapping[str, Any] = data
        self.seen: set[str] = set()

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, f"{self.name}.{key}", message)

    def get(self, key: str, kind: str, default: Any, check: Callable[[Any], Any]) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.fail(key, "is required")
            return default
        value = self.data[key]
        try:
            return check(value)
        except _Invalid as exc:
            raise self.fail(key, f"must be {kind}{exc.hint}, got {_show(value)}") from None
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def integer(
        self, key: str, default: Any, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        def check(v: Any) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise _Invalid()
            if v < minimum or (maximum is not None and v > maximum):
                raise _Invalid(_range_hint(minimum, maximum))
            return v

        kind = "an integer"
        return int(self.get(key, kind, default, check))

    def number(
        self, key: str, default: Any, *, minimum: float = 0.0, positive: bool = False
    ) -> float:
        def check(v: Any) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise _Invalid()
            if v < minimum or (positive and v <= 0):
                raise _Invalid(" > 0" if positive else f" >= {minimum}")
            return float(v)

        return float(self.get(key, "a number", default, check))

    def boolean(self, key: str, default: bool) -> bool:
        def check(v: Any) -> bool:
            if not isinstance(v, bool):
                raise _Invalid()
            return v

        return bool(self.get(key, "true or false", default, check))

    def string(self, key: str, default: Any, *, choices: tuple[str, ...] | None = None) -> Any:
        def check(v: Any) -> str:
            if not isinstance(v, str):
                raise _Invalid()
            if choices is not None and v not in choices:
                raise _Invalid(" one of " + ", ".join(repr(c) for c in choices))
            return v

        return self.get(key, "a string", default, check)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


class _Invalid(Exception):
    def __init__(self, hint: str = "") -> None:
        self.hint = hint


_REQUIRED: Any = object()


def _range_hint(minimum: int, maximum: int | None) -> str:
    return f" between {minimum} and {maximum}" if maximum is not None else f" >= {minimum}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) < 60 else repr(value[:57] + "...")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _host(value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise _Invalid()
    return value


def _networks(v: Any) -> tuple[IPNetwork, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Invalid()
    out = []
    for item in v:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(out)


def _webhooks(sec: _Section) -> WebhookSettings:
    def env_name(v: Any) -> str:
        if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise _Invalid(" (an environment variable name)")
        return v

    def schedule(v: Any) -> tuple[float, ...]:
        if (
            not isinstance(v, list)
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
            or not all(0 < x <= 7 * 86400 for x in v)
            or len(v) > 50
        ):
            raise _Invalid(" (at most 50, each > 0 and at most a week)")
        return tuple(float(x) for x in v)

    def warning_days(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 3650:
            raise _Invalid()
        return float(v)

    def hosts(v: Any) -> tuple[str, ...]:
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise _Invalid()
        return tuple(h.lower().strip("[]") for h in v)

    settings = WebhookSettings(
        secret_key_env=sec.get("secret_key_env", "a string", None, env_name),
        rotation_overlap_seconds=sec.number("rotation_overlap_seconds", 86400.0),
        allow_http_hosts=sec.get("allow_http_hosts", "a list of host names", (), hosts),
        allow_networks=sec.get("allow_networks", "a list of CIDR strings", (), _networks),
        timeout=sec.number("timeout", 10.0, positive=True),
        retry_schedule=sec.get(
            "retry_schedule",
            "a list of positive numbers (seconds)",
            RETRY_SCHEDULE,
            schedule,
        ),
        expiry_warning_days=sec.get(
            "expiry_warning_days", "a number of days from 0 to 3650", 7.0, warning_days
        ),
    )
    sec.finish()
    return settings


def _server(sec: _Section) -> ServerSettings:
    networks = _networks

    settings = ServerSettings(
        host=sec.get("host", "a host name or address", "0.0.0.0", _host),
        port=sec.integer("port", 8080, maximum=65535),
        workers=sec.integer("workers", 1, minimum=1, maximum=256),
        trusted_proxies=sec.get("trusted_proxies", "a list of CIDR strings", (), networks),
        max_request_line=sec.integer("max_request_line", 8192, minimum=256),
        max_header_size=sec.integer("max_header_size", 32768, minimum=1024),
        max_headers=sec.integer("max_headers", 100, minimum=8),
        max_body_size=sec.integer("max_body_size", 0),
        header_timeout=sec.number("header_timeout", 10.0, positive=True),
        body_timeout=sec.number("body_timeout", 60.0, positive=True),
        send_timeout=sec.number("send_timeout", 60.0, positive=True),
        keepalive_timeout=sec.number("keepalive_timeout", 75.0, positive=True),
        max_connections=sec.integer("max_connections", 10000, minimum=1),
        shutdown_timeout=sec.number("shutdown_timeout", 30.0),
    )
    sec.finish()
    return settings


def _log(sec: _Section) -> LogSettings:
    settings = LogSettings(
        format=sec.string("format", "json", choices=("json", "text")),
        level=sec.string("level", "info", choices=LOG_LEVELS),
    )
    sec.finish()
    return settings


def _upstream(sec: _Section) -> UpstreamSettings:
    def target(v: Any) -> UpstreamTarget:
        if not isinstance(v, str):
            raise _Invalid()
        return parse_upstream_url(v)

    settings = UpstreamSettings(
        url=sec.get("url", "an http(s) URL", _REQUIRED, target),
        test_url=sec.get("test_url", "an http(s) URL", None, target),
        connect_timeout=sec.number("connect_timeout", 5.0, positive=True),
        read_timeout=sec.number("read_timeout", 60.0, positive=True),
        pool_size=sec.integer("pool_size", 128),
        pool_idle_timeout=sec.number("pool_idle_timeout", 4.0, positive=True),
        preserve_host=sec.boolean("preserve_host", False),
    )
    sec.finish()
    return settings


def _admin(sec: _Section) -> AdminSettings:
    def env_name(v: Any) -> str:
        if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise _Invalid(" (an environment variable name)")
        return v

    def sha256_hex(v: Any) -> str:
        if not isinstance(v, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise _Invalid(" of 64 hex digits")
        return v.lower()

    settings = AdminSettings(
        host=sec.get("host", "a host name or address", "127.0.0.1", _host),
        port=sec.integer("port", 8081, maximum=65535),
        token_env=sec.get("token_env", "a string", None, env_name),
        token_sha256=sec.get("token_sha256", "a string", None, sha256_hex),
    )
    sec.finish()
    if settings.token_env is not None and settings.token_sha256 is not None:
        raise sec.fail("token_sha256", "set either admin.token_env or admin.token_sha256, not both")
    return settings


def _store(sec: _Section) -> StoreSettings:
    def url(v: Any) -> str:
        if not isinstance(v, str):
            raise _Invalid()
        return parse_store_url(v)

    def env_name(v: Any) -> str:
        if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise _Invalid(" (an environment variable name)")
        return v

    settings = StoreSettings(
        url=sec.get("url", "a string", "sqlite:///gateway.db", url),
        usage_flush_seconds=sec.number("usage_flush_seconds", 5.0, positive=True),
        password_env=sec.get("password_env", "a string", None, env_name),
        poll_seconds=sec.number("poll_seconds", 1.0, positive=True),
        node_timeout=sec.number("node_timeout", 10.0, positive=True),
        propagation_timeout=sec.number("propagation_timeout", 2.0, positive=True),
        max_staleness=sec.number("max_staleness", 15.0, positive=True),
        pool_size=sec.integer("pool_size", 8, minimum=1, maximum=1000),
        migrate_on_start=sec.boolean("migrate_on_start", True),
    )
    sec.finish()
    if settings.password_env is not None and not settings.is_postgres:
        raise sec.fail("password_env", "applies to postgresql:// store URLs only")
    return settings


def parse_store_url(v: str) -> str:
    """A store URL the gateway can open, else ValueError (never echoing a password)."""
    if v.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(v)
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"{redact_url(v)} has an invalid port") from None
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError(f"{redact_url(v)} names no host")
        return v
    if not v.startswith("sqlite:///"):
        raise ValueError(
            f"unsupported store URL {redact_url(v)!r}: expected sqlite:///path/to/file.db"
            " or postgresql://user@host:5432/database"
        )
    sqlite_path(v)
    return v


def redact_url(url: str) -> str:
    """A URL fit for a message or a log line: a password, in the user part or the query
    (`password=`, `sslpassword=`), becomes `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if netloc == "" and url.startswith("sqlite:"):
        return url  # a file path: nothing secret, and urlunsplit would drop its slashes
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{host}"
    query = re.sub(r"((?:^|&)(?:ssl)?password=)[^&]*", r"\1***", parts.query, flags=re.I)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _keys(sec: _Section) -> KeySettings:
    def prefix(v: Any) -> str:
        if not isinstance(v, str) or not PREFIX_PATTERN.fullmatch(v):
            raise _Invalid(" of 1-20 lower-case letters and digits, starting with a letter")
        return v

    def scopes(v: Any) -> tuple[str, ...]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise _Invalid()
        for s in v:
            if not SCOPE_PATTERN.fullmatch(s):
                raise ValueError(f"{s!r} is not a valid scope name (letters, digits, ':._*-')")
        if len(set(v)) != len(v):
            raise ValueError("lists a scope twice")
        return tuple(v)

    settings = KeySettings(
        prefix=sec.get("prefix", "a string", "sk", prefix),
        scopes=sec.get("scopes", "a list of strings", ("runtime:all", "management:all"), scopes),
        default_ttl_days=sec.integer("default_ttl_days", 90, maximum=36500),
        max_production_keys_per_account=sec.integer("max_production_keys_per_account", 0),
    )
    sec.finish()
    return settings


# What the data plane answers itself (contract section 4): /v1/auth, /api/v1/access-keys/...
_OWN_DATA_PLANE_PATHS = ("/v1/auth", "/api/v1/access-keys")
_PORTAL_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def _portal(sec: _Section) -> PortalSettings:
    def path(v: Any) -> str:
        if not isinstance(v, str) or not _PORTAL_PATH.fullmatch(v):
            raise _Invalid(' like "/portal" (segments of letters, digits, ._~-; no trailing /)')
        if any(seg in (".", "..") for seg in v.split("/")):
            raise ValueError(f"{v!r} has a dot segment")
        for own in _OWN_DATA_PLANE_PATHS:
            # The portal answers its path and everything under it, before anything else: it
            # must neither be one of these, nor contain one, nor lie under one.
            if v == own or own.startswith(v + "/") or v.startswith(own + "/"):
                raise ValueError(f"{v!r} is taken by the gateway's own endpoints ({own})")
        return v

    def public_url(v: Any) -> str:
        if not isinstance(v, str):
            raise _Invalid()
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not carry credentials, a query or a fragment")
        return v.rstrip("/")

    settings = PortalSettings(
        enabled=sec.boolean("enabled", False),
        path=sec.get("path", "a path", "/portal", path),
        public_url=sec.get("public_url", "a URL", None, public_url),
        link_ttl_seconds=sec.integer("link_ttl_seconds", 300, minimum=1, maximum=86400),
        session_idle_seconds=sec.integer("session_idle_seconds", 1800, minimum=1, maximum=604800),
    )
    sec.finish()
    if settings.enabled and settings.public_url is None:
        raise sec.fail("public_url", "is required when portal.enabled = true")
    return settings


_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.~-]{1,64}")


def _routes(source: str, data: Any, keys: KeySettings) -> tuple[Route, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(source, "routes", "must be an array of tables ([[routes]])")
    out = []
    for i, item in enumerate(data):
        sec = _Section(source, f"routes[{i}]", item)

        def pattern(v: Any) -> str:
            if not isinstance(v, str):
                raise _Invalid()
            try:
                compile_pattern(v)
            except PatternError as exc:
                raise ValueError(f"{v!r} {exc}") from None
            return v

        def methods(v: Any) -> frozenset[str]:
            if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                raise _Invalid(" (non-empty)")
            bad = [m for m in v if not _METHOD.fullmatch(m)]
            if bad:
                raise ValueError(f'{bad[0]!r} is not an HTTP method (upper case, e.g. "GET")')
            # Upstream frameworks answer HEAD with their GET handler: guard it like GET.
            return frozenset(v) | ({"HEAD"} if "GET" in v else set())

        def scopes(v: Any) -> tuple[str, ...]:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise _Invalid()
            unknown = [x for x in v if x not in keys.scopes]
            if unknown:
                raise ValueError(f"unknown scope {unknown[0]!r} (not in keys.scopes)")
            return tuple(v)

        def param(v: Any) -> str:
            if not isinstance(v, str) or not _PARAM_NAME.fullmatch(v):
                raise _Invalid(" (a query parameter name)")
            return v

        path = sec.get("path", "a path pattern", _REQUIRED, pattern)
        route_methods = sec.get("methods", "a list of HTTP methods", None, methods)
        route_scopes = sec.get("scopes", "a list of strings", (), scopes)
        public = sec.boolean("public", False)
        callback = sec.get("callback_param", "a string", None, param)
        sec.finish()
        if public and route_scopes:
            raise sec.fail("public", "a public route cannot also require scopes")
        if public and callback:
            raise sec.fail(
                "public", "a public route has no account to check callback origins against"
            )
        segments, names, tail = compile_pattern(path)
        out.append(
            Route(
                index=i,
                path=path,
                methods=route_methods,
                scopes=route_scopes,
                public=public,
                callback_param=callback,
                segments=segments,
                params=names,
                tail=tail,
            )
        )
    return tuple(out)


def parse_settings(data: Mapping[str, Any], source: str) -> Settings:
    """Validate a decoded TOML document into Settings or raise ConfigError."""
    sections = {
        *("server", "log", "upstream", "admin", "store", "keys", "webhooks", "portal", "routes")
    }
    for key in data:
        if key not in sections:
            raise ConfigError(source, key, "unknown key")
    keys = _keys(_Section(source, "keys", data.get("keys")))
    return Settings(
        server=_server(_Section(source, "server", data.get("server"))),
        log=_log(_Section(source, "log", data.get("log"))),
        upstream=_upstream(_Section(source, "upstream", data.get("upstream", {}))),
        admin=_admin(_Section(source, "admin", data.get("admin"))),
        store=_store(_Section(source, "store", data.get("store"))),
        keys=keys,
        webhooks=_webhooks(_Section(source, "webhooks", data.get("webhooks"))),
        portal=_portal(_Section(source, "portal", data.get("portal"))),
        routes=_routes(source, data.get("routes"), keys),
        source=source,
    )


def load_settings(path: str | os.PathLike[str]) -> Settings:
    source = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(source, None, "file not found") from None
    except PermissionError:
        raise ConfigError(source, None, "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(source, None, "is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, None, f"invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(source, None, "invalid TOML: not UTF-8") from None
    return parse_settings(data, source)


def admin_token_error(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """Why the admin port cannot authenticate anyone, or None when a token is configured."""
    admin = settings.admin
    if admin.token_env is None and admin.token_sha256 is None:
        return (
            f"{settings.source}: admin: no admin token configured: set admin.token_env "
            "(the name of an environment variable holding the token) or admin.token_sha256"
        )
    if admin.token_env is not None:
        value = environ.get(admin.token_env, "")
        if len(value) < 16:
            state = "is not set" if not value else "is shorter than 16 characters"
            return (
                f"{settings.source}: admin.token_env: environment variable "
                f"{admin.token_env} {state}"
            )
    return None
