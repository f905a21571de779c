"""Request and response bodies of the admin API, as pydantic models.

Requests are strict (no type coercion, unknown fields refused); the OpenAPI document is
generated from these same models, so what is documented is what is enforced.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gateway.timeutil import parse_rfc3339

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
# List entries travel comma-separated in X-Tool-Pack-Ids / X-Registered-User-Ids headers.
LIST_ITEM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"


LATEST = 253402300799 * 1_000_000  # 9999-12-31T23:59:59Z


def _rfc3339(value: str) -> str:
    try:
        at = parse_rfc3339(value)
    except ValueError:
        raise ValueError(
            "must be an RFC 3339 timestamp with a time zone, e.g. 2030-01-31T12:00:00Z"
        ) from None
    if at > LATEST:
        raise ValueError("must not be after 9999-12-31T23:59:59Z")
    return value


def _printable(value: str) -> str:
    # A name is shown in tables, terminals and pages: an escape sequence in it could erase or
    # forge lines on an operator's terminal. C0, DEL and C1 controls are refused (a newline too).
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (or bidirectional controls)")
    return value


# C0, DEL, C1; bidirectional overrides and isolates (they reorder what a terminal or a page
# shows); line and paragraph separators.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)

Rfc3339 = Annotated[str, AfterValidator(_rfc3339), Field(json_schema_extra={"format": "date-time"})]
ListItem = Annotated[str, Field(pattern=LIST_ITEM_PATTERN)]
Scope = Annotated[str, Field(min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_printable)]
Description = Annotated[str, Field(max_length=2000), AfterValidator(_printable)]
Label = Annotated[str, Field(max_length=255), AfterValidator(_printable)]
WebhookUrl = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_printable)]
EventType = Annotated[str, Field(pattern=r"^(\*|[a-z0-9][a-z0-9_.-]{0,99})$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -------------------------------------------------------------------------------


class AccountCreate(Body):
    name: Name
    id: str | None = Field(default=None, pattern=ID_PATTERN)
    provision_production_key: bool = True


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class AccountUpdate(Body):
    # Optional but never null: a PATCH leaves out what it does not change.
    name: Name = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]
    status: Literal["active", "deactivated"] = Field(
        default=None,  # type: ignore[arg-type]
        json_schema_extra=_no_default,
    )


class KeyCreate(Body):
    account_id: str = Field(min_length=1, max_length=128)
    name: Name | None = None
    description: Description | None = None
    scopes: list[Scope] | None = Field(default=None, max_length=100)
    tool_pack_ids: list[ListItem] | None = Field(default=None, max_length=1000)
    registered_user_ids: list[ListItem] | None = Field(default=None, max_length=1000)
    is_test: bool = False
    expires_at: Rfc3339 | None = None
    expires_in: int | None = Field(default=None, ge=60, le=100 * 365 * 86400)
    created_by: Label | None = None
    service_account_id: Label | None = None
    webhook_url: WebhookUrl | None = None
    webhook_events: list[EventType] | None = Field(default=None, max_length=50)
    webhook_enabled: bool | None = None


class ChildKeyCreate(Body):
    """Self-service (data plane) key creation: account and environment are the parent's."""

    name: Name | None = None
    description: Description | None = None
    scopes: list[Scope] | None = Field(default=None, max_length=100)
    tool_pack_ids: list[ListItem] | None = Field(default=None, max_length=1000)
    registered_user_ids: list[ListItem] | None = Field(default=None, max_length=1000)
    expires_at: Rfc3339 | None = None
    expires_in: int | None = Field(default=None, ge=60, le=100 * 365 * 86400)
    service_account_id: Label | None = None
    webhook_url: WebhookUrl | None = None
    webhook_events: list[EventType] | None = Field(default=None, max_length=50)
    webhook_enabled: bool | None = None


class KeyUpdate(Body):
    name: Name = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]
    description: Description | None = None  # null clears it
    webhook_url: WebhookUrl | None = None  # null removes the endpoint
    webhook_events: list[EventType] = Field(
        default=None,  # type: ignore[arg-type]
        max_length=50,
        json_schema_extra=_no_default,
    )
    webhook_enabled: bool = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]


class OriginCreate(Body):
    origin: str = Field(min_length=1, max_length=300)


# -- responses ------------------------------------------------------------------------------


class KeyOut(Out):
    id: str
    account_id: str
    name: str
    description: str | None
    key: str | None = Field(
        default=None, description="Plaintext; only in create/regenerate answers"
    )
    key_prefix: str
    key_masked: str
    scopes: list[str]
    tool_pack_ids: list[str] | None
    registered_user_ids: list[str] | None
    is_test: bool
    environment: Literal["production", "test"]
    status: Literal["active", "revoked", "expired"]
    expires_at: str | None
    created_at: str
    created_by: str | None
    service_account_id: str | None
    parent_key_id: str | None
    last_used_at: str | None
    last_used_ip: str | None
    last_used_user_agent: str | None
    revoked_at: str | None
    signing_secret: str | None = Field(
        default=None, description="Plaintext signing secret; only in the answer that made it"
    )
    signing_secret_prefix: str | None = Field(
        description="whsec_ and 4 characters; null for a key made before signing secrets"
    )
    webhook_url: str | None
    webhook_events: list[str] | None
    webhook_enabled: bool


class KeyCreated(KeyOut):
    """A key object in the one answer that carries its plaintext (create, regenerate)."""

    key: str = Field(description="The plaintext key: shown once, never stored")
    signing_secret: str = Field(
        description="The plaintext signing secret (Standard Webhooks): shown once, stored only "
        "encrypted"
    )


class SigningSecretRotated(KeyOut):
    """The key object with its new signing secret, shown once."""

    signing_secret: str = Field(description="The new plaintext signing secret: shown once")


class AccountOut(Out):
    id: str
    name: str
    status: Literal["active", "deactivated"]
    created_at: str
    updated_at: str
    production_key: KeyCreated | None = Field(
        default=None, description="Only in the create answer, when a key was provisioned"
    )


class ProblemOut(Out):
    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str
    errors: list[dict[str, str]] | None = None


class Health(Out):
    status: Literal["ok"]


class OriginOut(Out):
    origin: str
    created_at: str


class AuditOut(Out):
    id: str
    at: str
    action: str
    actor: str
    account_id: str | None
    key_id: str | None
    environment: Literal["production", "test"]
    ip: str | None
    request_id: str | None
    details: dict[str, Any]


class KeyList(Out):
    data: list[KeyOut]
    next_cursor: str | None


class AccountList(Out):
    data: list[AccountOut]
    next_cursor: str | None


class OriginList(Out):
    data: list[OriginOut]
    next_cursor: str | None


class AuditList(Out):
    data: list[AuditOut]
    next_cursor: str | None


class AttemptOut(Out):
    at: str
    status_code: int | None = Field(description="The receiver's status, if it answered")
    error: str | None = Field(description="Why there was no answer (refused, timeout, ...)")
    duration_ms: float


class DeliveryOut(Out):
    id: str = Field(description="The webhook-id, the same on every attempt")
    event_id: str | None = Field(description="The event delivered (one event, a delivery per key)")
    key_id: str
    account_id: str
    environment: Literal["production", "test"]
    event_type: str
    url: str
    status: Literal["pending", "succeeded", "failed"]
    created_at: str
    next_attempt_at: str | None
    attempts: list[AttemptOut]


class EventCreate(Body):
    type: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$",
        description="The event's type, e.g. order.paid (key.* is the gateway's own)",
    )
    account_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="Every key of this account"
    )
    key_id: str | None = Field(default=None, min_length=1, max_length=128, description="One key")
    environment: Literal["production", "test"] | None = Field(
        default=None,
        description="With account_id: which of its worlds hears it (default production)",
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="The event's own fields (at most 64 KiB as JSON; account_id, key_id and"
        " environment are set by the gateway)",
    )


class EventAccepted(Out):
    id: str = Field(description="The event's id (evt_...)")
    deliveries: int = Field(description="Deliveries queued: keys listening for it")


class DeliveryList(Out):
    data: list[DeliveryOut]
    next_cursor: str | None


class PortalSessionOut(Out):
    """A one-time link into the customer portal, where the account's own people manage its API
    keys. Hand it to a signed-in user of that account; the first visit uses it up."""

    url: str = Field(description="Open once, within link_ttl_seconds; the token is after the #")
    expires_at: str = Field(description="When the unused link stops working (RFC 3339)")
