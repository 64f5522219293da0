"""What keeps listings O(page): code-point prefix ranges, a capped total_size, fresh statistics."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from passlib import hash as schemes
from users.v1 import user_service_pb2

from service.db import statistics, user_listing
from service.db.user_listing import prefix_successor
from service.domain.rules import identity_key
from tests.helpers import create_user, insert_rows, list_all
from tests.requirements import not_applicable

# A cheap hash as another system would export it: the import skips hashing.
IMPORTED_HASH = schemes.pbkdf2_sha256.using(rounds=1000).hash("legacy-password")


def listing(**fields: object) -> user_service_pb2.ListUsersRequest:
    return user_service_pb2.ListUsersRequest(**fields)  # type: ignore[arg-type]


def test_prefix_successor_is_the_next_string_by_code_point():
    assert prefix_successor("ab") == "ac"
    assert prefix_successor("a_") == "a`"
    assert prefix_successor("\ud7ff") == "\ue000"
    assert prefix_successor("a\U0010ffff") == "b"
    assert prefix_successor("\U0010ffff") is None


async def test_username_prefix_range_keeps_exactly_the_names_that_start_with_it(stub, subtests):
    names = ["öla", "Öse", "ö-1", "öab", "pab", "ozz", "ooo", "özé", "øab", "ö中文"]
    for name in names:
        await create_user(stub, name)
    # A prefix matches what starts with it once both are identity keys.
    expected = {
        prefix: [n for n in names if identity_key(n).startswith(identity_key(prefix))]
        for prefix in ["ö", "öz", "o", "oo", "中", "Ö-"]
    }
    assert expected["ö"]
    assert expected["o"]
    for prefix, matches in expected.items():
        with subtests.test(prefix=prefix):
            walked = await list_all(stub, page_size=2, username_prefix=prefix, order_by="username")
            assert sorted(u.username for u in walked) == sorted(matches)
            # By code point of the key: the order SQLite and PostgreSQL both give.
            keys = [identity_key(u.username) for u in walked]
            assert keys == sorted(keys)
            page = await stub.ListUsers(listing(username_prefix=prefix))
            assert page.total_size == len(matches)


async def test_total_size_is_exact_up_to_the_limit_and_never_below_it_beyond(
    service, stub, backend, monkeypatch, subtests
):
    monkeypatch.setattr(user_listing, "EXACT_COUNT_LIMIT", 7)
    await insert_rows(service, [f"scale{i:02d}" for i in range(30)])
    await insert_rows(service, [f"tiny{i}" for i in range(5)])
    with subtests.test("within the limit: exact"):
        assert (await stub.ListUsers(listing(username_prefix="tiny"))).total_size == 5
    with subtests.test("beyond the limit: an estimate, at least the limit plus one"):
        assert (await stub.ListUsers(listing(username_prefix="scale1"))).total_size >= 8
        total = (await stub.ListUsers(listing(page_size=2))).total_size
        assert total >= 8
        if backend == "sqlite":
            # The span of ids, exact while no user was removed.
            assert total == 35


async def test_a_large_import_refreshes_the_planner_statistics(
    service, stub, backend, database_url, monkeypatch
):
    if backend == "sqlite":
        not_applicable("SQLite plans these queries by index shape; it keeps no statistics")
    monkeypatch.setattr(statistics, "ANALYZE_MIN_ROWS", 20)

    async def analyses() -> int:
        connection = await asyncpg.connect(database_url)
        try:
            return int(
                await connection.fetchval(
                    "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'users'"
                )
            )
        finally:
            await connection.close()

    before = await analyses()
    entries = [
        user_service_pb2.CreateUserRequest(
            username=f"import{i}", email=f"import{i}@example.com", password_hash=IMPORTED_HASH
        )
        for i in range(25)
    ]
    await stub.BatchCreateUsers(user_service_pb2.BatchCreateUsersRequest(requests=entries))
    deadline = time.monotonic() + 10
    while await analyses() == before:
        assert time.monotonic() < deadline, "users was not analysed after the import"
        await asyncio.sleep(0.2)


async def test_a_prefix_with_quotes_or_backslashes_is_only_text(stub, subtests):
    await create_user(stub, "obrien")
    for prefix in ["o'brien", "o''", "o\\", "o'; DROP TABLE users; --", "o\\'"]:
        with subtests.test(prefix=prefix):
            page = await stub.ListUsers(listing(username_prefix=prefix))
            assert list(page.users) == []
            assert page.total_size == 0
    assert (await stub.ListUsers(listing(username_prefix="o"))).total_size == 1
