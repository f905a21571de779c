"""Persistence: the `Store` protocol and its embedded SQLite implementation."""

from gateway.store.base import Store
from gateway.store.records import (
    Account,
    Actor,
    AuditEntry,
    AuthAccount,
    AuthKey,
    ChangeSet,
    KeyRecord,
    NewKey,
    Snapshot,
)

__all__ = [
    "Account",
    "Actor",
    "AuditEntry",
    "AuthAccount",
    "AuthKey",
    "ChangeSet",
    "KeyRecord",
    "NewKey",
    "Snapshot",
    "Store",
]
