"""GetUser's reads: on the loop (SQLite), or coalesced on a connection of their own (PostgreSQL).

On SQLite a read outside a transaction is answered on the event loop
(``service.db.sqlite_reader``): microseconds, nothing to coalesce.

On PostgreSQL most of a GetUser is the round trip and the driver's work
around it, paid per query. Here a call adds its id to the open batch of its
database; a batch is read with one ``WHERE id = ANY(...)`` that hands each
caller its row (the DataLoader pattern). One batch of a database is read at
a time, on a connection taken from the pool once and kept (no acquire,
release and Tortoise plumbing per query); the calls that arrive meanwhile
gather in the next batch, which starts when the query before it ends. So
the busier the service, the more calls share a round trip. A lone call
waits one extra loop turn, microseconds. A pool of one connection is not
held on to: batches then take it from the pool like any query.

Each call still sees a committed row at least as new as when it was made:
its batch's query starts after it arrived. Only reads outside a transaction
are served here (a transaction must see its own writes, on its own
connection), and only of users that are not deleted; everything else goes
to ``service.db.users.get_user``.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from tortoise.backends.base.client import TransactionalDBClient

from service.db.sql import Statement, client
from service.db.tracing import statement_span
from service.db.user_rows import COLUMNS, VISIBLE, user_of
from service.domain.errors import UserNotFound

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient

    from service.domain.entities import User

__all__ = ["MAX_BATCH", "close", "load_user"]

# Ids per shared query; a busier moment fills several batches.
MAX_BATCH = 500


class _Batch:
    __slots__ = ("size", "waiters")

    def __init__(self) -> None:
        self.waiters: dict[int, list[asyncio.Future[User]]] = {}
        self.size = 0


class _Loader:
    """The batches of one database waiting for a query, read one at a time (one connection)."""

    __slots__ = ("__weakref__", "db", "kept", "queued", "reading", "scheduled")

    def __init__(self, db: BaseDBAsyncClient) -> None:
        self.db = db
        self.queued: deque[_Batch] = deque()
        self.reading = False
        self.scheduled = False
        # The connection kept for batches (an asyncpg pool proxy), once taken.
        self.kept: Any = None

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

    async def rows(self, ids: list[int]) -> list[Any]:
        pool = getattr(self.db, "_pool", None)
        if pool is None or pool.get_max_size() < 2:
            statement = Statement(_BY_IDS)
            statement.param(ids)
            return await statement.rows()
        return await self._kept_rows(pool, ids)

    async def _kept_rows(self, pool: Any, ids: list[int]) -> list[Any]:
        if self.kept is None:
            self.kept = await pool.acquire()
        try:
            with statement_span("postgresql", _BY_IDS):
                return await self.kept.fetch(_BY_IDS, ids)  # type: ignore[no-any-return]
        except BaseException:
            # It may be broken: back to the pool, which replaces a closed one.
            kept, self.kept = self.kept, None
            await _release(pool, kept)
            raise

    async def close(self) -> None:
        kept, self.kept = self.kept, None
        if kept is not None:
            await _release(self.db._pool, kept)

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
            self.reading = False
            if not self.scheduled:
                self.start()


_loaders: weakref.WeakKeyDictionary[BaseDBAsyncClient, _Loader] = weakref.WeakKeyDictionary()
# Read tasks, referenced until done (the loop keeps only weak references).
_reading: set[asyncio.Task[None]] = set()


async def _release(pool: Any, connection: Any) -> None:
    # A connection that cannot be reset is terminated by release itself.
    with contextlib.suppress(Exception):
        await pool.release(connection)


_BY_IDS = f"SELECT {COLUMNS} FROM users WHERE id = ANY($1::bigint[]) AND {VISIBLE}"


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
    future: asyncio.Future[User] = asyncio.get_running_loop().create_future()
    loader.add(user_id, future)
    return await future


async def close(db: BaseDBAsyncClient) -> None:
    """Give the connection kept for ``db``'s batches back to its pool (before closing it)."""
    loader = _loaders.pop(db, None)
    if loader is not None:
        await loader.close()


async def _answer(batch: _Batch, loader: _Loader) -> None:
    try:
        found = {row[0]: user_of(row) for row in await loader.rows(sorted(batch.waiters))}
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
