"""Persistence: the `Store` protocol and its embedded SQLite implementation."""

from gateway.store.base import Store
from gateway.store.records import (
    Account,
    Actor,
    AuditEntry,
    ChangeSet,
    KeyRecord,
    KeyRow,
    NewKey,
    SnapshotSink,
)

__all__ = [
    "Account",
    "Actor",
    "AuditEntry",
    "ChangeSet",
    "KeyRecord",
    "KeyRow",
    "NewKey",
    "SnapshotSink",
    "Store",
]
