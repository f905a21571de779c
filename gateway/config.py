"""Settings: one TOML file, validated once at start-up into frozen dataclasses.

The dataclasses below are the one description of the file: each field's type, default, bounds
and description. Pydantic validates a decoded document against them, and `gateway.reference`
renders the JSON Schema (`docs/gateway.schema.json`) and the configuration reference from them.
Everything downstream receives these typed values; nothing reads the TOML or the environment
again. Every problem is a `ConfigError` naming the file, the key and what is wrong, worded by
`gateway.configerrors` rather than by pydantic.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass as plain_dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema

from gateway.configerrors import Expect, explain, invalid, placed
from gateway.errors import ConfigError
from gateway.keys import PREFIX_PATTERN
from gateway.routes import PatternError, Route, compile_pattern

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SCOPE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._*-]{0,63}")
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)  # seconds

# Unknown keys are errors. Scalar fields say `strict=True`: TOML has types, "8080" is no port.
_SECTION = ConfigDict(extra="forbid")


# -- checks for values pydantic has no type for -----------------------------------------------
# Each receives the TOML value, or an already validated one (dataclasses.replace validates
# again), and raises `invalid(hint)` (a value of the wrong kind) or ValueError (said as is).


def _host(value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise invalid()
    return value


def _networks(v: Any) -> tuple[IPNetwork, ...]:
    if not isinstance(v, list | tuple):
        raise invalid()
    out = []
    for item in v:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(item)
        elif not isinstance(item, str):
            raise invalid()
        else:
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(out)


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A validator of an optional field: None (the default, never in a TOML file, which has no
    null) passes, so `dataclasses.replace`, which validates every field again, keeps working."""

    def validate(v: Any) -> Any:
        return None if v is None else check(v)

    return validate


def _env_name(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(ENV_NAME, v):
        raise invalid(" (an environment variable name)")
    return v


Host = Annotated[
    str,
    PlainValidator(_host),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": r"^\S+$"}),
    Expect("a host name or address"),
]
Networks = Annotated[
    tuple[IPNetwork, ...],
    PlainValidator(_networks),
    WithJsonSchema(
        {"type": "array", "items": {"type": "string", "description": "an IP address or CIDR"}}
    ),
    Expect("a list of CIDR strings"),
]
EnvName = Annotated[
    str | None,
    PlainValidator(_optional(_env_name)),
    WithJsonSchema({"type": "string", "pattern": f"^{ENV_NAME}$"}),
    Expect("a string"),
]
Port = Annotated[int, Field(strict=True, ge=0, le=65535)]


def _positive(default: float, description: str) -> Any:
    """A number of seconds (or such) above zero."""
    return Field(default=default, strict=True, gt=0, allow_inf_nan=False, description=description)


def _count(default: int, description: str, *, ge: int = 0, le: int | None = None) -> Any:
    return Field(default=default, strict=True, ge=ge, le=le, description=description)


# -- the sections ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True, config=_SECTION)
class ServerSettings:
    """The data-plane listener: where it listens, what it accepts, how long it waits."""

    host: Host = Field(default="0.0.0.0", description="Address the data plane listens on.")
    port: Port = Field(default=8080, description="Port the data plane listens on.")
    workers: int = _count(1, "Data-plane processes sharing the port (SO_REUSEPORT).", ge=1, le=256)
    trusted_proxies: Networks = Field(
        default=(),
        description="Peers (IPs or CIDRs) whose X-Forwarded-For is appended to and whose"
        " X-Forwarded-Proto, X-Forwarded-Host and Forwarded are kept. Everyone else's are"
        " replaced.",
    )
    max_request_line: int = _count(
        8192, "Longest request line (method, target, version) in bytes; longer: 414.", ge=256
    )
    max_header_size: int = _count(
        32768,
        "Largest request head (all header lines together) in bytes; larger: 431.",
        ge=1024,
    )
    max_headers: int = _count(100, "Most header lines in one request; more: 431.", ge=8)
    max_body_size: int = _count(
        0, "Largest request body in bytes, counted as it streams; larger: 413. 0 = no limit."
    )
    header_timeout: float = _positive(
        10.0,
        "Seconds allowed to receive a request head once it starts (slowloris guard); then 408.",
    )
    body_timeout: float = _positive(
        60.0,
        "Idle seconds allowed between bytes of a request body; then 408 (or the connection"
        " is cut).",
    )
    send_timeout: float = _positive(
        60.0,
        "Seconds a client may leave our writes unread (its receive window full); then it is"
        " cut off.",
    )
    keepalive_timeout: float = _positive(
        75.0, "Idle seconds allowed between requests on a keep-alive connection."
    )
    max_connections: int = _count(
        10000,
        "Open client connections per worker; past it new connections get 503 and are closed.",
        ge=1,
    )
    shutdown_timeout: float = Field(
        default=30.0,
        strict=True,
        ge=0,
        allow_inf_nan=False,
        description="On SIGTERM/SIGINT: seconds in-flight requests may take to finish before"
        " being cut.",
    )


@dataclass(frozen=True, slots=True, kw_only=True, config=_SECTION)
class LogSettings:
    """Logging to standard output: application messages and, at "info", one line per request."""

    format: Literal["json", "text"] = Field(
        default="json", description='"json" (one object per line) or "text".'
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description='"debug", "info" (one line per request), "warning" or "error".'
    )


@plain_dataclass(frozen=True, slots=True, kw_only=True)
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


def _target(v: Any) -> UpstreamTarget:
    if isinstance(v, UpstreamTarget):
        return v
    if not isinstance(v, str):
        raise invalid()
    return parse_upstream_url(v)


_URL_SCHEMA = WithJsonSchema({"type": "string", "format": "uri", "pattern": "^https?://"})
_Target = Annotated[UpstreamTarget, PlainValidator(_target), _URL_SCHEMA, Expect("an http(s) URL")]
_MaybeTarget = Annotated[
    UpstreamTarget | None,
    PlainValidator(_optional(_target)),
    _URL_SCHEMA,
    Expect("an http(s) URL"),
]


@dataclass(frozen=True, slots=True, kw_only=True, config=_SECTION)
class UpstreamSettings:
    """The service behind the gateway."""

    url: _Target = Field(
        examples=["http://127.0.0.1:9000"],
        description="Where authenticated production traffic goes. A path here is prepended to"
        " every request path.",
    )
    test_url: _MaybeTarget = Field(
        default=None,
        examples=["http://127.0.0.1:9001"],
        description="Where test-key (sk_test_) traffic goes; unset: the same upstream as"
        " production.",
    )
    connect_timeout: float = _positive(
        5.0, "Seconds to establish a connection before answering 504."
    )
    read_timeout: float = _positive(
        60.0,
        "Seconds without a byte from the upstream before answering 504 (or cutting a started"
        " response), so a long stream that keeps sending lives on.",
    )
    pool_size: int = _count(128, "Idle keep-alive connections kept per upstream.")
    pool_idle_timeout: float = _positive(
        4.0,
        "Idle pooled connections are closed after this long (or sooner when the upstream says"
        " `Keep-Alive: timeout=N`); keep it below the upstream's own keep-alive timeout.",
    )
    preserve_host: bool = Field(
        default=False,
        strict=True,
        description="Forward the client's Host header instead of the upstream's own host"
        " (Kong's preserve_host).",
    )


def _sha256_hex(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", v):
        raise invalid(" of 64 hex digits")
    return v.lower()


@dataclass(frozen=True, slots=True, kw_only=True, config=_SECTION)
class AdminSettings:
    """The admin API listener and its token: set one of admin.token_env and admin.token_sha256
    (not both); without either the gateway refuses to start."""

    host: Host = Field(
        default="127.0.0.1",
        description="Address the admin API listens on: keep it on loopback or a private network.",
    )
    port: Port = Field(default=8081, description="Port the admin API listens on.")
    token_env: EnvName = Field(
        default=None,
        examples=["GATEWAY_ADMIN_TOKEN"],
        description="Name of the environment variable holding the admin token (at least 16"
        " characters).",
    )
    token_sha256: Annotated[
        str | None,
        PlainValidator(_optional(_sha256_hex)),
        WithJsonSchema({"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}),
        Expect("a string"),
    ] = Field(
        default=None,
        examples=["<64 hex digits: the SHA-256 of the token>"],
        description="The SHA-256 (hex) of the admin token, instead of admin.token_env.",
    )

    @model_validator(mode="after")
    def _one_token(self) -> AdminSettings:
        if self.token_env is not None and self.token_sha256 is not None:
            raise placed(
                "token_sha256", "set either admin.token_env or admin.token_sha256, not both"
            )
        return self


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel.db` is relative to the working directory, `sqlite:////abs.db` absolute."""
    if not url.startswith("sqlite:///"):
        raise ValueError("only sqlite:/// URLs are supported")
    rest = url[len("sqlite:///") :]
    if not rest or rest.endswith("/"):
        raise ValueError("the URL names no file")
    return Path(rest)


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


def _store_url(v: Any) -> str:
    if not isinstance(v, str):
        raise invalid()
    return parse_store_url(v)


@dataclass(frozen=True, slots=True, kw_only=True, config=_SECTION)
class StoreSettings:
    """Where keys, accounts and events are kept: SQLite on one host, PostgreSQL for a fleet."""

    url: Annotated[
        str,
        PlainValidator(_store_url),
        WithJsonSchema({"type": "string", "pattern": "^(sqlite:///|postgres(ql)?://)"}),
        Expect("a string"),
    ] = Field(
        default="sqlite:///gateway.db",
        description="sqlite:///relative/path.db or sqlite:////absolute/path.db (one host), or"
        " postgresql://user@host:5432/database for a fleet of gateways on one database.",
    )
    usage_flush_seconds: float = _positive(
        5.0, "last_used_* is written behind, at most this many seconds late."
    )
    password_env: EnvName = Field(
        default=None,
        examples=["GATEWAY_STORE_PASSWORD"],
        description="PostgreSQL only: the environment variable holding the password (rather"
        " than the URL).",
    )
    poll_seconds: float = _positive(
        1.0,
        "Changes reach the data plane at once (a shared counter with SQLite, LISTEN/NOTIFY with"
        " PostgreSQL); the change log is also polled this often as a safety net.",
    )
    node_timeout: float = _positive(
        10.0,
        "Fleet (PostgreSQL) only. Instances register and send a heartbeat; one silent this long"
        " is no longer counted as live.",
    )
    propagation_timeout: float = _positive(
        2.0,
        "Fleet (PostgreSQL) only. Every request that changes an account, a key or a callback"
        " origin (through the admin API, the console, the portal or the self-service endpoints;"
        " a rename too, not only what affects authentication) returns once every live instance"
        " has applied the change, or after this many seconds (X-Gateway-Propagation:"
        " confirmed=K/N says which).",
    )
    max_staleness: float = _positive(
        15.0,
        "An instance without confirmed contact with the store this long answers keyed requests"
        " with 503 (public routes keep working) until it has caught up.",
    )
    pool_size: int = _count(
        8,
        "PostgreSQL only: connections each process keeps in its pool (plus one that listens).",
        ge=1,
        le=1000,
    )
    migrate_on_start: bool = Field(
        default=True,
        strict=True,
        description="Schema migrations run when the gateway starts (safe with several starting"
        " at once). With false, a store with migrations pending is refused: run"
        " `gateway migrate --config FILE` first.",
    )

    @model_validator(mode="after")
    def _password_for_postgres(self) -> StoreSettings:
        if self.password_env is not None and not self.is_postgres:
            raise placed("password_env", "applies to postgresql:// store URLs only")
        return self

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


def _prefix(v: Any) -> str:
    if not isinstance(v, str) or not PREFIX_PATTERN.fullmatch(v):
        raise invalid(" of 1-20 lower-case letters and digits, starting with a letter")
    return v


def _scopes(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise invalid()
    for s in v:
        if not SCOPE_PATTERN.fullmatch(s):
            raise ValueError(f"{s!r} is not a valid scope name (letters, digits, ':._*-')")
    if len(set(v)) != len(v):
        raise ValueError("lists a scope twice")
    return tuple(v)


@dataclass(frozen=True, slots=True, kw_only=True, config=_SECTION)
class KeySettings:
    """The keys the gateway issues."""

    prefix: Annotated[
        str,
        PlainValidator(_prefix),
        WithJsonSchema({"type": "string", "pattern": f"^{PREFIX_PATTERN.pattern}$"}),
        Expect("a string"),
    ] = Field(
        default="sk",
        description="Keys look like {prefix}_live_... and {prefix}_test_...: 1-20 lower-case"
        " letters/digits, starting with a letter.",
    )
    scopes: Annotated[
        tuple[str, ...],
        PlainValidator(_scopes),
        WithJsonSchema(
            {
                "type": "array",
                "uniqueItems": True,
                "items": {"type": "string", "pattern": f"^{SCOPE_PATTERN.pattern}$"},
            }
        ),
        Expect("a list of strings"),
    ] = Field(
        default=("runtime:all", "management:all"),
        description="The scopes a key may hold; a key created without `scopes` gets all of them.",
    )
    default_ttl_days: int = _count(
        90, "Expiry of keys created without expires_at/expires_in; 0 = never expire.", le=36500
    )
    max_production_keys_per_account: int = _count(
        0, "Active production keys an account may hold; 0 = no limit."
    )


def _retry_schedule(v: Any) -> tuple[float, ...]:
    if (
        not isinstance(v, list | tuple)
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        or not all(0 < x <= 7 * 86400 for x in v)
        or len(v) > 50
    ):
        raise invalid(" (at most 50, each > 0 and at most a week)")
    return tuple(float(x) for x in v)


def _http_hosts(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) and x for x in v):
        raise invalid()
    return tuple(h.lower().strip("[]") for h in v)


@dataclass(frozen=True, slots=True, kw_only=True, config=_SECTION)
class WebhookSettings:
    """Signed event deliveries to the accounts' webhook URLs."""

    secret_key_env: EnvName = Field(
        default=None,
        examples=["GATEWAY_SECRET_KEY"],
        description="Signing secrets are kept encrypted (AES-256-GCM) under this key: the name"
        " of an environment variable holding base64 of 32 random bytes (openssl rand -base64"
        " 32). Unset with SQLite, a key file is made beside the database"
        " (gateway.db-secret.key, 0600); a PostgreSQL fleet must set it, the same on every"
        " instance.",
    )
    rotation_overlap_seconds: float = Field(
        default=86400.0,
        strict=True,
        ge=0,
        allow_inf_nan=False,
        description="After a rotation the old signing secret keeps signing (beside the new"
        " one) this long.",
    )
    allow_http_hosts: Annotated[
        tuple[str, ...],
        PlainValidator(_http_hosts),
        WithJsonSchema({"type": "array", "items": {"type": "string", "minLength": 1}}),
        Expect("a list of host names"),
    ] = Field(
        default=(),
        description="Webhook URLs must be https:// and reach public addresses only; plain http"
        " is allowed to these hosts.",
    )
    allow_networks: Networks = Field(
        default=(),
        description="Private or loopback networks (IPs or CIDRs) a webhook may reach, for"
        " receivers on your network.",
    )
    timeout: float = _positive(10.0, "Seconds for one delivery attempt.")
    retry_schedule: Annotated[
        tuple[float, ...],
        PlainValidator(_retry_schedule),
        WithJsonSchema(
            {
                "type": "array",
                "maxItems": 50,
                "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 7 * 86400},
            }
        ),
        Expect("a list of positive numbers (seconds)"),
    ] = Field(
        default=RETRY_SCHEDULE,
        description="Seconds to wait between delivery attempts; after the last the delivery"
        " is `failed`.",
    )
    expiry_warning_days: Annotated[float, Expect("a number of days from 0 to 3650", hint="")] = (
        Field(
            default=7.0,
            strict=True,
            ge=0,
            le=3650,
            description="key.expiring is raised once this many days before a key's expires_at"
            " (0: no warning), and key.expired once it has passed.",
        )
    )


# What the data plane answers itself: /v1/auth, /api/v1/access-keys/...
_OWN_DATA_PLANE_PATHS = ("/v1/auth", "/api/v1/access-keys")
_PORTAL_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def _portal_path(v: Any) -> str:
    if not isinstance(v, str) or not _PORTAL_PATH.fullmatch(v):
        raise invalid(' like "/portal" (segments of letters, digits, ._~-; no trailing /)')
    if any(seg in (".", "..") for seg in v.split("/")):
        raise ValueError(f"{v!r} has a dot segment")
    for own in _OWN_DATA_PLANE_PATHS:
        # The portal answers its path and everything under it, before anything else: it
        # must neither be one of these, nor contain one, nor lie under one.
        if v == own or own.startswith(v + "/") or v.startswith(own + "/"):
            raise ValueError(f"{v!r} is taken by the gateway's own endpoints ({own})")
    return v


def _public_url(v: Any) -> str:
    if not isinstance(v, str):
        raise invalid()
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must not carry credentials, a query or a fragment")
    return v.rstrip("/")


@dataclass(frozen=True, slots=True, kw_only=True, config=_SECTION)
class PortalSettings:
    """The customer portal on the data plane: an account's own people
    see its API Keys page. The operator's backend asks POST
    /admin/v1/accounts/{id}/portal-sessions for a one-time link and hands it to a signed-in
    customer (as with Stripe's customer-portal sessions)."""

    enabled: bool = Field(default=False, strict=True, description="Serve the portal.")
    path: Annotated[
        str,
        PlainValidator(_portal_path),
        WithJsonSchema({"type": "string", "pattern": f"^{_PORTAL_PATH.pattern}$"}),
        Expect("a path"),
    ] = Field(
        default="/portal",
        description="Where the data plane serves it (this path and everything under it; no key"
        " needed there). It must not overlap /v1/auth or /api/v1/access-keys.",
    )
    public_url: Annotated[
        str | None,
        PlainValidator(_optional(_public_url)),
        _URL_SCHEMA,
        Expect("a URL"),
    ] = Field(
        default=None,
        examples=["https://api.example.com"],
        description='How browsers reach the data plane, e.g. "https://api.example.com"; links'
        " are made under it. Required when enabled. With https the session cookie is marked"
        " Secure.",
    )
    link_ttl_seconds: int = _count(
        300, "A link works once, within this many seconds of being made.", ge=1, le=86400
    )
    session_idle_seconds: int = _count(
        1800, "A portal session ends after this many seconds without a request.", ge=1, le=604800
    )

    @model_validator(mode="after")
    def _reachable(self) -> PortalSettings:
        if self.enabled and self.public_url is None:
            raise placed("public_url", "is required when portal.enabled = true")
        return self


# -- routes --------------------------------------------------------------------------------

_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.~-]{1,64}")


def _pattern(v: Any) -> str:
    if not isinstance(v, str):
        raise invalid()
    try:
        compile_pattern(v)
    except PatternError as exc:
        raise ValueError(f"{v!r} {exc}") from None
    return v


def _methods(v: Any) -> frozenset[str] | None:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise invalid(" (non-empty)")
    bad = [m for m in v if not _METHOD.fullmatch(m)]
    if bad:
        raise ValueError(f'{bad[0]!r} is not an HTTP method (upper case, e.g. "GET")')
    # Upstream frameworks answer HEAD with their GET handler: guard it like GET.
    return frozenset(v) | ({"HEAD"} if "GET" in v else set())


def _string_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise invalid()
    return tuple(v)


def _param(v: Any) -> str:
    if not isinstance(v, str) or not _PARAM_NAME.fullmatch(v):
        raise invalid(" (a query parameter name)")
    return v


@dataclass(frozen=True, slots=True, kw_only=True, config=_SECTION)
class RouteSettings:
    """One `[[routes]]` table. Routes are matched in order on method and normalised path, first
    match wins; with no match any valid key may pass. Patterns: literal segments, {name} (one
    segment), and a final /* (the prefix itself and anything under it). {tool_pack_id} and
    {registered_user_id} segments must be in the key's lists (404 otherwise)."""

    path: Annotated[
        str, PlainValidator(_pattern), WithJsonSchema({"type": "string"}), Expect("a path pattern")
    ] = Field(
        examples=["/mcp/*"],
        description='The path pattern, e.g. "/mcp/*" or "/users/{registered_user_id}/*".',
    )
    methods: Annotated[
        frozenset[str] | None,
        PlainValidator(_methods),
        WithJsonSchema(
            {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "pattern": f"^{_METHOD.pattern}$"},
            }
        ),
        Expect("a list of HTTP methods"),
    ] = Field(
        default=None,
        examples=[["GET", "POST"]],
        description="The methods the route covers (GET covers HEAD too); unset: every method.",
    )
    scopes: Annotated[
        tuple[str, ...],
        PlainValidator(_string_list),
        WithJsonSchema({"type": "array", "items": {"type": "string"}}),
        Expect("a list of strings"),
    ] = Field(
        default=(),
        examples=[["runtime:all"]],
        description="The key needs at least one of these (403 otherwise); each must be in"
        " keys.scopes.",
    )
    public: bool = Field(
        default=False,
        strict=True,
        examples=[True],
        description="No key needed (an Authorization header is still stripped).",
    )
    callback_param: Annotated[
        str | None,
        PlainValidator(_param),
        WithJsonSchema({"type": "string", "pattern": f"^{_PARAM_NAME.pattern}$"}),
        Expect("a string"),
    ] = Field(
        default=None,
        examples=["redirect_uri"],
        description="That query parameter's URL must be on the account's callback-origin"
        " allow-list (403 otherwise).",
    )

    @model_validator(mode="after")
    def _public_alone(self) -> RouteSettings:
        if self.public and self.scopes:
            raise placed("public", "a public route cannot also require scopes")
        if self.public and self.callback_param:
            raise placed(
                "public", "a public route has no account to check callback origins against"
            )
        return self


_ROUTE = TypeAdapter(RouteSettings)


def _routes(v: Any) -> tuple[Route, ...]:
    if not isinstance(v, list | tuple):
        raise placed("", "must be an array of tables ([[routes]])")
    out = []
    for i, item in enumerate(v):
        if isinstance(item, Route):
            out.append(item)
            continue
        try:
            spec = _ROUTE.validate_python(item)
        except ValidationError as exc:
            key, message = explain(exc.errors()[0], RouteSettings)
            raise placed(f"[{i}]" + (f".{key}" if key else ""), message) from None
        segments, names, tail = compile_pattern(spec.path)
        out.append(
            Route(
                index=i,
                path=spec.path,
                methods=spec.methods,
                scopes=spec.scopes,
                public=spec.public,
                callback_param=spec.callback_param,
                segments=segments,
                params=names,
                tail=tail,
            )
        )
    return tuple(out)


# -- the file ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True, config=_SECTION)
class Settings:
    """The gateway's configuration file. Only upstream.url and an admin token (admin.token_env
    or admin.token_sha256) are required; durations are in seconds."""

    # In the order of config.example.toml, which the schema and the reference page follow.
    server: ServerSettings = Field(default_factory=ServerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    upstream: UpstreamSettings = Field()
    admin: AdminSettings = Field(default_factory=AdminSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    portal: PortalSettings = Field(default_factory=PortalSettings)
    routes: Annotated[
        tuple[Route, ...],
        PlainValidator(_routes),
        WithJsonSchema({"type": "array", "items": {"type": "object"}}),  # see json_schema()
    ] = Field(
        default=(),
        examples=[
            [
                {"path": "/mcp/*", "methods": ["POST", "GET"], "scopes": ["runtime:all"]},
                {"path": "/registered-users/{registered_user_id}/*"},
                {"path": "/oauth/authorize", "callback_param": "redirect_uri"},
                {"path": "/status", "public": True},
            ]
        ],
        description="The route table: one [[routes]] table per route, in order.",
    )
    # Not a key of the file (parse_settings refuses it there): the file's name, for messages.
    source: SkipJsonSchema[str] = "<settings>"

    @model_validator(mode="after")
    def _route_scopes_are_known(self) -> Settings:
        for route in self.routes:
            unknown = [x for x in route.scopes if x not in self.keys.scopes]
            if unknown:
                raise placed(
                    f"routes[{route.index}].scopes",
                    f"unknown scope {unknown[0]!r} (not in keys.scopes)",
                )
        return self


_SETTINGS = TypeAdapter(Settings)
_FILE_KEYS = frozenset(f.name for f in dataclass_fields(Settings)) - {"source"}


def parse_settings(data: Mapping[str, Any], source: str) -> Settings:
    """Validate a decoded TOML document into Settings or raise ConfigError."""
    for key in data:  # first, as a misspelt section name explains the errors that follow
        if key not in _FILE_KEYS:
            raise ConfigError(source, key, "unknown key")
    try:
        return _SETTINGS.validate_python({**data, "source": source})
    except ValidationError as exc:
        key, message = explain(exc.errors()[0], Settings)
        raise ConfigError(source, key or None, message) from None


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


# -- the JSON Schema of the file ---------------------------------------------------------------

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the TOML file, for editors (taplo) and the configuration reference."""
    schema = _SETTINGS.json_schema(mode="validation")
    schema["$defs"]["RouteSettings"] = _ROUTE.json_schema(mode="validation")
    schema["properties"]["routes"]["items"] = {"$ref": "#/$defs/RouteSettings"}
    schema["title"] = "keygate gateway configuration"
    return {"$schema": SCHEMA_DIALECT, **_for_toml(schema)}


def _for_toml(node: Any) -> Any:
    """TOML has no null: an optional key is absent, not `null`. Property titles only repeat the
    key's name."""
    if isinstance(node, list):
        return [_for_toml(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _for_toml(v) for k, v in node.items() if not (k == "default" and v is None)}
    if isinstance(out.get("description"), str):
        out["description"] = " ".join(out["description"].split())  # docstrings wrap lines
    for prop in (out.get("properties") or {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    return out
