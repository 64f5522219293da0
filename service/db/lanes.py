"""PostgreSQL reads outside a transaction, on a few connections kept out of the pool.

A statement that goes through Tortoise takes a connection from asyncpg's
pool and gives it back: Tortoise's connection context, lock and exception
translation, the pool's queue, timeout and holder bookkeeping. Serially, on
the same query, that was 262 us of CPU a query against 155 us on a
connection held on to, and 370-400 us against 245-285 us of wall time.

A read that needs no transaction (one statement sees one snapshot) runs
here instead, on one of a database's lanes: connections taken from the pool
the first time they are needed and kept, each running one statement at a
time. A read that finds every lane busy goes through the pool as before
(``lane_rows`` answers None), so lanes never queue calls. Lanes take a third
of the pool at most, one connection of a pool of 2 to 5, and none of a pool
of one, which stays the pool's.

What a caller sees is what the pool gives: the committed snapshot of its
own statement, and a lost connection classified the same (asyncpg's error
raised as it is, where Tortoise wraps it; ``service.db.errors`` looks
through both). A lane whose statement fails in any way goes
back to the pool, which replaces a connection that was lost; the next read
takes another.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any

from tortoise.backends.base.client import TransactionalDBClient

from service.db.tracing import statement_span

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tortoise.backends.base.client import BaseDBAsyncClient

__all__ = ["close_lanes", "lane_rows", "lanes_of"]

# Lanes of a large pool: GetUser's shared reads (``service.db.point_reads``)
# take one at a time; the rest are for other reads at that moment.
MAX_LANES = 3


class Lanes:
    """The kept connections of one pool: how many were taken, and those idle now."""

    __slots__ = ("closed", "idle", "limit", "pool", "taken")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        size = pool.get_max_size()
        self.limit = max(1, min(MAX_LANES, size // 3)) if size >= 2 else 0
        self.taken = 0
        # asyncpg pool proxies; the last one used is the first taken again.
        self.idle: list[Any] = []
        self.closed = False

    async def rows(self, sql: str, params: Sequence[Any]) -> list[Any] | None:
        if self.idle:
            lane = self.idle.pop()
        elif self.taken < self.limit and not self.closed:
            self.taken += 1
            try:
                lane = await self.pool.acquire()
            except BaseException:
                self.taken -= 1
                raise
        else:
            return None
        try:
            with statement_span("postgresql", sql):
                rows: list[Any] = await lane.fetch(sql, *params)
        except BaseException:
            # It may be broken, or cancelled mid-statement: the pool resets
            # it, or replaces a closed one.
            await self._give_back(lane)
            raise
        if self.closed:
            await self._give_back(lane)
        else:
            self.idle.append(lane)
        return rows

    async def close(self) -> None:
        """Give the idle lanes back; a lane still reading goes back when its read ends."""
        self.closed = True
        idle, self.idle = self.idle, []
        for lane in idle:
            await self._give_back(lane)

    async def _give_back(self, lane: Any) -> None:
        self.taken -= 1
        # A connection that cannot be reset is terminated by release itself.
        with contextlib.suppress(Exception):
            await self.pool.release(lane)


_lanes: weakref.WeakKeyDictionary[BaseDBAsyncClient, Lanes] = weakref.WeakKeyDictionary()


def lanes_of(db: BaseDBAsyncClient) -> Lanes | None:
    """The lanes of ``db``'s pool; None inside a transaction, on SQLite or for a pool of one."""
    lanes = _lanes.get(db)
    if lanes is None:
        if isinstance(db, TransactionalDBClient) or db.capabilities.dialect != "postgres":
            return None
        pool = getattr(db, "_pool", None)
        if pool is None:
            return None
        lanes = _lanes[db] = Lanes(pool)
    return lanes if lanes.limit else None


async def lane_rows(db: BaseDBAsyncClient, sql: str, params: Sequence[Any]) -> list[Any] | None:
    """The rows of a read of committed data on a lane; None when none is free (use the pool)."""
    lanes = lanes_of(db)
    return None if lanes is None else await lanes.rows(sql, params)


async def close_lanes(db: BaseDBAsyncClient) -> None:
    """Give ``db``'s lanes back to its pool (before the pool closes: it waits for them)."""
    lanes = _lanes.pop(db, None)
    if lanes is not None:
        await lanes.close()
