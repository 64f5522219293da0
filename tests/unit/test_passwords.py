"""service.domain.passwords: argon2id by default, upgrades, and hashing off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from passlib import hash as schemes
from passlib.context import CryptContext

from service.domain.passwords import PasswordHasher, default_context


class SlowContext:
    """A stand-in for CryptContext that records where and how often it runs at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.threads: set[int] = set()
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def hash(self, password: str) -> str:
        with self._lock:
            self.threads.add(threading.get_ident())
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.seconds)  # stands for argon2's work, which releases the GIL too
        with self._lock:
            self.running -= 1
        return f"slow${password}"


async def test_default_hash_is_argon2id_with_owasp_parameters(hasher):
    stored = await hasher.hash("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_the_right_password_verifies_and_needs_no_rehash(hasher):
    stored = await hasher.hash("correct horse battery")
    result = await hasher.verify("correct horse battery", stored)
    assert result.ok
    assert result.new_hash is None


async def test_a_wrong_password_does_not_verify(hasher):
    stored = await hasher.hash("correct horse battery")
    result = await hasher.verify("incorrect horse battery", stored)
    assert not result.ok
    assert result.new_hash is None


async def test_bcrypt_hash_verifies_and_comes_with_an_argon2id_replacement(hasher):
    legacy = CryptContext(schemes=["bcrypt"]).hash("legacy-password")
    result = await hasher.verify("legacy-password", legacy)
    assert result.ok
    assert result.new_hash is not None
    assert result.new_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert default_context().verify("legacy-password", result.new_hash)


async def test_wrong_password_against_bcrypt_offers_no_replacement(hasher):
    legacy = CryptContext(schemes=["bcrypt"]).hash("legacy-password")
    result = await hasher.verify("wrong-password", legacy)
    assert (result.ok, result.new_hash) == (False, None)


async def test_password_longer_than_bcrypt_allows_fails_instead_of_raising(hasher):
    legacy = CryptContext(schemes=["bcrypt"]).hash("legacy-password")
    result = await hasher.verify("legacy-password" + "x" * 100, legacy)
    assert not result.ok


@pytest.mark.parametrize("stored", ["", "plain-text", "$argon2id$garbage", "$2b$12$short"])
async def test_unusable_stored_hash_verifies_nothing(hasher, stored):
    result = await hasher.verify("anything", stored)
    assert not result.ok


async def test_unknown_user_verifies_against_a_dummy_hash_and_fails(hasher):
    started = time.perf_counter()
    result = await hasher.verify("anything", None)
    elapsed = time.perf_counter() - started
    assert not result.ok
    # An argon2id verification with 19 MiB takes milliseconds, not microseconds.
    assert elapsed > 0.002


async def test_verify_without_start_refuses_unknown_users():
    unstarted = PasswordHasher(threads=1)
    try:
        with pytest.raises(AssertionError, match="start"):
            await unstarted.verify("anything", None)
    finally:
        unstarted.close()


async def test_hashing_runs_in_worker_threads_not_on_the_event_loop():
    context = SlowContext(seconds=0.01)
    hasher = PasswordHasher(threads=2, context=context)
    try:
        await hasher.hash("secret")
    finally:
        hasher.close()
    assert context.threads
    assert threading.get_ident() not in context.threads


async def test_the_event_loop_keeps_running_while_passwords_hash():
    context = SlowContext(seconds=0.3)
    hasher = PasswordHasher(threads=1, context=context)
    try:
        hashing = asyncio.ensure_future(hasher.hash("secret"))
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        assert time.perf_counter() - started < 0.2, "the loop was blocked by the hash"
        assert not hashing.done()
        assert await hashing == "slow$secret"
    finally:
        hasher.close()


async def test_no_more_hashes_run_at_once_than_there_are_threads():
    context = SlowContext(seconds=0.05)
    hasher = PasswordHasher(threads=2, context=context)
    try:
        results = await asyncio.gather(*(hasher.hash(f"p{i}") for i in range(8)))
    finally:
        hasher.close()
    assert results == [f"slow$p{i}" for i in range(8)]
    assert context.most_at_once == 2


class CountingHasher(PasswordHasher):
    """Records each hash that a verification is run against."""

    def __init__(self) -> None:
        super().__init__(threads=1)
        self.against: list[str] = []

    def _verify(self, password: str, stored_hash: str):
        self.against.append(stored_hash)
        return super()._verify(password, stored_hash)


@pytest.mark.parametrize(
    ("stored", "password"),
    [
        (schemes.bcrypt.using(rounds=4).hash("right password"), "wrong password"),
        (schemes.bcrypt.using(rounds=4).hash("right password"), "x" * 100),
        (schemes.pbkdf2_sha256.using(rounds=1000).hash("right password"), "wrong"),
        ("$argon2id$garbage", "wrong password"),
    ],
    ids=["cheap-bcrypt", "bcrypt-over-72-bytes", "cheap-pbkdf2", "corrupt"],
)
async def test_a_failure_against_an_outdated_hash_also_spends_a_dummy_verification(
    stored, password
):
    """Else a cheap imported hash would answer faster than an unknown name, telling it exists."""
    hasher = CountingHasher()
    try:
        await hasher.start()
        assert not (await hasher.verify(password, stored)).ok
        assert hasher.against == [stored, hasher._dummy_hash]
    finally:
        hasher.close()


async def test_a_failure_against_a_current_hash_verifies_once_and_a_success_once():
    hasher = CountingHasher()
    try:
        await hasher.start()
        current = await hasher.hash("right password")
        old = schemes.bcrypt.using(rounds=4).hash("right password")
        assert not (await hasher.verify("wrong password", current)).ok
        assert (await hasher.verify("right password", old)).ok
        assert hasher.against == [current, old]
    finally:
        hasher.close()
