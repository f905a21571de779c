"""The compact in-memory key index: lookups, patches from change sets, row reuse."""

from __future__ import annotations

import hashlib
import uuid

import orjson

from gateway.index import NEVER, KeyIndex
from gateway.store.records import ChangeSet, KeyRow


def row(
    key_id: str,
    digest: bytes,
    account: str = "a1",
    *,
    revoked: bool = False,
    test: bool = False,
    expires_us: int | None = None,
    scopes: list[str] | None = None,
    tools: list[str] | None = None,
) -> KeyRow:
    return (
        key_id,
        account,
        digest,
        orjson.dumps(scopes or ["runtime:all"]).decode(),
        None if tools is None else orjson.dumps(tools).decode(),
        None,
        int(test),
        expires_us,
        int(revoked),
    )


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def loaded(rows: list[KeyRow]) -> KeyIndex:
    index = KeyIndex()
    index.begin_load([("a1", True), ("a2", False)], {"a1": frozenset({"app.example.com"})})
    index.add_keys(rows)
    index.end_load(7)
    return index


def test_lookup_returns_the_principal_with_every_field() -> None:
    k = str(uuid.uuid4())
    index = loaded([row(k, digest(1), tools=["tp1"], expires_us=2_000_000_000_000_000, test=True)])
    entry = index.lookup(digest(1))
    assert entry is not None
    assert entry.id == k and entry.account.id == "a1" and entry.account.active
    assert entry.is_test and entry.scopes == ("runtime:all",) and entry.tool_pack_ids == ("tp1",)
    assert entry.registered_user_ids is None and entry.expires_at == 2_000_000_000.0
    assert entry.account.origins == frozenset({"app.example.com"})
    assert index.lookup(digest(1)) is entry  # made once, then cached
    assert index.lookup(digest(2)) is None
    assert index.seq == 7 and len(index) == 1
    assert b"X-Key-Id: " + k.encode() in entry.identity_headers()


def test_regenerate_drops_the_old_digest_and_marks_held_entries_dead() -> None:
    k = str(uuid.uuid4())
    index = loaded([row(k, digest(1))])
    held = index.lookup(digest(1))
    assert held is not None and not held.revoked
    index.apply(
        ChangeSet(seq=8, keys={k: row(k, digest(2))}, old_hashes={k: {digest(1)}}, accounts={})
    )
    assert index.lookup(digest(1)) is None
    fresh = index.lookup(digest(2))
    assert fresh is not None and fresh.id == k and fresh is not held
    assert held.revoked
    assert index.seq == 8 and len(index) == 1


def test_delete_revoke_and_account_changes() -> None:
    k1, k2 = str(uuid.uuid4()), str(uuid.uuid4())
    index = loaded([row(k1, digest(1)), row(k2, digest(2), account="a2")])
    assert not index.lookup(digest(2)).account.active  # type: ignore[union-attr]
    index.apply(
        ChangeSet(
            seq=9,
            keys={k1: row(k1, digest(1), revoked=True)},
            old_hashes={k1: {digest(1)}},
            accounts={"a2": True},
            origins={"a1": frozenset()},
        )
    )
    assert index.lookup(digest(1)).revoked  # type: ignore[union-attr]
    assert index.lookup(digest(2)).account.active  # type: ignore[union-attr]
    assert index.accounts["a1"].origins == frozenset()
    index.apply(ChangeSet(seq=10, keys={k1: None}, old_hashes={k1: {digest(1)}}, accounts={}))
    assert index.lookup(digest(1)) is None and len(index) == 1


def test_freed_rows_are_reused_and_a_stale_old_hash_of_another_key_is_ignored() -> None:
    keys = [str(uuid.uuid4()) for _ in range(3)]
    index = loaded([row(k, digest(i)) for i, k in enumerate(keys)])
    index.apply(
        ChangeSet(seq=2, keys={keys[0]: None}, old_hashes={keys[0]: {digest(0)}}, accounts={})
    )
    new = str(uuid.uuid4())
    index.apply(
        ChangeSet(
            seq=3, keys={new: row(new, digest(9))}, old_hashes={new: {digest(1)}}, accounts={}
        )
    )
    assert index.stats()["rows"] == 3  # the freed row was reused
    assert index.lookup(digest(1)).id == keys[1]  # type: ignore[union-attr]  # not someone else's
    assert index.lookup(digest(9)).id == new  # type: ignore[union-attr]


def test_non_uuid_ids_and_never_expiring_keys() -> None:
    index = loaded([row("legacy-key-7", digest(1))])
    entry = index.lookup(digest(1))
    assert entry is not None and entry.id == "legacy-key-7" and entry.expires_at == NEVER
