"""The key format of contract section 2, as pure functions."""

from __future__ import annotations

import hashlib
import re
import zlib

import pytest

from gateway import keys


@pytest.mark.parametrize(
    ("prefix", "is_test", "head"),
    [("sk", False, "sk_live_"), ("sk", True, "sk_test_"), ("acme", False, "acme_live_")],
)
def test_generated_key_has_the_contract_form(prefix: str, is_test: bool, head: str) -> None:
    key = keys.generate_key(prefix, is_test)
    assert len(key) == 96
    assert key.startswith(head)
    assert re.fullmatch(r"[0-9A-Za-z]+", key[len(head) :])
    assert keys.is_well_formed(key, prefix)


def test_checksum_is_base62_crc32_of_everything_before_it() -> None:
    key = keys.generate_key("sk", False)
    body, check = key[:-6], key[-6:]
    value = 0
    for c in check:
        value = value * 62 + keys.BASE62.index(c)
    assert value == zlib.crc32(body.encode())
    assert keys.checksum(body) == check


def test_every_single_character_typo_is_caught_by_the_checksum() -> None:
    key = keys.generate_key("sk", False)
    for i in range(8, 96):
        for replacement in "0aZ":
            if key[i] == replacement:
                continue
            typo = key[:i] + replacement + key[i + 1 :]
            assert not keys.has_valid_checksum(typo.encode()), (i, replacement)


@pytest.mark.parametrize(
    "bad", [b"", b"sk_live_", b"x" * 95, b"x" * 97, b"\xff" * 96, b"sk_live_" + b"!" * 88]
)
def test_malformed_tokens_fail_the_checksum(bad: bytes) -> None:
    assert not keys.has_valid_checksum(bad)


def test_keys_are_random() -> None:
    generated = {keys.generate_key("sk", False) for _ in range(200)}
    assert len(generated) == 200


def test_prefix_mask_and_hash() -> None:
    key = keys.generate_key("sk", False)
    assert keys.key_prefix(key, "sk") == key[:11]
    assert len(keys.key_prefix(key, "sk")) == 11
    assert keys.key_last(key) == key[-4:]
    assert keys.mask(key[:11], key[-4:]) == f"{key[:11]}...{key[-4:]}"
    assert keys.hash_key(key) == hashlib.sha256(key.encode()).digest()
    assert keys.hash_key(key.encode()) == keys.hash_key(key)


def test_well_formed_checks_prefix_and_environment() -> None:
    key = keys.generate_key("sk", True)
    assert keys.is_well_formed(key, "sk")
    assert not keys.is_well_formed(key, "pk")
    assert not keys.is_well_formed("sk_prod_" + key[8:], "sk")


@pytest.mark.parametrize("prefix", ["", "SK", "s_k", "1sk", "a" * 21])
def test_invalid_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        keys.generate_key(prefix, False)
