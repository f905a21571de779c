"""Typed application state of the admin app (aiohttp `AppKey`s) and the admin token check."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from aiohttp import web

from gateway.config import Settings
from gateway.signing import SecretBox
from gateway.store.base import Store


class AdminToken:
    """Checks `Authorization: Bearer <token>` against the configured token, in constant time
    (both sides are compared as SHA-256 digests, so length leaks nothing either)."""

    def __init__(self, sha256_digest: bytes) -> None:
        self._expected = sha256_digest

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str]) -> AdminToken:
        admin = settings.admin
        if admin.token_sha256 is not None:
            return cls(bytes.fromhex(admin.token_sha256))
        if admin.token_env is not None and environ.get(admin.token_env):
            return cls(hashlib.sha256(environ[admin.token_env].encode()).digest())
        raise ValueError("no admin token configured")

    def session_key(self) -> bytes:
        """A fingerprint of this token that console sessions are bound to (their rows hold an
        HMAC keyed by it: gateway/store/sessions.py): another token, another key. One-way;
        neither the token nor its digest can be read back from it."""
        return hmac.new(self._expected, b"keygate-console-session", hashlib.sha256).digest()

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        presented = hashlib.sha256(header[7:].encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(presented, self._expected)


class SettingsRef:
    """The admin app's view of the settings; a reload (SIGHUP) swaps `current`."""

    def __init__(self, current: Settings) -> None:
        self.current = current


STORE = web.AppKey("store", Store)
SECRET_BOX = web.AppKey("secret_box", SecretBox)  # seals signing secrets (gateway/signing.py)
SETTINGS = web.AppKey("settings", SettingsRef)
TOKEN = web.AppKey("token", AdminToken)
