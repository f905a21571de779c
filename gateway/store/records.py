"""Plain records the store reads and writes (no I/O here).

Times are integer microseconds since the epoch (see `gateway.timeutil`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

ACTIVE = "active"
DEACTIVATED = "deactivated"
REVOKED = "revoked"
EXPIRED = "expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    id: str
    name: str
    status: str
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRecord:
    id: str
    account_id: str
    name: str
    description: str | None
    key_prefix: str
    key_last4: str
    scopes: tuple[str, ...]
    tool_pack_ids: tuple[str, ...] | None
    registered_user_ids: tuple[str, ...] | None
    is_test: bool
    expires_at: int | None
    created_at: int
    updated_at: int
    created_by: str | None
    service_account_id: str | None
    parent_key_id: str | None
    last_used_at: int | None
    last_used_ip: str | None
    last_used_user_agent: str | None
    revoked_at: int | None
    signing_secret_prefix: str | None = None  # None: a key from before signing secrets
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] | None = None
    webhook_enabled: bool = False

    def status(self, now_us: int) -> str:
        if self.revoked_at is not None:
            return REVOKED
        if self.expires_at is not None and self.expires_at <= now_us:
            return EXPIRED
        return ACTIVE


@dataclass(frozen=True, slots=True, kw_only=True)
class NewKey:
    """Everything needed to insert a key; the plaintext itself never reaches the store."""

    id: str
    account_id: str
    name: str
    description: str | None
    key_hash: bytes
    key_prefix: str
    key_last4: str
    scopes: tuple[str, ...]
    tool_pack_ids: tuple[str, ...] | None
    registered_user_ids: tuple[str, ...] | None
    is_test: bool
    expires_at: int | None
    created_at: int
    created_by: str | None = None
    service_account_id: str | None = None
    parent_key_id: str | None = None
    signing_secret: bytes | None = None  # sealed (gateway/signing.py), never the plaintext
    signing_secret_prefix: str | None = None
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] | None = None
    webhook_enabled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningSecret:
    """A new sealed signing secret for an existing key; the one it replaces keeps signing
    until `previous_until` (microseconds)."""

    sealed: bytes
    prefix: str
    previous_until: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One webhook delivery in the outbox: an event for one key's endpoint, and its attempts."""

    id: str  # the webhook-id, the same on every attempt
    key_id: str
    account_id: str
    environment: str
    event_type: str
    url: str
    body: str
    created_at: int
    status: str  # pending | succeeded | failed
    attempts: int
    next_attempt_at: int | None
    attempt_log: list[dict[str, Any]] = field(default_factory=list)
    event_id: str | None = None  # the event it carries (one event, a delivery per key)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookTarget:
    """A key's webhook as it stands now: sealed secrets (never plaintext), URL, switch."""

    sealed: bytes | None
    previous: bytes | None
    previous_until: int | None
    url: str | None
    enabled: bool

    def __repr__(self) -> str:  # nothing sealed in logs either
        return f"WebhookTarget(url={self.url!r}, enabled={self.enabled})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """Who asked for a change, recorded in its audit row."""

    actor: str  # "admin", "key:<id>", "admin:console" or "portal:<session id>"
    ip: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    id: str
    seq: int
    at: int
    action: str
    actor: str
    account_id: str | None
    key_id: str | None
    environment: str
    ip: str | None
    request_id: str | None
    details: dict[str, Any] = field(default_factory=dict)


# -- what the data plane's in-memory index is built from ------------------------------------

# A key's authentication columns, raw: (id, account_id, key_hash, scopes_json,
# tool_pack_ids_json, registered_user_ids_json, is_test, expires_at_us, revoked)
KeyRow = tuple[str, str, bytes, str, "str | None", "str | None", int, "int | None", int]


class SnapshotSink(Protocol):
    """Receives a full snapshot in pieces, so a million keys never sit in a list at once."""

    def begin_load(
        self, accounts: Iterable[tuple[str, bool]], origins: dict[str, frozenset[str]]
    ) -> None: ...
    def add_keys(self, rows: Iterable[KeyRow]) -> None: ...
    def end_load(self, seq: int) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeSet:
    """The current state of everything changed after a given seq (None: gone), plus the
    digests each changed key had before, so a regenerated or deleted secret can be dropped."""

    seq: int
    keys: dict[str, KeyRow | None]
    old_hashes: dict[str, set[bytes]]
    accounts: dict[str, bool | None]
    origins: dict[str, frozenset[str]] = field(default_factory=dict)
