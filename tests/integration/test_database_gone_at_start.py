"""A database that goes away between the first query and the schema check: retried, no traceback.

The failure is injected in the step that runs after the probe (the schema
check and the shared secrets, ``then``): it raises what asyncpg raises when
the server closes the connection, once, as a Patroni switchover at the wrong
moment would.
"""

from __future__ import annotations

import asyncpg
import pytest

from service.db.database import Database, DatabaseUnreachable
from service.db.migrate import require_migrated


def _fails_first(times: int):
    calls = {"n": 0}

    async def step(database: Database) -> None:
        calls["n"] += 1
        if calls["n"] <= times:
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )
        await require_migrated(database)

    return step, calls


async def test_a_database_lost_after_the_probe_is_retried_within_the_wait(database_url):
    database = Database(database_url)
    step, calls = _fails_first(1)
    try:
        await database.connect(wait=30, then=lambda: step(database))
    finally:
        await database.close()
    assert calls["n"] == 2


async def test_without_a_wait_it_is_unreachable_and_retryable_not_a_raw_driver_error(database_url):
    database = Database(database_url)
    step, _ = _fails_first(1)
    try:
        with pytest.raises(DatabaseUnreachable, match="cannot reach the database") as raised:
            await database.connect(wait=0, then=lambda: step(database))
    finally:
        await database.close()
    assert raised.value.retryable
