"""The API key format: generation, checksum, hashing and display forms (pure, stdlib only).

A key is ``{prefix}_{live|test}_{body}``, exactly 96 characters. The body is random base62
followed by a 6-character base62 CRC32 of everything before the checksum, so typos and
made-up keys are rejected without a store lookup and secret scanners can recognise leaks.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

KEY_LENGTH = 96
CHECKSUM_LENGTH = 6
PREFIX_BODY_CHARS = 3  # how much of the body `key_prefix` shows
LAST_CHARS = 4  # how much of the end `key_masked` shows
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{0,19}")

_B62_VALUE = [-1] * 256
for _i, _c in enumerate(BASE62):
    _B62_VALUE[ord(_c)] = _i
_B62_BYTES = BASE62.encode()


def environment_marker(is_test: bool) -> str:
    return "test" if is_test else "live"


def _head(prefix: str, is_test: bool) -> str:
    return f"{prefix}_{environment_marker(is_test)}_"


def checksum(text: str) -> str:
    """Base62 CRC32 of `text`, left-padded to six characters."""
    value = zlib.crc32(text.encode("ascii"))
    out = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        out.append(BASE62[digit])
    return "".join(reversed(out))


def generate_key(prefix: str, is_test: bool) -> str:
    """A new random key; its plaintext must only ever reach the caller who asked for it."""
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"invalid key prefix {prefix!r}")
    head = _head(prefix, is_test)
    random_len = KEY_LENGTH - len(head) - CHECKSUM_LENGTH
    body = "".join(secrets.choice(BASE62) for _ in range(random_len))
    unsigned = head + body
    return unsigned + checksum(unsigned)


def has_valid_checksum(key: bytes) -> bool:
    """True when the last six characters are the base62 CRC32 of the rest (hot path: bytes)."""
    if len(key) != KEY_LENGTH:
        return False
    expected = zlib.crc32(key[: KEY_LENGTH - CHECKSUM_LENGTH])
    got = 0
    table = _B62_VALUE
    for byte in key[KEY_LENGTH - CHECKSUM_LENGTH :]:
        digit = table[byte]
        if digit < 0:
            return False
        got = got * 62 + digit
    return got == expected


def is_well_formed(key: str, prefix: str) -> bool:
    """Full syntactic check: length, prefix and environment marker, base62 body, checksum."""
    if len(key) != KEY_LENGTH or not key.isascii():
        return False
    if not (key.startswith(_head(prefix, False)) or key.startswith(_head(prefix, True))):
        return False
    body = key[len(prefix) + 6 :]
    if any(_B62_VALUE[ord(c)] < 0 for c in body):
        return False
    return has_valid_checksum(key.encode("ascii"))


def hash_key(key: str | bytes) -> bytes:
    """SHA-256 digest of the whole key: the only form the store ever holds."""
    raw = key.encode("ascii") if isinstance(key, str) else key
    return hashlib.sha256(raw).digest()


def key_prefix(key: str, prefix: str) -> str:
    """Everything before the body plus the body's first three characters (`sk_live_AbC`)."""
    return key[: len(prefix) + 6 + PREFIX_BODY_CHARS]


def key_last(key: str) -> str:
    return key[-LAST_CHARS:]


def mask(prefix_part: str, last: str) -> str:
    """`sk_live_AbC...9f8e`: safe to show in lists and logs."""
    return f"{prefix_part}...{last}"
