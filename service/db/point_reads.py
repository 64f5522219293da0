"""GetUser's reads: on the loop (SQLite), or coalesced on a kept connection (PostgreSQL).

On SQLite a read outside a transaction is answered on the event loop
(``service.db.sqlite_reader``): microseconds, nothing to coalesce.

On PostgreSQL most of a GetUser is the round trip and the driver's work
around it, paid per query. Here a call that finds nothing being read reads
its row at once, in its own task, with ``WHERE id = $1``. A call that
arrives while a read is on adds its id to the open batch of its database; a
batch is read with one ``WHERE id = ANY(...)`` that hands each caller its
row (the DataLoader pattern). One read of a database is made at a time, on
one of its lanes (``service.db.lanes``: a connection kept out of the pool,
no acquire, release and Tortoise plumbing per query), or through the pool
when every lane is busy; the calls that arrive meanwhile gather in the next
batch, which starts when the read before it ends. So the busier the
service, the more calls share a round trip, and a lone call pays no loop
turns for it.

One read at a time, not one per lane: measured with three at once, GetUser
did 0.65-0.84x the calls/s at 4-32 in flight (the thinner batches cost the
two cores more than the overlap saved), and about the same at 1 and 128.
Measured again with lone reads and batches sharing a cap of two and of
three reads at once: 1.06-1.08x at 4 in flight, 0.79-0.86x at 16 and 128
(fewer calls shared a query, so PostgreSQL and the driver had more queries
to run on the same two cores); one at a time stays.

Each call still sees a committed row at least as new as when it was made:
its batch's query starts after it arrived. Only reads outside a transaction
are served here (a transaction must see its own writes, on its own
connection), and only of users that are not deleted; everything else goes
to ``service.db.users.get_user``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from tortoise.backends.base.client import TransactionalDBClient

from service.db.sql import Statement, client
from service.db.user_rows import COLUMNS, VISIBLE, user_of
from service.domain.errors import UserNotFound

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient

    from service.domain.entities import User

__all__ = ["MAX_BATCH", "load_user"]

# Ids per shared query; a busier moment fills several batches.
MAX_BATCH = 500


class _Batch:
    __slots__ = ("size", "waiters")

    def __init__(self) -> None:
        self.waiters: dict[int, list[asyncio.Future[User]]] = {}
        self.size = 0


class _Loader:
    """The batches of one database waiting for a query, read one at a time."""

    __slots__ = ("__weakref__", "db", "queued", "reading", "scheduled")

    def __init__(self, db: BaseDBAsyncClient) -> None:
        self.db = db
        self.queued: deque[_Batch] = deque()
        self.reading = False
        self.scheduled = False

    def idle(self) -> bool:
        return not (self.reading or self.queued or self.scheduled)

    async def read_alone(self, user_id: int) -> User:
        """Read one user now, in the caller's task; calls meanwhile queue a batch."""
        self.reading = True
        try:
            found = await self.rows(_BY_ID, user_id)
        finally:
            self.read_ended()
        if not found:
            raise UserNotFound(user_id)
        return user_of(found[0])

    def add(self, user_id: int, future: asyncio.Future[User]) -> None:
        batch = self.queued[-1] if self.queued else None
        if batch is None or batch.size >= MAX_BATCH:
            batch = _Batch()
            self.queued.append(batch)
        batch.waiters.setdefault(user_id, []).append(future)
        batch.size += 1
        if not (self.scheduled or self.reading):
            # Read on the next turn, once this turn's other calls have joined.
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.start)

    async def rows(self, sql: str, key: int | list[int]) -> list[Any]:
        statement = Statement(sql, db=self.db)
        statement.param(key)
        # On a lane (service.db.lanes) when one is free, through the pool otherwise.
        return await statement.committed_rows()

    def read_ended(self) -> None:
        self.reading = False
        if not self.scheduled:
            self.start()

    def start(self) -> None:
        self.scheduled = False
        if self.queued and not self.reading:
            self.reading = True
            task = asyncio.get_running_loop().create_task(self._read(self.queued.popleft()))
            _reading.add(task)
            task.add_done_callback(_reading.discard)

    async def _read(self, batch: _Batch) -> None:
        try:
            await _answer(batch, self)
        finally:
            self.read_ended()


_loaders: weakref.WeakKeyDictionary[BaseDBAsyncClient, _Loader] = weakref.WeakKeyDictionary()
# Read tasks, referenced until done (the loop keeps only weak references).
_reading: set[asyncio.Task[None]] = set()


_BY_IDS = f"SELECT {COLUMNS} FROM users WHERE id = ANY($1::bigint[]) AND {VISIBLE}"
# A lone read: PostgreSQL answers ``id = $1`` in about 35 us less than the same
# row through ANY of a one-element array (serially, on one connection).
_BY_ID = f"SELECT {COLUMNS} FROM users WHERE id = $1 AND {VISIBLE}"


async def load_user(user_id: int) -> User:
    """The user with this id that is not deleted; UserNotFound otherwise."""
    db = client()
    if isinstance(db, TransactionalDBClient) or db.capabilities.dialect != "postgres":
        # A transaction's own connection; or SQLite, read on the loop (sqlite_reader).
        from service.db.users import get_user

        return await get_user(user_id)
    loader = _loaders.get(db)
    if loader is None:
        loader = _loaders[db] = _Loader(db)
    if loader.idle():
        return await loader.read_alone(user_id)
    future: asyncio.Future[User] = asyncio.get_running_loop().create_future()
    loader.add(user_id, future)
    return await future


async def _answer(batch: _Batch, loader: _Loader) -> None:
    try:
        rows = await loader.rows(_BY_IDS, sorted(batch.waiters))
        found = {row[0]: user_of(row) for row in rows}
    except BaseException as error:
        for futures in batch.waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)
        if not isinstance(error, Exception):
            raise
        return
    for user_id, futures in batch.waiters.items():
        user = found.get(user_id)
        for future in futures:
            if future.done():  # its caller was cancelled meanwhile
                continue
            if user is None:
                future.set_exception(UserNotFound(user_id))
            else:
                future.set_result(user)
