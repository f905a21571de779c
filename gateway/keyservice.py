"""Minting keys: turn validated inputs into a plaintext secret and the `NewKey` the store keeps.

Shared by the admin API and the data plane's self-service endpoints, so both produce keys the
same way. Stdlib and `gateway.keys` only.
"""

from __future__ import annotations

import uuid

from gateway import keys
from gateway.errors import ValidationError
from gateway.store.records import NewKey
from gateway.timeutil import parse_rfc3339

DAY_US = 86_400 * 1_000_000


def default_expiry(now_us: int, ttl_days: int) -> int | None:
    """`keys.default_ttl_days` from now; 0 days means keys never expire by default."""
    return None if ttl_days == 0 else now_us + ttl_days * DAY_US


def resolve_expiry(
    expires_at: str | None, expires_in: int | None, sent: set[str], now_us: int, default: int | None
) -> int | None:
    """expires_in (seconds from now) or expires_at (RFC 3339, null = never), never both;
    neither: `default`."""
    if expires_in is None:
        sent = sent - {"expires_in"}  # an explicit null is the same as leaving it out
    if "expires_at" in sent and "expires_in" in sent:
        raise ValidationError(
            [{"field": "expires_in", "message": "give expires_at or expires_in, not both"}]
        )
    if expires_in is not None:
        return now_us + expires_in * 1_000_000
    if "expires_at" in sent:
        if expires_at is None:
            return None  # explicitly never
        at = parse_rfc3339(expires_at)
        if at <= now_us:
            raise ValidationError([{"field": "expires_at", "message": "must be in the future"}])
        return at
    return default


def default_name(key_id: str, is_test: bool) -> str:
    return f"{'test' if is_test else 'production'}-key-{key_id[:8]}"


def mint(
    *,
    prefix: str,
    account_id: str,
    is_test: bool,
    scopes: tuple[str, ...],
    expires_at: int | None,
    now_us: int,
    name: str | None = None,
    description: str | None = None,
    tool_pack_ids: tuple[str, ...] | None = None,
    registered_user_ids: tuple[str, ...] | None = None,
    created_by: str | None = None,
    service_account_id: str | None = None,
    parent_key_id: str | None = None,
    key_id: str | None = None,
) -> tuple[str, NewKey]:
    """A fresh secret and its storable form. The plaintext must go only to the caller."""
    key_id = key_id or str(uuid.uuid4())
    secret = keys.generate_key(prefix, is_test)
    record = NewKey(
        id=key_id,
        account_id=account_id,
        name=name or default_name(key_id, is_test),
        description=description,
        key_hash=keys.hash_key(secret),
        key_prefix=keys.key_prefix(secret, prefix),
        key_last4=keys.key_last(secret),
        scopes=scopes,
        tool_pack_ids=tool_pack_ids,
        registered_user_ids=registered_user_ids,
        is_test=is_test,
        expires_at=expires_at,
        created_at=now_us,
        created_by=created_by,
        service_account_id=service_account_id,
        parent_key_id=parent_key_id,
    )
    return secret, record


def new_secret(prefix: str, is_test: bool) -> tuple[str, bytes, str, str]:
    """For regeneration: (plaintext, hash, key_prefix, last4) of a fresh secret."""
    secret = keys.generate_key(prefix, is_test)
    return secret, keys.hash_key(secret), keys.key_prefix(secret, prefix), keys.key_last(secret)
