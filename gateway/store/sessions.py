"""Console and portal sessions and the portal's one-time links, kept in the store so that every
worker and every instance of a fleet sees the same ones (a session made by one worker is good
on the next request, whichever worker takes it).

Only SHA-256 digests of the secrets (the cookie value, the link token) are stored; the
plaintext exists in the browser and in the one response that handed it out. A session also has
a public id, which is what the audit trail names (`portal:<id>`), never the secret.

A console session is also bound to the admin token it was opened with: its row holds an HMAC
of the cookie value keyed by a fingerprint of that token (`AdminToken.session_key`, itself an
HMAC keyed by the token's SHA-256 digest; neither the token nor its digest is stored). Looked
up under another admin token the row is simply not found, so changing the token ends every
console session, across restarts and on every instance of a fleet.

Every session also ends `MAX_AGE_US` after it began, however busy it is."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

from gateway.store.sql import SqlStore
from gateway.timeutil import now_us

TOKEN_BYTES = 32
# What `new_token` makes: 32 random bytes in unpadded URL-safe base64. Anything else a client
# sends as a cookie or a link token is refused before the store is asked (no read, no write).
TOKEN_FORMAT = re.compile(r"[A-Za-z0-9_-]{43}")
SECOND_US = 1_000_000
TOUCH_EVERY_US = 5 * SECOND_US  # idle time is measured to within this: fewer writes
MAX_AGE_US = 12 * 3600 * SECOND_US  # console and portal alike: no setting (contract section 10)
FORGET_LINKS_AFTER_US = 86_400 * SECOND_US  # used or expired links are deleted after a day


def digest(token: str, bound_to: bytes = b"") -> bytes:
    """What the store keeps of a secret: its SHA-256 digest, or its HMAC-SHA256 keyed by
    `bound_to` when the secret is good only together with that key (console sessions)."""
    raw = token.encode("utf-8", "surrogateescape")
    if bound_to:
        return hmac.new(bound_to, raw, hashlib.sha256).digest()
    return hashlib.sha256(raw).digest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def well_formed(token: str) -> bool:
    """Whether `token` could have been made by `new_token`."""
    return TOKEN_FORMAT.fullmatch(token) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    id: str  # public: names the session in the audit trail
    kind: str  # "console" | "portal"
    account_id: str | None  # portal: the one account it may reach
    created_at: int
    last_seen_at: int


class SessionStore:
    """Sessions and portal links over an open `SqlStore` (SQLite or PostgreSQL alike)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    async def create_session(
        self,
        kind: str,
        account_id: str | None,
        idle_seconds: float,
        *,
        bound_to: bytes = b"",
        replacing: str = "",
    ) -> tuple[str, Session]:
        """A new session: (the cookie value, given to the browser only; the record). The
        session `replacing` names (the browser's previous cookie, if any) ends in the same
        transaction: one browser, one session."""
        token = new_token()
        now = now_us()
        session = Session(
            id=uuid.uuid4().hex, kind=kind, account_id=account_id, created_at=now, last_seen_at=now
        )
        async with self.store._write(None, ordered=False) as tx:
            # Forget sessions that have been idle or alive too long, so the table stays small.
            await tx.execute(
                "DELETE FROM ui_sessions WHERE last_seen_at + idle_us < ? OR created_at < ?",
                (now, now - MAX_AGE_US),
            )
            if well_formed(replacing):
                await tx.execute(
                    "DELETE FROM ui_sessions WHERE token_hash = ?", (digest(replacing, bound_to),)
                )
            await tx.execute(
                "INSERT INTO ui_sessions (id, token_hash, kind, account_id, created_at,"
                " last_seen_at, idle_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    digest(token, bound_to),
                    kind,
                    account_id,
                    now,
                    now,
                    int(idle_seconds * SECOND_US),
                ),
            )
        return token, session

    async def session(self, token: str, kind: str, *, bound_to: bytes = b"") -> Session | None:
        """The live session of this kind that `token` opens (with the key it was bound to),
        its idle clock restarted; None when there is none (unknown, ended, idle too long, too
        old, another kind, another admin token)."""
        if not well_formed(token):
            return None
        now = now_us()
        row = await self.store._one(
            "SELECT id, kind, account_id, created_at, last_seen_at, idle_us FROM ui_sessions"
            " WHERE token_hash = ?",
            (digest(token, bound_to),),
        )
        if row is None or row[1] != kind or row[4] + row[5] < now or now - row[3] >= MAX_AGE_US:
            return None
        if now - row[4] >= TOUCH_EVERY_US:
            async with self.store._write(None, ordered=False) as tx:
                await tx.execute(
                    "UPDATE ui_sessions SET last_seen_at = ? WHERE id = ?", (now, row[0])
                )
        return Session(
            id=row[0], kind=row[1], account_id=row[2], created_at=row[3], last_seen_at=now
        )

    async def end_session(self, token: str, *, bound_to: bytes = b"") -> None:
        if not well_formed(token):
            return
        async with self.store._write(None, ordered=False) as tx:
            await tx.execute(
                "DELETE FROM ui_sessions WHERE token_hash = ?", (digest(token, bound_to),)
            )

    async def create_link(self, account_id: str, ttl_seconds: float) -> tuple[str, int]:
        """A one-time portal link for the account: (its token, expires_at in microseconds)."""
        token = new_token()
        now = now_us()
        expires_at = now + int(ttl_seconds * SECOND_US)
        async with self.store._write(None, ordered=False) as tx:
            await tx.execute(
                "DELETE FROM portal_links WHERE expires_at < ?", (now - FORGET_LINKS_AFTER_US,)
            )
            await tx.execute(
                "INSERT INTO portal_links (token_hash, account_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (digest(token), account_id, now, expires_at),
            )
        return token, expires_at

    async def redeem_link(self, token: str) -> str | None:
        """The account a link opens, marking it used in the same statement, so two browsers
        racing with one link cannot both get in; None when unknown, used or expired.

        Only a link that can be redeemed costs a write: a malformed token is refused without
        asking the store, and an unknown, used or expired one with a read."""
        if not well_formed(token):
            return None
        now = now_us()
        key = digest(token)
        row = await self.store._one(
            "SELECT account_id FROM portal_links"
            " WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
            (key, now),
        )
        if row is None:
            return None
        async with self.store._write(None, ordered=False) as tx:
            # Still conditional: of two requests that both read the row unused, one updates it.
            used = await tx.execute(
                "UPDATE portal_links SET used_at = ?"
                " WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
                (now, key, now),
            )
        return str(row[0]) if used == 1 else None
