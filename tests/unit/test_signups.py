"""service.domain.signups: what a create's fingerprint holds, and batch checks that yield."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from passlib import hash as schemes

from service.domain.errors import InvalidArgument
from service.domain.signups import NewUser, _check, _check_batch

PASSWORD = "correct horse battery"
BASE = {"username": "alice", "email": "alice@example.com", "display_name": "Alice"}


def fingerprint(**fields: str) -> str:
    values: dict[str, Any] = {**BASE, "password": PASSWORD, **fields}
    return _check(NewUser(**values)).fingerprint


def test_the_fingerprint_ignores_the_password():
    assert fingerprint(password="one password") == fingerprint(password="another password")


def test_the_fingerprint_holds_no_fast_hash_of_the_password():
    digest = fingerprint()
    for text in (PASSWORD, PASSWORD + "alice", "alice" + PASSWORD):
        assert hashlib.sha256(text.encode()).hexdigest() != digest
        assert hashlib.md5(text.encode()).hexdigest() not in digest


@pytest.mark.parametrize(
    "changed",
    [{"username": "Alice"}, {"email": "bob@example.com"}, {"display_name": "Al"}],
)
def test_the_fingerprint_changes_with_every_non_secret_field(changed):
    assert fingerprint(**changed) != fingerprint()


def test_the_fingerprint_tells_a_password_from_an_imported_hash_and_hashes_apart():
    first = schemes.bcrypt.using(rounds=4).hash(PASSWORD)
    second = schemes.bcrypt.using(rounds=4).hash(PASSWORD)
    imported = fingerprint(password="", password_hash=first)
    assert imported != fingerprint()
    assert imported == fingerprint(password="", password_hash=first)
    assert imported != fingerprint(password="", password_hash=second)


def test_the_fingerprint_is_of_normalised_fields():
    assert fingerprint(display_name="  Alice  ") == fingerprint()


async def test_checking_a_large_batch_lets_other_tasks_run():
    entries = [
        NewUser(username=f"user{i}", email=f"user{i}@example.com", password=PASSWORD)
        for i in range(400)
    ]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    running = asyncio.ensure_future(ticker())
    try:
        checked = await _check_batch(entries)
    finally:
        running.cancel()
    assert len(checked) == 400
    assert ticks >= 400 // 50 - 1


async def test_a_batch_check_names_fields_under_the_entry_index():
    entries = [
        NewUser(username="good", email="good@example.com", password=PASSWORD),
        NewUser(username="x", email="bad", password=PASSWORD),
    ]
    with pytest.raises(InvalidArgument) as info:
        await _check_batch(entries)
    assert {v.field for v in info.value.violations} == {"requests[1].username", "requests[1].email"}
    assert info.value.metadata == {"index": "1", "invalid_entries": "1"}
