"""Committed reads on SQLite, made on the event loop itself: no hop to the driver's thread.

Tortoise sends every SQLite statement to aiosqlite's thread and waits for
its answer: two thread switches and a loop wake-up per statement, most of
the cost of a GetUser here. A read outside any transaction needs none of
that: each database file gets a second, query-only ``sqlite3`` connection,
and such reads run on it synchronously, a few microseconds for an indexed
lookup. In WAL mode (Tortoise's default, set on the writing connection) a
reader sees the last commit and never waits for the writer nor holds it up,
so a call still sees every write acknowledged before it. When the file is
busy anyway (a checkpoint restarting the log) the read is not retried here:
``rows_now`` answers None and the caller goes the usual way.

The trade-off: a read blocks the loop while it runs. That suits indexed
reads of a page or less from a file in the page cache, which is what this is
used for; a cold cache on a slow disk makes every call wait for it.
In-memory databases are private to their connection and are not read here.
"""

from __future__ import annotations

import sqlite3
import weakref
from typing import TYPE_CHECKING, Any

from tortoise.backends.base.client import TransactionalDBClient
from tortoise.backends.sqlite.client import SqliteClient

from service.db.tracing import statement_span

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tortoise.backends.base.client import BaseDBAsyncClient

__all__ = ["close_reader", "rows_now"]

_readers: weakref.WeakKeyDictionary[BaseDBAsyncClient, sqlite3.Connection] = (
    weakref.WeakKeyDictionary()
)


def rows_now(
    db: BaseDBAsyncClient, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]] | None:
    """The rows of a read of committed data; None when it cannot be read this way now."""
    if isinstance(db, TransactionalDBClient) or not isinstance(db, SqliteClient):
        return None
    reader = _readers.get(db)
    if reader is None:
        if db.filename in {"", ":memory:"} or db._connection is None:
            return None
        reader = _readers[db] = _open(db.filename)
    with statement_span("sqlite", sql):
        try:
            return reader.execute(sql, params).fetchall()
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return None
            raise


def close_reader(db: BaseDBAsyncClient) -> None:
    reader = _readers.pop(db, None)
    if reader is not None:
        reader.close()


def _open(path: str) -> sqlite3.Connection:
    # timeout=0: a busy file answers at once (rows_now then returns None)
    # instead of blocking the loop; autocommit: each read ends its own
    # snapshot, so the reader never holds back a checkpoint.
    reader = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    reader.execute("PRAGMA query_only = ON")
    return reader
