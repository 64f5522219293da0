"""Hand-written SQL for the hot read paths.

Reads skip Tortoise's query building and model instantiation: on SQLite the
ORM parses every timestamp with a pure-Python ISO-8601 parser, which made
BatchGetUsers of 100 users cost about 12 ms of CPU. Here rows come back as
tuples and timestamps go through ``datetime.fromisoformat``. Writes stay on
the ORM; both use the same connection (and transaction) of the context.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from service.db import lanes
from service.db.models import UserRow
from service.db.sqlite_reader import rows_now

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tortoise.backends.base.client import BaseDBAsyncClient

__all__ = ["Statement", "as_datetime", "client"]


def client() -> BaseDBAsyncClient:
    """The connection of the current context (the transaction's, inside one)."""
    return UserRow._meta.db


def as_datetime(value: datetime | str) -> datetime:
    """A timestamp column as an aware UTC datetime (SQLite stores ISO-8601 text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Statement:
    """A statement built piece by piece, with the placeholders of the current dialect."""

    def __init__(self, sql: str = "", *, db: BaseDBAsyncClient | None = None) -> None:
        # ``db``: the caller's client() already, which saves resolving it again.
        self._db = client() if db is None else db
        self.dialect = self._db.capabilities.dialect
        self._numbered = self.dialect == "postgres"
        self._parts = [sql] if sql else []
        self.params: list[Any] = []

    def param(self, value: Any) -> str:
        """Bind a value; returns its placeholder. Datetimes are bound in UTC."""
        if isinstance(value, datetime):
            value = value.astimezone(UTC)
        self.params.append(value)
        return f"${len(self.params)}" if self._numbered else "?"

    def params_of(self, values: Sequence[Any]) -> str:
        return ", ".join(self.param(v) for v in values)

    def add(self, sql: str) -> Statement:
        self._parts.append(sql)
        return self

    @property
    def sql(self) -> str:
        return " ".join(self._parts)

    async def rows(self) -> list[tuple[Any, ...]]:
        _, rows = await self._db.execute_query(self.sql, self.params)
        return [tuple(row) for row in rows]

    async def committed_rows(self) -> list[tuple[Any, ...]]:
        """``rows()`` of a read that needs no transaction, the shortest way there is now.

        Outside a transaction, SQLite answers from ``service.db.sqlite_reader``
        without a hop to the driver's thread, and PostgreSQL on a kept
        connection (``service.db.lanes``) when one is free; otherwise, as
        ``rows()``.
        """
        found = rows_now(self._db, self.sql, self.params)
        if found is None and self._numbered:
            kept = await lanes.lane_rows(self._db, self.sql, self.params)
            found = None if kept is None else [tuple(row) for row in kept]
        return found if found is not None else await self.rows()

    async def execute(self) -> int:
        """Run an UPDATE or DELETE; the number of rows it changed."""
        changed, _ = await self._db.execute_query(self.sql, self.params)
        return int(changed)

    async def returning(self) -> list[tuple[Any, ...]]:
        """Rows of an ``INSERT ... RETURNING`` (fetched, which execute() would not do)."""
        rows = await self._db.execute_query_dict(self.sql, self.params)
        return [tuple(row.values()) for row in rows]

    async def scalar(self) -> Any:
        rows = await self.rows()
        return rows[0][0] if rows else None
