"""Growing a scale-bench database to a size, straight in SQL (bench.scale).

User n has id n (the table starts empty) and the name ``user%07d``; users
were created one millisecond apart. Posts grow with the users (one per 10),
the ledger too (one transfer per 10, one deposit per 100), a tenth of each on
one busy user, so that its ListPosts and ListTransfers grow with the table.
SQLite: ``executemany`` in one transaction; PostgreSQL: ``COPY``, then
``ANALYZE``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.seed import USER_COLUMNS

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Growth", "created", "grow_postgres", "grow_sqlite", "name"]

_LEDGER_COLUMNS = ["kind", "from_user_id", "to_user_id", "amount", "request_id", "create_time"]
_POST_COLUMNS = ["user_id", "title", "body", "create_time"]
# Seeded users were created one millisecond apart, ending a day ago.
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def name(n: int) -> str:
    return f"user{n:07d}"


def created(n: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=n)


@dataclass
class Growth:
    """What is in a scale database so far (user n has id n: the table starts empty)."""

    users: int = 0
    posts: int = 0
    ledger: int = 0
    busy_user: int = 1

    def users_up_to(self, size: int, hashed: str) -> list[tuple[Any, ...]]:
        rows = []
        for n in range(self.users + 1, size + 1):
            username = name(n)
            when = created(n)
            email = f"{username}@example.com"
            rows.append(
                (username, username, email, email, f"Scale User {n}", hashed, 0, when, when)
            )
        return rows

    def posts_up_to(self, size: int) -> list[tuple[Any, ...]]:
        rows = []
        for n in range(self.posts + 1, size // 10 + 1):
            author = self.busy_user if n % 10 == 0 else 1 + (n * 7919) % size
            rows.append((author, f"Post {n}", "Some text of a post.", created(n)))
        return rows

    def ledger_up_to(self, size: int) -> list[tuple[Any, ...]]:
        """Transfers of 1 between seeded users (balances are left at 0: nothing here is spent)."""
        rows: list[tuple[Any, ...]] = []
        for n in range(self.ledger + 1, size // 10 + 1):
            when = created(n)
            if n % 10 == 0:
                rows.append(("deposit", None, self.busy_user, 1, f"scale-d-{n}", when))
            elif n % 10 < 3:
                other = 2 + (n * 7919) % (size - 1)
                sender, receiver = (self.busy_user, other) if n % 2 else (other, self.busy_user)
                rows.append(("transfer", sender, receiver, 1, f"scale-t-{n}", when))
            else:
                sender = 2 + (n * 104729) % (size - 1)
                receiver = 2 + (n * 7919) % (size - 1)
                if receiver == sender:
                    receiver = 2 + (receiver - 1) % (size - 1)
                rows.append(("transfer", sender, receiver, 1, f"scale-t-{n}", when))
        return rows


def _sqlite_value(value: Any) -> Any:
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value


def grow_sqlite(path: Path, growth: Growth, size: int, hashed: str) -> None:
    connection = sqlite3.connect(path)
    try:
        with connection:
            for table, columns, rows in (
                ("users", USER_COLUMNS, growth.users_up_to(size, hashed)),
                ("posts", _POST_COLUMNS, growth.posts_up_to(size)),
                ("ledger", _LEDGER_COLUMNS, growth.ledger_up_to(size)),
            ):
                marks = ", ".join("?" for _ in columns)
                connection.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                    [tuple(_sqlite_value(v) for v in row) for row in rows],
                )
    finally:
        connection.close()
    growth.users, growth.posts, growth.ledger = size, size // 10, size // 10


async def grow_postgres(url: str, growth: Growth, size: int, hashed: str) -> None:
    connection = await asyncpg.connect(_dsn(url))
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "users", records=growth.users_up_to(size, hashed), columns=list(USER_COLUMNS)
            )
            await connection.copy_records_to_table(
                "posts", records=growth.posts_up_to(size), columns=_POST_COLUMNS
            )
            await connection.copy_records_to_table(
                "ledger", records=growth.ledger_up_to(size), columns=_LEDGER_COLUMNS
            )
        await connection.execute("ANALYZE users")
        await connection.execute("ANALYZE posts")
        await connection.execute("ANALYZE ledger")
    finally:
        await connection.close()
    growth.users, growth.posts, growth.ledger = size, size // 10, size // 10


def _dsn(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql", query=""))
