"""Plain records the store reads and writes (no I/O here).

Times are integer microseconds since the epoch (see `gateway.timeutil`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """Who asked for a change, recorded in its audit row."""

    actor: str  # "admin" or "key:<id>"
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


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthKey:
    id: str
    account_id: str
    key_hash: bytes
    key_prefix: str
    scopes: tuple[str, ...]
    tool_pack_ids: tuple[str, ...] | None
    registered_user_ids: tuple[str, ...] | None
    is_test: bool
    expires_at: int | None
    revoked: bool
    parent_key_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthAccount:
    id: str
    active: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Every key and account as of change `seq`."""

    seq: int
    keys: list[AuthKey]
    accounts: list[AuthAccount]
    origins: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeSet:
    """What changed after a given seq: current rows, or None where the entity is gone."""

    seq: int
    keys: dict[str, AuthKey | None]
    accounts: dict[str, AuthAccount | None]
    origins: dict[str, frozenset[str]] = field(default_factory=dict)
