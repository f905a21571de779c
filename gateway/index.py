"""The data plane's in-memory view of every key and account (pure: no I/O).

Built from a store snapshot at start-up and patched from change sets afterwards, so
authenticating a request is one dict lookup on the key's SHA-256 digest. Revoked and expired
keys stay in the index (so the log can say why they failed); deleted keys leave it.
"""

from __future__ import annotations

from gateway.store.records import AuthAccount, AuthKey, ChangeSet, Snapshot

NEVER = float("inf")
_MICROS = 1_000_000.0


class AccountState:
    """Shared by every key of the account, so deactivation is one flag flip."""

    __slots__ = ("active", "id", "origins")

    def __init__(self, account_id: str, active: bool) -> None:
        self.id = account_id
        self.active = active
        self.origins: frozenset[str] = frozenset()


class KeyEntry:
    """A key as the data plane sees it; also the request's principal once authenticated."""

    __slots__ = (
        "_identity",
        "account",
        "expires_at",
        "id",
        "is_test",
        "key_hash",
        "key_prefix",
        "parent_key_id",
        "registered_user_ids",
        "revoked",
        "scopes",
        "tool_pack_ids",
    )

    def __init__(self, key: AuthKey, account: AccountState) -> None:
        self.id = key.id
        self.account = account
        self.key_hash = key.key_hash
        self.key_prefix = key.key_prefix
        self.is_test = key.is_test
        self.expires_at = NEVER if key.expires_at is None else key.expires_at / _MICROS
        self.revoked = key.revoked
        self.scopes = key.scopes
        self.tool_pack_ids = key.tool_pack_ids
        self.registered_user_ids = key.registered_user_ids
        self.parent_key_id = key.parent_key_id
        self._identity: bytes | None = None

    @property
    def environment(self) -> str:
        return "test" if self.is_test else "production"

    def identity_headers(self) -> bytes:
        """The identity headers for the upstream, rendered once per key and cached."""
        block = self._identity
        if block is None:
            block = render_identity(self)
            self._identity = block
        return block


def _list_value(values: tuple[str, ...] | None) -> str:
    return "*" if values is None else ",".join(values)


def render_identity(entry: KeyEntry) -> bytes:
    lines = (
        ("X-Account-Id", entry.account.id),
        ("X-Key-Id", entry.id),
        ("X-Environment", entry.environment),
        ("X-Scopes", " ".join(entry.scopes)),
        ("X-Tool-Pack-Ids", _list_value(entry.tool_pack_ids)),
        ("X-Registered-User-Ids", _list_value(entry.registered_user_ids)),
    )
    return "".join(f"{name}: {value}\r\n" for name, value in lines).encode("utf-8")


class KeyIndex:
    __slots__ = ("accounts", "by_hash", "by_id", "seq")

    def __init__(self) -> None:
        self.by_hash: dict[bytes, KeyEntry] = {}
        self.by_id: dict[str, KeyEntry] = {}
        self.accounts: dict[str, AccountState] = {}
        self.seq = 0

    def __len__(self) -> int:
        return len(self.by_id)

    def load(self, snapshot: Snapshot) -> None:
        """Replace everything with the snapshot."""
        accounts = {a.id: AccountState(a.id, a.active) for a in snapshot.accounts}
        for account_id, origins in snapshot.origins.items():
            if account_id in accounts:
                accounts[account_id].origins = origins
        by_hash: dict[bytes, KeyEntry] = {}
        by_id: dict[str, KeyEntry] = {}
        for key in snapshot.keys:
            account = accounts.get(key.account_id)
            if account is None:  # cannot happen with foreign keys on; never authenticate it
                account = accounts[key.account_id] = AccountState(key.account_id, False)
            entry = KeyEntry(key, account)
            by_hash[entry.key_hash] = entry
            by_id[entry.id] = entry
        self.accounts, self.by_hash, self.by_id = accounts, by_hash, by_id
        self.seq = snapshot.seq

    def apply(self, changes: ChangeSet) -> None:
        """Patch the index with the current rows of everything that changed."""
        for account_id, account in changes.accounts.items():
            self._put_account(account_id, account)
        for account_id, origins in changes.origins.items():
            state = self.accounts.get(account_id)
            if state is not None:
                state.origins = origins
        for key_id, key in changes.keys.items():
            self._put_key(key_id, key)
        self.seq = max(self.seq, changes.seq)

    def _put_account(self, account_id: str, account: AuthAccount | None) -> None:
        state = self.accounts.get(account_id)
        active = account is not None and account.active
        if state is None:
            self.accounts[account_id] = AccountState(account_id, active)
        else:
            state.active = active

    def _put_key(self, key_id: str, key: AuthKey | None) -> None:
        old = self.by_id.pop(key_id, None)
        if old is not None:
            # Mark the old entry dead too: a request holding it must not slip through.
            old.revoked = True
            if self.by_hash.get(old.key_hash) is old:
                del self.by_hash[old.key_hash]
        if key is None:
            return
        account = self.accounts.get(key.account_id)
        if account is None:
            account = self.accounts[key.account_id] = AccountState(key.account_id, False)
        entry = KeyEntry(key, account)
        self.by_hash[entry.key_hash] = entry
        self.by_id[entry.id] = entry
