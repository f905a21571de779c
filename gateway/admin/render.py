"""Records -> response bodies (validated by the same models the OpenAPI document shows)."""

from __future__ import annotations

from typing import Any

from gateway.admin.schemas import (
    AccountOut,
    AuditOut,
    KeyCreated,
    KeyOut,
    OriginOut,
    SigningSecretRotated,
)
from gateway.keys import mask
from gateway.store.records import Account, AuditEntry, KeyRecord
from gateway.timeutil import to_rfc3339


def key_out(
    record: KeyRecord,
    now_us: int,
    plaintext: str | None = None,
    signing_secret: str | None = None,
) -> dict[str, Any]:
    model: type[KeyOut] = KeyOut
    if plaintext is not None:
        model = KeyCreated
    elif signing_secret is not None:
        model = SigningSecretRotated
    exclude = {
        name
        for name, value in (("key", plaintext), ("signing_secret", signing_secret))
        if value is None
    }
    return model(
        id=record.id,
        account_id=record.account_id,
        name=record.name,
        description=record.description,
        key=plaintext,
        key_prefix=record.key_prefix,
        key_masked=mask(record.key_prefix, record.key_last4),
        scopes=list(record.scopes),
        tool_pack_ids=None if record.tool_pack_ids is None else list(record.tool_pack_ids),
        registered_user_ids=(
            None if record.registered_user_ids is None else list(record.registered_user_ids)
        ),
        is_test=record.is_test,
        environment="test" if record.is_test else "production",
        status=record.status(now_us),  # type: ignore[arg-type]
        expires_at=to_rfc3339(record.expires_at),
        created_at=to_rfc3339(record.created_at) or "",
        created_by=record.created_by,
        service_account_id=record.service_account_id,
        parent_key_id=record.parent_key_id,
        last_used_at=to_rfc3339(record.last_used_at),
        last_used_ip=record.last_used_ip,
        last_used_user_agent=record.last_used_user_agent,
        revoked_at=to_rfc3339(record.revoked_at),
        signing_secret=signing_secret,
        signing_secret_prefix=record.signing_secret_prefix,
        webhook_url=record.webhook_url,
        webhook_events=None if record.webhook_events is None else list(record.webhook_events),
        webhook_enabled=record.webhook_enabled,
    ).model_dump(mode="json", exclude=exclude or None)


def account_out(account: Account, production_key: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = AccountOut(
        id=account.id,
        name=account.name,
        status=account.status,  # type: ignore[arg-type]
        created_at=to_rfc3339(account.created_at) or "",
        updated_at=to_rfc3339(account.updated_at) or "",
    ).model_dump(mode="json", exclude={"production_key"})
    if production_key is not None:
        doc["production_key"] = production_key
    return doc


def origin_out(origin: str, created_at: int) -> dict[str, Any]:
    return OriginOut(origin=origin, created_at=to_rfc3339(created_at) or "").model_dump(mode="json")


def audit_out(entry: AuditEntry) -> dict[str, Any]:
    return AuditOut(
        id=entry.id,
        at=to_rfc3339(entry.at) or "",
        action=entry.action,
        actor=entry.actor,
        account_id=entry.account_id,
        key_id=entry.key_id,
        environment=entry.environment,  # type: ignore[arg-type]
        ip=entry.ip,
        request_id=entry.request_id,
        details=entry.details,
    ).model_dump(mode="json")
