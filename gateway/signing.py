"""Signing secrets: the Standard Webhooks format, kept encrypted at rest.

A key's signing secret is `whsec_` + base64 of 32 random bytes; it is answered in plaintext once
(create, regenerate, rotate) and stored only as AES-256-GCM ciphertext under the gateway's
secret key, with the key's id as associated data (a ciphertext moved to another key does not
open). The secret key comes from the environment variable named by `webhooks.secret_key_env`
(base64 of 32 bytes); without it, an SQLite store gets a key file beside the database, created
0600 once; a PostgreSQL fleet must configure it (instances on different hosts share it).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.config import Settings
from gateway.errors import StoreError

PREFIX = "whsec_"
NONCE = 12


class SecretKeyError(StoreError):
    """No usable secret key: start-up is refused with this message."""


def new_signing_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(32)).decode()


def display_prefix(secret: str) -> str:
    """`whsec_` and 4 characters: enough to tell secrets apart, nothing to sign with."""
    return secret[: len(PREFIX) + 4]


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretKeyError("the signing-secret key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, secret: str, key_id: str) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, secret.encode(), key_id.encode())

    def open(self, sealed: bytes, key_id: str) -> str:
        try:
            return self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], key_id.encode()).decode()
        except (InvalidTag, ValueError) as exc:
            raise SecretKeyError(
                f"the signing secret of key {key_id} does not open with this gateway's secret "
                "key (webhooks.secret_key_env changed?)"
            ) from exc


def load_box(settings: Settings, environ: Mapping[str, str]) -> SecretBox:
    name = settings.webhooks.secret_key_env
    if name is not None:
        value = environ.get(name)
        if not value:
            raise SecretKeyError(f"webhooks.secret_key_env names {name}, which is not set")
        try:
            key = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise SecretKeyError(
                f"{name} must hold base64 of 32 random bytes (openssl rand -base64 32)"
            )
        return SecretBox(key)
    if settings.store.is_postgres:
        raise SecretKeyError(
            "a PostgreSQL store needs webhooks.secret_key_env (the same key on every instance) "
            "to keep signing secrets encrypted"
        )
    return SecretBox(_key_file(Path(str(settings.store.sqlite_path) + "-secret.key")))


def _key_file(path: Path) -> bytes:
    """The key beside the SQLite file: made once, 0600, atomically (a concurrent start reads
    either nothing or the whole key, never half of it)."""
    if not path.exists():
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
            try:
                os.write(fd, base64.b64encode(os.urandom(32)) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                with contextlib.suppress(FileExistsError):
                    os.link(scratch, path)  # fails if another process made it first: theirs
            finally:
                os.unlink(scratch)
        except OSError as exc:
            raise SecretKeyError(
                f"cannot create the signing-secret key file {path}: {exc.strerror or exc}"
            ) from exc
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (OSError, binascii.Error, ValueError) as exc:
        raise SecretKeyError(f"cannot read the signing-secret key file {path}: {exc}") from exc
    if len(key) != 32:
        raise SecretKeyError(f"the signing-secret key file {path} does not hold 32 bytes")
    return key
