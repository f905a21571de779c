"""What the rest of the gateway needs from a store. SQLite is the embedded default; other
stores (other `store.url` schemes) implement the same protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from gateway.store.records import (
    Account,
    Actor,
    AuditEntry,
    ChangeSet,
    Delivery,
    KeyRecord,
    NewKey,
    SigningSecret,
    SnapshotSink,
)

Page = tuple[list[KeyRecord], str | None]


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # data plane
    async def snapshot(self, sink: SnapshotSink) -> None: ...
    async def changes_since(self, seq: int) -> ChangeSet | None: ...
    async def latest_change(self) -> int: ...
    async def prune_changes(self, older_than_us: int) -> int: ...
    async def record_usage(
        self, rows: Sequence[tuple[str, int, str | None, str | None]]
    ) -> None: ...

    # accounts
    async def create_account(
        self, account: Account, key: NewKey | None, actor: Actor
    ) -> tuple[Account, KeyRecord | None]: ...
    async def get_account(self, account_id: str) -> Account | None: ...
    async def list_accounts(
        self, *, limit: int, cursor: str | None, status: str | None = None
    ) -> tuple[list[Account], str | None]: ...
    async def update_account(
        self, account_id: str, *, name: str | None, status: str | None, actor: Actor
    ) -> Account: ...

    # keys
    async def create_key(
        self, key: NewKey, actor: Actor, *, max_production_keys: int = 0
    ) -> KeyRecord: ...
    async def get_key(self, key_id: str) -> KeyRecord | None: ...
    async def list_keys(
        self,
        *,
        limit: int,
        cursor: str | None,
        account_id: str | None = None,
        is_test: bool | None = None,
        status: str | None = None,
    ) -> Page: ...
    async def update_key(self, key_id: str, changes: dict[str, Any], actor: Actor) -> KeyRecord: ...
    async def regenerate_key(
        self,
        key_id: str,
        key_hash: bytes,
        key_prefix: str,
        key_last4: str,
        actor: Actor,
        signing: SigningSecret | None = None,
    ) -> KeyRecord: ...
    async def rotate_signing_secret(
        self, key_id: str, signing: SigningSecret, actor: Actor
    ) -> KeyRecord: ...
    async def revoke_key(self, key_id: str, actor: Actor) -> KeyRecord: ...
    async def delete_key(self, key_id: str, actor: Actor) -> None: ...

    # callback origins
    async def list_origins(
        self, account_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[tuple[str, int]], str | None]: ...
    async def add_origin(self, account_id: str, origin: str, actor: Actor) -> tuple[str, int]: ...
    async def remove_origin(self, account_id: str, origin: str, actor: Actor) -> None: ...

    # webhook outbox
    async def list_deliveries(
        self,
        *,
        limit: int,
        cursor: str | None,
        key_id: str | None = None,
        account_id: str | None = None,
        status: str | None = None,
        event_id: str | None = None,
    ) -> tuple[list[Delivery], str | None]: ...
    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...
    async def publish_event(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        account_id: str | None,
        key_id: str | None,
        environment: str | None,
        actor: Actor,
    ) -> tuple[str, int]: ...
    async def retry_delivery(self, delivery_id: str, now: int) -> Delivery: ...

    # audit
    async def list_audit(
        self,
        *,
        limit: int,
        cursor: str | None,
        environment: str = "production",
        account_id: str | None = None,
        action: str | None = None,
        since_us: int | None = None,
    ) -> tuple[list[AuditEntry], str | None]: ...
