"""GetUser's reads, coalesced: the calls that arrive in one turn of the event loop share a query.

Under load most of a GetUser is the database round trip and the driver's
work around it, paid per call. Here the first call of a turn opens a batch
and schedules its flush for the next turn; every call that arrives before
then adds its id; the flush reads them all with one ``WHERE id = ANY(...)``
(``IN (...)`` on SQLite) and hands each caller its row (the DataLoader
pattern). A lone call waits one extra loop turn, microseconds.

Each call still sees a committed row at least as new as when it was made:
the shared query starts after every caller in its batch arrived. Only reads
outside a transaction are coalesced (a transaction must see its own writes,
on its own connection), and only of users that are not deleted; everything
else goes to ``service.db.users.get_user``.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

from tortoise.backends.base.client import TransactionalDBClient

from service.db.sql import Statement, client
from service.db.user_rows import COLUMNS, VISIBLE, user_of
from service.domain.errors import UserNotFound

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient

    from service.domain.entities import User

__all__ = ["MAX_BATCH", "load_user"]

# Ids per shared query; a busier turn opens another batch.
MAX_BATCH = 500


class _Batch:
    def __init__(self) -> None:
        self.waiters: dict[int, list[asyncio.Future[User]]] = {}
        self.size = 0


_open: weakref.WeakKeyDictionary[BaseDBAsyncClient, _Batch] = weakref.WeakKeyDictionary()
# Flush tasks, referenced until done (the loop keeps only weak references).
_flushing: set[asyncio.Task[None]] = set()


async def load_user(user_id: int) -> User:
    """The user with this id that is not deleted; UserNotFound otherwise."""
    db = client()
    if isinstance(db, TransactionalDBClient):
        from service.db.users import get_user

        return await get_user(user_id)
    loop = asyncio.get_running_loop()
    batch = _open.get(db)
    if batch is None or batch.size >= MAX_BATCH:
        batch = _Batch()
        _open[db] = batch
        loop.call_soon(_start_flush, db, batch)
    future: asyncio.Future[User] = loop.create_future()
    batch.waiters.setdefault(user_id, []).append(future)
    batch.size += 1
    return await future


def _start_flush(db: BaseDBAsyncClient, batch: _Batch) -> None:
    if _open.get(db) is batch:
        del _open[db]
    task = asyncio.get_running_loop().create_task(_flush(batch))
    _flushing.add(task)
    task.add_done_callback(_flushing.discard)


async def _flush(batch: _Batch) -> None:
    ids = sorted(batch.waiters)
    try:
        statement = Statement(f"SELECT {COLUMNS} FROM users WHERE")
        if statement.dialect == "postgres":
            statement.add(f"id = ANY({statement.param(ids)}::bigint[])")
        else:
            statement.add(f"id IN ({statement.params_of(ids)})")
        statement.add(f"AND {VISIBLE}")
        found = {row[0]: user_of(row) for row in await statement.rows()}
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
