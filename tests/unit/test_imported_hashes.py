"""Imported password hashes: which formats are accepted, bounded in cost, and upgraded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from passlib import hash as schemes

from service.domain.errors import InvalidArgument
from service.domain.passwords import (
    IMPORT_COST_LIMITS,
    IMPORTABLE_SCHEMES,
    PasswordHasher,
    check_imported_hash,
)

PASSWORD = "legacy-password"
OWN_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"

# One cheap hash of every importable scheme, as another system would have written it.
LEGACY = {
    "argon2": schemes.argon2.using(type="ID", memory_cost=65536, rounds=3, parallelism=4),
    "argon2i": schemes.argon2.using(type="I", memory_cost=19456, rounds=2, parallelism=1),
    "bcrypt": schemes.bcrypt.using(rounds=4),
    "bcrypt_sha256": schemes.bcrypt_sha256.using(rounds=4),
    "pbkdf2_sha256": schemes.pbkdf2_sha256.using(rounds=1000),
    "pbkdf2_sha512": schemes.pbkdf2_sha512.using(rounds=1000),
    "sha512_crypt": schemes.sha512_crypt.using(rounds=5000),
    "sha256_crypt": schemes.sha256_crypt.using(rounds=5000),
    "scrypt": schemes.scrypt.using(rounds=10),
}


def rejection(stored: str) -> str:
    with pytest.raises(InvalidArgument) as info:
        check_imported_hash(stored, "requests[3].password_hash")
    (violation,) = info.value.violations
    assert violation.field == "requests[3].password_hash"
    return violation.description


def test_every_importable_scheme_has_a_legacy_sample_and_a_cost_limit():
    assert {h.name for h in LEGACY.values()} == set(IMPORTABLE_SCHEMES)
    assert set(IMPORT_COST_LIMITS) == set(IMPORTABLE_SCHEMES)


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_a_hash_of_each_accepted_scheme_is_accepted_unchanged(name):
    stored = LEGACY[name].hash(PASSWORD)
    assert check_imported_hash(stored) == stored


@pytest.mark.parametrize("name", sorted(LEGACY))
async def test_an_imported_hash_verifies_and_is_replaced_by_argon2id(hasher, name):
    stored = LEGACY[name].hash(PASSWORD)
    result = await hasher.verify(PASSWORD, stored)
    assert result.ok
    assert result.new_hash is not None
    assert result.new_hash.startswith(OWN_PREFIX)
    again = await hasher.verify(PASSWORD, result.new_hash)
    assert (again.ok, again.new_hash) == (True, None)


@pytest.mark.parametrize("name", sorted(LEGACY))
async def test_a_wrong_password_against_an_imported_hash_fails_without_replacement(hasher, name):
    result = await hasher.verify("not-the-password", LEGACY[name].hash(PASSWORD))
    assert (result.ok, result.new_hash) == (False, None)


@pytest.mark.parametrize(
    "settings",
    [
        {"memory_cost": 19456, "rounds": 3, "parallelism": 1},
        {"memory_cost": 65536, "rounds": 2, "parallelism": 1},
        {"memory_cost": 19456, "rounds": 2, "parallelism": 2},
        {"memory_cost": 19456, "rounds": 2, "parallelism": 1, "type": "I"},
        {"memory_cost": 19456, "rounds": 2, "parallelism": 1, "digest_size": 16},
    ],
)
async def test_argon2_with_other_parameters_needs_an_update(hasher, settings):
    stored = schemes.argon2.using(**{"type": "ID", **settings}).hash(PASSWORD)
    assert not stored.startswith(OWN_PREFIX) or "digest_size" in settings
    result = await hasher.verify(PASSWORD, stored)
    assert result.ok
    assert result.new_hash is not None
    assert result.new_hash.startswith(OWN_PREFIX)


async def test_our_own_argon2id_hash_needs_no_update(hasher):
    stored = await hasher.hash(PASSWORD)
    assert check_imported_hash(stored) == stored
    assert (await hasher.verify(PASSWORD, stored)).new_hash is None


@pytest.mark.parametrize(
    "stored",
    [
        "5f4dcc3b5aa765d61d8327deb882cf99",  # unsalted hex MD5
        "$1$hW8kgRw.$tXg0GYFIBHCd3NXgxApu61",  # md5_crypt: too weak
        "{SSHA}abcdefghijklmnopqrstuvwxyz012345",
        "plain text password",
        "!unusable",
        "*",
    ],
)
def test_an_unrecognised_hash_is_invalid_and_names_the_accepted_formats(stored):
    assert "no accepted format" in rejection(stored)
    assert "bcrypt" in rejection(stored)


@pytest.mark.parametrize(
    "stored",
    ["$2b$12$short", "$argon2id$v=19$m=19456,t=2,p=1$zz$zz", "$pbkdf2-sha256$x$y$z"],
)
def test_a_malformed_hash_of_a_known_scheme_is_invalid(stored):
    assert "not a valid" in rejection(stored)


def test_a_setting_string_without_a_checksum_is_invalid():
    assert "without a hash" in rejection("$6$rounds=5000$saltsalt$")


@pytest.mark.parametrize("stored", ["", "$2b$" + "a" * 300, "$2b$12$" + "é" * 53])
def test_an_empty_overlong_or_non_ascii_hash_is_invalid(stored):
    assert "ASCII characters" in rejection(stored)


@pytest.mark.parametrize(
    "stored",
    [
        # Built by hand: hashing them for real would take the costs they claim.
        "$2b$31$" + "." * 53,
        "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHQ$" + "A" * 43,
        "$argon2id$v=19$m=19456,t=100,p=1$c29tZXNhbHQ$" + "A" * 43,
        "$6$rounds=999999999$saltsalt$" + "a" * 86,
        "$pbkdf2-sha256$50000000$c29tZXNhbHQ$" + "A" * 43,
    ],
)
def test_a_hash_too_costly_to_verify_is_invalid(stored):
    assert "too costly" in rejection(stored)


def test_cost_limits_admit_each_schemes_usual_defaults():
    for stored in [
        schemes.bcrypt.using(rounds=12).hash(PASSWORD),
        # argon2-cffi's former default: 100 MiB, t=2, p=8.
        "$argon2id$v=19$m=102400,t=2,p=8$c29tZXNhbHQ$" + "A" * 43,
        "$6$rounds=656000$saltsalt$" + "a" * 86,
        "$pbkdf2-sha256$600000$c29tZXNhbHQ$" + "A" * 43,
    ]:
        assert check_imported_hash(stored) == stored


async def test_a_batch_hashes_in_order_with_at_most_half_the_pool():
    class Recording:
        def __init__(self) -> None:
            self.running = self.most = 0
            self.lock = threading.Lock()

        def hash(self, password: str) -> str:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(0.02)
            with self.lock:
                self.running -= 1
            return "h$" + password

    context = Recording()
    hasher = PasswordHasher(threads=4, context=context)
    try:
        batch = asyncio.ensure_future(hasher.hash_many([f"p{i}" for i in range(10)]))
        await asyncio.sleep(0.005)
        # Another caller still gets a slot while the batch is running.
        assert await asyncio.wait_for(hasher.hash("other"), 0.5) == "h$other"
        assert await batch == [f"h$p{i}" for i in range(10)]
    finally:
        hasher.close()
    assert context.most <= 3
