"""The bearer rule: an `Authorization` header value -> a principal, or the reason it failed.

Checks run cheapest first: present, scheme, non-empty, length, checksum,
then the in-memory index. No I/O, no aiohttp: callers decide how a failure is answered.
"""

from __future__ import annotations

import hashlib

from gateway.index import KeyEntry, KeyIndex
from gateway.keys import KEY_LENGTH, has_valid_checksum

MISSING = "missing"
DUPLICATE = "duplicate_header"
# What the header scan hands over when a request carries Authorization more than once: a NUL
# can never be in a parsed header value, so this cannot collide with anything a client sent.
AMBIGUOUS_CREDENTIALS = b"\x00duplicate"
SCHEME = "scheme"
EMPTY = "empty"
LENGTH = "length"
CHECKSUM = "checksum"
UNKNOWN = "unknown"
REVOKED = "revoked"
EXPIRED = "expired"
ACCOUNT_INACTIVE = "account_deactivated"

_SCHEME = b"Bearer "
_SCHEME_LEN = len(_SCHEME)
_sha256 = hashlib.sha256


def authenticate(
    value: bytes | None, index: KeyIndex, now: float
) -> tuple[KeyEntry | None, str | None]:
    """(principal, None) on success, (None or the matched entry, reason) on failure.

    The entry is returned with revoked/expired/deactivated failures so the caller can log
    which key it was (by id and prefix, never the secret).
    """
    if value is None:
        return None, MISSING
    if value == AMBIGUOUS_CREDENTIALS:
        return None, DUPLICATE
    if not value.startswith(_SCHEME):
        # "Bearer " arrives as "Bearer": the header scan strips trailing whitespace.
        return None, EMPTY if value == _SCHEME[:-1] else SCHEME
    token = value[_SCHEME_LEN:]
    if not token:
        return None, EMPTY
    if len(token) != KEY_LENGTH:
        return None, LENGTH
    if not has_valid_checksum(token):
        return None, CHECKSUM
    # A dict lookup on the SHA-256 digest: equality on a hash of the secret, not on the secret,
    # so its timing reveals nothing usable about any key.
    entry = index.lookup(_sha256(token).digest())
    if entry is None:
        return None, UNKNOWN
    if entry.revoked:
        return entry, REVOKED
    if entry.expires_at <= now:
        return entry, EXPIRED
    if not entry.account.active:
        return entry, ACCOUNT_INACTIVE
    return entry, None


def presented_prefix(value: bytes | None, prefix_len: int) -> str | None:
    """The loggable prefix of a presented token: only for key-shaped tokens, so a password
    pasted into the header never reaches the log."""
    if value is None or not value.startswith(_SCHEME):
        return None
    token = value[_SCHEME_LEN:]
    if len(token) != KEY_LENGTH:
        return None
    head = token[:prefix_len]
    if not head.isascii():
        return None
    text = head.decode("ascii")
    return text if all(c.isalnum() or c == "_" for c in text) else None
