"""Planner statistics that follow large imports (PostgreSQL).

Autovacuum analyses a table once ``50 + 10 %`` of its rows changed, but only
on its next round (a minute apart by default, later on a busy server): right
after a BatchCreateUsers storm the planner still believes the table is as
small as it was, and statements prepared then (asyncpg caches them per
connection, and PostgreSQL may switch them to a generic plan) kept a plan made
for a tiny table. BatchGetUsers of 50 ids took 158 ms for that reason after a
200k-user import. So this process counts the users it inserts and, once they
reach the same threshold autovacuum uses, runs ``ANALYZE users`` itself, in
the background after the inserting transaction committed. ANALYZE also
invalidates the cached plans that depend on the table, so prepared
statements are planned again with the new statistics.

SQLite needs nothing here: its planner picks the indexes of these queries by
their shape, not by row counts.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING

from service.db.sql import client

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient

__all__ = ["ANALYZE_MIN_ROWS", "ANALYZE_SCALE", "users_inserted"]

log = logging.getLogger("service.db.statistics")

# The threshold of autovacuum's analyze: a base plus a fraction of the table.
ANALYZE_MIN_ROWS = 1000
ANALYZE_SCALE = 0.1


class _Tracker:
    """Users inserted on one database since its statistics were last refreshed."""

    def __init__(self) -> None:
        self.inserted = 0
        self.rows_at_analyze = 0.0
        self.running: asyncio.Task[None] | None = None

    def due(self) -> bool:
        threshold = ANALYZE_MIN_ROWS + ANALYZE_SCALE * self.rows_at_analyze
        return self.inserted >= threshold and self.running is None


_trackers: weakref.WeakKeyDictionary[BaseDBAsyncClient, _Tracker] = weakref.WeakKeyDictionary()


def users_inserted(count: int) -> None:
    """Note ``count`` committed inserts into users; refresh statistics when enough piled up.

    Call outside any transaction: ANALYZE runs on the context's own pool.
    """
    db = client()
    if db.capabilities.dialect != "postgres":
        return
    tracker = _trackers.setdefault(db, _Tracker())
    tracker.inserted += count
    if tracker.due():
        tracker.inserted = 0
        tracker.running = asyncio.get_running_loop().create_task(_analyze(db, tracker))


async def _analyze(db: BaseDBAsyncClient, tracker: _Tracker) -> None:
    try:
        await db.execute_query("ANALYZE users")
        _, rows = await db.execute_query(
            "SELECT reltuples FROM pg_class WHERE oid = 'users'::regclass"
        )
        tracker.rows_at_analyze = max(0.0, float(rows[0][0])) if rows else 0.0
        log.info("analysed users after an import (%d rows estimated)", tracker.rows_at_analyze)
    except Exception as error:  # statistics are upkeep: a failure must not reach a caller
        log.warning("ANALYZE users failed: %s", type(error).__name__)
    finally:
        tracker.running = None
