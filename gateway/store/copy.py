"""`gateway store copy`: everything one store holds, into another that is empty.

The source is read in one read-only transaction (a consistent snapshot, while gateways keep
running on it), the target written in one transaction (all of it or nothing), then the rows
are counted on both sides. Key hashes, revoked state, last use, origins and the audit trail
(with its ids and order) arrive as they were; the change log starts afresh, after every position
a gateway already running on the target has seen (it loads the copy as a snapshot).
"""

from __future__ import annotations

from gateway.errors import StoreError
from gateway.store.sql import SqlStore

# In dependency order (accounts before what refers to them).
TABLES: tuple[tuple[str, str], ...] = (
    ("accounts", "id, name, status, created_at, updated_at"),
    (
        "api_keys",
        "id, account_id, name, description, key_hash, key_prefix, key_last4, scopes,"
        " tool_pack_ids, registered_user_ids, is_test, expires_at, created_at, updated_at,"
        " created_by, service_account_id, parent_key_id, last_used_at, last_used_ip,"
        " last_used_user_agent, revoked_at, signing_secret, signing_secret_prefix,"
        " previous_signing_secret, previous_signing_secret_until, webhook_url, webhook_events,"
        " webhook_enabled, expiry_notice",
    ),
    ("callback_origins", "account_id, origin, created_at"),
    (
        "audit_log",
        "seq, id, at, action, actor, account_id, key_id, environment, ip, request_id, details",
    ),
)
BATCH = 2000


class TargetNotEmpty(StoreError):
    pass


async def copy_store(source: SqlStore, target: SqlStore) -> dict[str, int]:
    """Copy every row; the number of rows per table (equal on both sides, checked)."""
    async with target._write(None) as tx:
        present = {t: int((await tx.one(f"SELECT count(*) FROM {t}"))[0]) for t, _ in TABLES}
        if any(present.values()):
            held = ", ".join(f"{n} {t}" for t, n in present.items() if n)
            raise TargetNotEmpty(f"the target store is not empty ({held}): copy into an empty one")
        copied: dict[str, int] = {}
        async with source._index_read() as r:
            for table, columns in TABLES:
                marks = ", ".join("?" * (columns.count(",") + 1))
                insert = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
                copied[table] = 0
                async for batch in r.batches(f"SELECT {columns} FROM {table}", BATCH):
                    await tx.executemany(insert, [tuple(row) for row in batch])
                    copied[table] += len(batch)
        for table, _ in TABLES:  # checked before the commit: all of it or nothing
            landed = int((await tx.one(f"SELECT count(*) FROM {table}"))[0])
            if landed != copied[table]:
                raise StoreError(
                    f"verification failed: {copied[table]} {table} read, {landed} written"
                )
        await target._imported(tx)
        # Gateways already running on the (empty) target must load the copy: the change log
        # is moved past everything they have, which makes their next catch-up a snapshot. The
        # log's own sequence takes the step (a position is never handed out twice), so the
        # changes made on the copy afterwards are numbered after it and reach them.
        await tx.execute(
            "INSERT INTO changes (entity, entity_id, key_hash, at) VALUES ('account', '', NULL, 0)"
        )
        (step,) = await tx.one("SELECT max(seq) FROM changes")
        await tx.execute("DELETE FROM changes WHERE seq = ?", (step,))
        await tx.execute(
            "UPDATE meta SET value = ? WHERE name = 'changes_pruned_through'", (int(step),)
        )
        tx.changed = True
    return copied
