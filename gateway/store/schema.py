"""SQLite schema, versioned with `PRAGMA user_version`; migrations run in order at start-up.

Never edit a shipped migration: append a new one. Times are integer microseconds (UTC).
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the whole of contract section 5.
    """
    CREATE TABLE accounts (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('active', 'deactivated')),
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE INDEX accounts_by_created ON accounts (created_at DESC, id DESC);

    CREATE TABLE api_keys (
        id                   TEXT PRIMARY KEY,
        account_id           TEXT NOT NULL REFERENCES accounts (id),
        name                 TEXT NOT NULL,
        description          TEXT,
        key_hash             BLOB NOT NULL UNIQUE CHECK (length(key_hash) = 32),
        key_prefix           TEXT NOT NULL,
        key_last4            TEXT NOT NULL,
        scopes               TEXT NOT NULL,      -- JSON array
        tool_pack_ids        TEXT,               -- JSON array, NULL = unrestricted
        registered_user_ids  TEXT,               -- JSON array, NULL = unrestricted
        is_test              INTEGER NOT NULL CHECK (is_test IN (0, 1)),
        expires_at           INTEGER,            -- NULL = never
        created_at           INTEGER NOT NULL,
        updated_at           INTEGER NOT NULL,
        created_by           TEXT,
        service_account_id   TEXT,
        parent_key_id        TEXT,
        last_used_at         INTEGER,
        last_used_ip         TEXT,
        last_used_user_agent TEXT,
        revoked_at           INTEGER
    );
    CREATE INDEX api_keys_by_account ON api_keys (account_id, is_test, created_at DESC, id DESC);
    CREATE INDEX api_keys_by_created ON api_keys (created_at DESC, id DESC);
    CREATE INDEX api_keys_by_parent ON api_keys (parent_key_id) WHERE parent_key_id IS NOT NULL;

    CREATE TABLE callback_origins (
        account_id  TEXT NOT NULL REFERENCES accounts (id),
        origin      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (account_id, origin)
    );

    CREATE TABLE audit_log (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,
        at           INTEGER NOT NULL,
        action       TEXT NOT NULL,
        actor        TEXT NOT NULL,
        account_id   TEXT,
        key_id       TEXT,
        environment  TEXT NOT NULL CHECK (environment IN ('production', 'test')),
        ip           TEXT,
        request_id   TEXT,
        details      TEXT NOT NULL               -- JSON object, never a secret
    );
    CREATE INDEX audit_by_env ON audit_log (environment, seq DESC);
    CREATE INDEX audit_by_account ON audit_log (account_id, environment, seq DESC);

    -- What the data plane's in-memory index must re-read: one row per changed entity.
    -- For keys, key_hash is the digest the key had before the change, so a worker can drop a
    -- regenerated or deleted secret without keeping an id -> digest map of every key.
    CREATE TABLE changes (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        entity     TEXT NOT NULL CHECK (entity IN ('key', 'account', 'origin')),
        entity_id  TEXT NOT NULL,
        key_hash   BLOB,
        at         INTEGER NOT NULL
    );

    CREATE TABLE meta (
        name   TEXT PRIMARY KEY,
        value  INTEGER NOT NULL
    );
    INSERT INTO meta (name, value) VALUES ('changes_pruned_through', 0);
    """,
    # 2: fleet presence (used by PostgreSQL fleets; kept here so both dialects number alike).
    """
    CREATE TABLE instances (
        id            TEXT PRIMARY KEY,
        host          TEXT NOT NULL,
        pid           INTEGER NOT NULL,
        started_at    INTEGER NOT NULL,
        heartbeat_at  INTEGER NOT NULL,
        applied_seq   INTEGER NOT NULL
    );
    """,
    # 3: signing secrets (AES-256-GCM ciphertext, see gateway/signing.py) and webhook settings.
    """
    ALTER TABLE api_keys ADD COLUMN signing_secret BLOB;
    ALTER TABLE api_keys ADD COLUMN signing_secret_prefix TEXT;
    ALTER TABLE api_keys ADD COLUMN previous_signing_secret BLOB;
    ALTER TABLE api_keys ADD COLUMN previous_signing_secret_until INTEGER;
    ALTER TABLE api_keys ADD COLUMN webhook_url TEXT;
    ALTER TABLE api_keys ADD COLUMN webhook_events TEXT;
    ALTER TABLE api_keys ADD COLUMN webhook_enabled INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: the webhook outbox. A delivery row is written in the same transaction as the change
    # that raised its event; attempts are claimed with a lease (claimed_until), so a process
    # that dies mid-attempt only delays it, and each attempt is made by one claimant.
    """
    CREATE TABLE webhook_deliveries (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,
        id               TEXT NOT NULL UNIQUE,
        key_id           TEXT NOT NULL,
        account_id       TEXT NOT NULL,
        environment      TEXT NOT NULL CHECK (environment IN ('production', 'test')),
        event_type       TEXT NOT NULL,
        url              TEXT NOT NULL,
        body             TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        status           TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  INTEGER,
        claimed_until    INTEGER,
        claim_token      TEXT,
        attempt_log      TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
    CREATE INDEX webhook_deliveries_by_key ON webhook_deliveries (key_id, seq DESC);
    """,
    # 5: expiry events (key.expiring once, then key.expired) and event ids. expiry_notice is
    # what has been raised for a key's expires_at: 0 nothing, 1 the warning, 2 the expiry. Keys
    # already expired when this runs get no belated news. Each partial index holds only keys
    # still owed a notice, so finding the next one due is one index probe.
    """
    ALTER TABLE api_keys ADD COLUMN expiry_notice INTEGER NOT NULL DEFAULT 0;
    UPDATE api_keys SET expiry_notice = 2
        WHERE expires_at <= CAST(strftime('%s', 'now') AS INTEGER) * 1000000;
    CREATE INDEX api_keys_expiry_warning ON api_keys (expires_at)
        WHERE expiry_notice = 0 AND expires_at IS NOT NULL;
    CREATE INDEX api_keys_expiry_notice ON api_keys (expires_at)
        WHERE expiry_notice < 2 AND expires_at IS NOT NULL;
    ALTER TABLE webhook_deliveries ADD COLUMN event_id TEXT;
    CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id)
        WHERE event_id IS NOT NULL;
    """,
    # 6: console and portal sessions, portal links (gateway/store/sessions.py). Only SHA-256
    # digests of the cookie values and link tokens are kept. Depends on no other migration.
    """
    CREATE TABLE ui_sessions (
        id            TEXT PRIMARY KEY,
        token_hash    BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
        kind          TEXT NOT NULL CHECK (kind IN ('console', 'portal')),
        account_id    TEXT,
        created_at    INTEGER NOT NULL,
        last_seen_at  INTEGER NOT NULL,
        idle_us       INTEGER NOT NULL
    );
    CREATE TABLE portal_links (
        token_hash  BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
        account_id  TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        used_at     INTEGER
    );
    """,
)


# PostgreSQL: the same tables, numbered the same way (the version lives in `schema_version`).
# Text keys compare bytewise (COLLATE "C"), as in SQLite, so cursors order identically.
PG_MIGRATIONS: tuple[str, ...] = (
    # 1: the whole of contract section 5.
    """
    CREATE TABLE accounts (
        id          TEXT COLLATE "C" PRIMARY KEY,
        name        TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('active', 'deactivated')),
        created_at  BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL
    );
    CREATE INDEX accounts_by_created ON accounts (created_at DESC, id DESC);

    CREATE TABLE api_keys (
        id                   TEXT COLLATE "C" PRIMARY KEY,
        account_id           TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
        name                 TEXT NOT NULL,
        description          TEXT,
        key_hash             BYTEA NOT NULL UNIQUE CHECK (length(key_hash) = 32),
        key_prefix           TEXT NOT NULL,
        key_last4            TEXT NOT NULL,
        scopes               TEXT NOT NULL,
        tool_pack_ids        TEXT,
        registered_user_ids  TEXT,
        is_test              INTEGER NOT NULL CHECK (is_test IN (0, 1)),
        expires_at           BIGINT,
        created_at           BIGINT NOT NULL,
        updated_at           BIGINT NOT NULL,
        created_by           TEXT,
        service_account_id   TEXT,
        parent_key_id        TEXT COLLATE "C",
        last_used_at         BIGINT,
        last_used_ip         TEXT,
        last_used_user_agent TEXT,
        revoked_at           BIGINT
    );
    CREATE INDEX api_keys_by_account ON api_keys (account_id, is_test, created_at DESC, id DESC);
    CREATE INDEX api_keys_by_created ON api_keys (created_at DESC, id DESC);
    CREATE INDEX api_keys_by_parent ON api_keys (parent_key_id) WHERE parent_key_id IS NOT NULL;

    CREATE TABLE callback_origins (
        account_id  TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
        origin      TEXT COLLATE "C" NOT NULL,
        created_at  BIGINT NOT NULL,
        PRIMARY KEY (account_id, origin)
    );

    CREATE TABLE audit_log (
        seq          BIGSERIAL PRIMARY KEY,
        id           TEXT NOT NULL UNIQUE,
        at           BIGINT NOT NULL,
        action       TEXT NOT NULL,
        actor        TEXT NOT NULL,
        account_id   TEXT COLLATE "C",
        key_id       TEXT COLLATE "C",
        environment  TEXT NOT NULL CHECK (environment IN ('production', 'test')),
        ip           TEXT,
        request_id   TEXT,
        details      TEXT NOT NULL
    );
    CREATE INDEX audit_by_env ON audit_log (environment, seq DESC);
    CREATE INDEX audit_by_account ON audit_log (account_id, environment, seq DESC);

    CREATE TABLE changes (
        seq        BIGSERIAL PRIMARY KEY,
        entity     TEXT NOT NULL CHECK (entity IN ('key', 'account', 'origin')),
        entity_id  TEXT COLLATE "C" NOT NULL,
        key_hash   BYTEA,
        at         BIGINT NOT NULL
    );

    CREATE TABLE meta (
        name   TEXT PRIMARY KEY,
        value  BIGINT NOT NULL
    );
    INSERT INTO meta (name, value) VALUES ('changes_pruned_through', 0);
    """,
    # 2: fleet presence. Every data plane (each worker of each instance) registers here and
    # says, with a heartbeat, which change-log position its index has applied.
    """
    CREATE TABLE instances (
        id            TEXT COLLATE "C" PRIMARY KEY,
        host          TEXT NOT NULL,
        pid           INTEGER NOT NULL,
        started_at    BIGINT NOT NULL,
        heartbeat_at  BIGINT NOT NULL,
        applied_seq   BIGINT NOT NULL
    );
    """,
    # 3: signing secrets and webhook settings, as in SQLite's migration 3.
    """
    ALTER TABLE api_keys ADD COLUMN signing_secret BYTEA;
    ALTER TABLE api_keys ADD COLUMN signing_secret_prefix TEXT;
    ALTER TABLE api_keys ADD COLUMN previous_signing_secret BYTEA;
    ALTER TABLE api_keys ADD COLUMN previous_signing_secret_until BIGINT;
    ALTER TABLE api_keys ADD COLUMN webhook_url TEXT;
    ALTER TABLE api_keys ADD COLUMN webhook_events TEXT;
    ALTER TABLE api_keys ADD COLUMN webhook_enabled INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: the webhook outbox. A delivery row is written in the same transaction as the change
    # that raised its event; attempts are claimed with a lease (claimed_until), so a process
    # that dies mid-attempt only delays it, and each attempt is made by one claimant.
    """
    CREATE TABLE webhook_deliveries (
        seq              BIGSERIAL PRIMARY KEY,
        id               TEXT NOT NULL UNIQUE,
        key_id           TEXT NOT NULL,
        account_id       TEXT NOT NULL,
        environment      TEXT NOT NULL CHECK (environment IN ('production', 'test')),
        event_type       TEXT NOT NULL,
        url              TEXT NOT NULL,
        body             TEXT NOT NULL,
        created_at       BIGINT NOT NULL,
        status           TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  BIGINT,
        claimed_until    BIGINT,
        claim_token      TEXT,
        attempt_log      TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
    CREATE INDEX webhook_deliveries_by_key ON webhook_deliveries (key_id, seq DESC);
    """,
    # 5: expiry events and event ids, as in SQLite's migration 5.
    """
    ALTER TABLE api_keys ADD COLUMN expiry_notice INTEGER NOT NULL DEFAULT 0;
    UPDATE api_keys SET expiry_notice = 2
        WHERE expires_at <= (extract(epoch FROM now()) * 1000000)::bigint;
    CREATE INDEX api_keys_expiry_warning ON api_keys (expires_at)
        WHERE expiry_notice = 0 AND expires_at IS NOT NULL;
    CREATE INDEX api_keys_expiry_notice ON api_keys (expires_at)
        WHERE expiry_notice < 2 AND expires_at IS NOT NULL;
    ALTER TABLE webhook_deliveries ADD COLUMN event_id TEXT;
    CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id)
        WHERE event_id IS NOT NULL;
    """,
    # 6: console and portal sessions, portal links as in SQLite's.
    """
    CREATE TABLE ui_sessions (
        id            TEXT COLLATE "C" PRIMARY KEY,
        token_hash    BYTEA NOT NULL UNIQUE CHECK (length(token_hash) = 32),
        kind          TEXT NOT NULL CHECK (kind IN ('console', 'portal')),
        account_id    TEXT,
        created_at    BIGINT NOT NULL,
        last_seen_at  BIGINT NOT NULL,
        idle_us       BIGINT NOT NULL
    );
    CREATE TABLE portal_links (
        token_hash  BYTEA PRIMARY KEY CHECK (length(token_hash) = 32),
        account_id  TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        expires_at  BIGINT NOT NULL,
        used_at     BIGINT
    );
    """,
)


# For each migration (1-based position), the oldest schema version whose gateway still runs
# correctly on a store after it: a migration that only adds (tables, columns with defaults,
# indexes) keeps the previous value, one that changes what older code reads or writes raises
# it to its own number. The store keeps the value of its newest migration (`meta`), so an
# older gateway restarted on a newer store can tell whether it may serve it.
COMPATIBLE_FROM: tuple[int, ...] = (1, 2, 3, 4, 4, 4)
assert len(COMPATIBLE_FROM) == len(MIGRATIONS) == len(PG_MIGRATIONS)
