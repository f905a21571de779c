"""The data plane's in-memory view of every key and account (pure: no I/O).

Built from a store snapshot at start-up and patched from change sets afterwards, so
authenticating a request is one dict lookup on the key's SHA-256 digest. Revoked and expired
keys stay in the index (so the log can say why they failed); deleted keys leave it.

Layout: a million keys must fit in a worker's memory, so keys are not Python objects each.
The digest maps to a row number; rows are columns in compact arrays (16-byte id, account,
expiry, flags, interned scope and list tuples), about 170 bytes a key in all. A `KeyEntry`
(the principal the rest of the data plane sees) is made for a row the first time it
authenticates and kept until that key changes.
"""

from __future__ import annotations

import uuid
from array import array
from collections.abc import Iterable
from typing import Any

from gateway.store.records import ChangeSet, KeyRow

NEVER = float("inf")
_MICROS = 1_000_000.0


_LIVE = 1
_REVOKED = 2
_TEST = 4


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
        "registered_user_ids",
        "revoked",
        "scopes",
        "tool_pack_ids",
    )

    def __init__(
        self,
        key_id: str,
        account: AccountState,
        *,
        is_test: bool,
        expires_at: float,
        revoked: bool,
        scopes: tuple[str, ...],
        tool_pack_ids: tuple[str, ...] | None,
        registered_user_ids: tuple[str, ...] | None,
    ) -> None:
        self.id = key_id
        self.account = account
        self.is_test = is_test
        self.expires_at = expires_at  # seconds since the epoch; NEVER when it does not expire
        self.revoked = revoked
        self.scopes = scopes
        self.tool_pack_ids = tool_pack_ids
        self.registered_user_ids = registered_user_ids
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


def _decode_list(text: str) -> tuple[str, ...]:
    import orjson

    value = orjson.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not a JSON list of strings: {text[:80]!r}")
    return tuple(value)


class KeyIndex:
    __slots__ = (
        "_account",
        "_account_list",
        "_account_pos",
        "_entries",
        "_expires",
        "_flags",
        "_free",
        "_ids",
        "_odd_ids",
        "_rows",
        "_scopes",
        "_tools",
        "_tuple_of_json",
        "_tuples",
        "_users",
        "accounts",
        "seq",
    )

    def __init__(self) -> None:
        self.seq = 0
        self.accounts: dict[str, AccountState] = {}
        self._reset()

    def _reset(self) -> None:
        self._rows: dict[bytes, int] = {}
        self._free: list[int] = []
        self._ids = bytearray()
        self._odd_ids: dict[int, str] = {}  # ids that are not UUIDs (never minted by us)
        self._account = array("i")
        self._account_list: list[AccountState] = []
        self._account_pos: dict[str, int] = {}
        self._expires = array("d")
        self._flags = bytearray()
        self._scopes = array("i")
        self._tools = array("i")
        self._users = array("i")
        self._tuples: list[tuple[str, ...] | None] = [None]  # 0 = None (unrestricted)
        self._tuple_of_json: dict[str, int] = {}
        self._entries: dict[int, KeyEntry] = {}

    def __len__(self) -> int:
        return len(self._rows)

    # -- the hot path --------------------------------------------------------------------

    def lookup(self, digest: bytes) -> KeyEntry | None:
        row = self._rows.get(digest)
        if row is None:
            return None
        entry = self._entries.get(row)
        return entry if entry is not None else self._materialise(row)

    def _materialise(self, row: int) -> KeyEntry:
        flags = self._flags[row]
        odd = self._odd_ids.get(row)
        key_id = (
            odd
            if odd is not None
            else str(uuid.UUID(bytes=bytes(self._ids[row * 16 : row * 16 + 16])))
        )
        entry = KeyEntry(
            key_id,
            self._account_list[self._account[row]],
            is_test=bool(flags & _TEST),
            expires_at=self._expires[row],
            revoked=bool(flags & _REVOKED),
            scopes=self._tuples[self._scopes[row]] or (),
            tool_pack_ids=self._tuples[self._tools[row]],
            registered_user_ids=self._tuples[self._users[row]],
        )
        self._entries[row] = entry
        return entry

    # -- building ------------------------------------------------------------------------

    def _intern(self, text: str | None) -> int:
        if text is None:
            return 0
        pos = self._tuple_of_json.get(text)
        if pos is None:
            pos = len(self._tuples)
            self._tuples.append(_decode_list(text))
            self._tuple_of_json[text] = pos
        return pos

    def _account_index(self, account_id: str) -> int:
        pos = self._account_pos.get(account_id)
        if pos is None:
            state = self.accounts.get(account_id)
            if state is None:  # cannot happen with foreign keys on; never authenticate it
                state = self.accounts[account_id] = AccountState(account_id, False)
            pos = len(self._account_list)
            self._account_list.append(state)
            self._account_pos[account_id] = pos
        return pos

    def _put(self, key: KeyRow) -> None:
        key_id, account_id, digest, scopes, tools, users, is_test, expires_us, revoked = key
        try:
            id_bytes = uuid.UUID(key_id).bytes
            odd = None
        except ValueError:
            id_bytes, odd = bytes(16), key_id
        flags = _LIVE | (_TEST if is_test else 0) | (_REVOKED if revoked else 0)
        expires = NEVER if expires_us is None else expires_us / _MICROS
        if self._free:
            row = self._free.pop()
            self._ids[row * 16 : row * 16 + 16] = id_bytes
            self._account[row] = self._account_index(account_id)
            self._expires[row] = expires
            self._flags[row] = flags
            self._scopes[row] = self._intern(scopes)
            self._tools[row] = self._intern(tools)
            self._users[row] = self._intern(users)
        else:
            row = len(self._flags)
            self._ids += id_bytes
            self._account.append(self._account_index(account_id))
            self._expires.append(expires)
            self._flags.append(flags)
            self._scopes.append(self._intern(scopes))
            self._tools.append(self._intern(tools))
            self._users.append(self._intern(users))
        if odd is not None:
            self._odd_ids[row] = odd
        previous = self._rows.get(digest)
        if previous is not None:
            self._drop_row(previous)
        self._rows[digest] = row

    def _drop_row(self, row: int) -> None:
        self._flags[row] = 0
        self._odd_ids.pop(row, None)
        entry = self._entries.pop(row, None)
        if entry is not None:
            entry.revoked = True  # anyone still holding it must not slip through
        self._free.append(row)

    def _row_id(self, row: int) -> str:
        odd = self._odd_ids.get(row)
        return (
            odd
            if odd is not None
            else str(uuid.UUID(bytes=bytes(self._ids[row * 16 : row * 16 + 16])))
        )

    # -- loading and patching -------------------------------------------------------------

    def begin_load(
        self, accounts: Iterable[tuple[str, bool]], origins: dict[str, frozenset[str]]
    ) -> None:
        """Start replacing everything: accounts first, then `add_keys` batches."""
        self._reset()
        self.accounts = {a: AccountState(a, active) for a, active in accounts}
        for account_id, entries in origins.items():
            state = self.accounts.get(account_id)
            if state is not None:
                state.origins = entries

    def add_keys(self, rows: Iterable[KeyRow]) -> None:
        put = self._put
        for row in rows:
            put(row)

    def end_load(self, seq: int) -> None:
        self.seq = seq

    def apply(self, changes: ChangeSet) -> None:
        """Patch with the current state of everything that changed after `self.seq`."""
        for account_id, active in changes.accounts.items():
            state = self.accounts.get(account_id)
            if state is None:
                self.accounts[account_id] = AccountState(account_id, bool(active))
            else:
                state.active = bool(active)
        for account_id, entries in changes.origins.items():
            state = self.accounts.get(account_id)
            if state is not None:
                state.origins = entries
        for key_id, row in changes.keys.items():
            for digest in changes.old_hashes.get(key_id, ()):
                pos = self._rows.get(digest)
                if pos is not None and self._row_id(pos) == key_id:
                    del self._rows[digest]
                    self._drop_row(pos)
            if row is not None:
                self._put(row)
        self.seq = max(self.seq, changes.seq)

    def stats(self) -> dict[str, Any]:
        return {"keys": len(self._rows), "rows": len(self._flags), "principals": len(self._entries)}
