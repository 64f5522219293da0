"""Seed a database the service has created: users and funded accounts, straight in SQL.

Every seeded user has the same password and one precomputed argon2id hash from
the service's own CryptContext, so seeding takes a second instead of 10,000
hashes. Funded accounts get a deposit row in the ledger as well, so that the
ledger still accounts for every balance.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = [
    "PASSWORD",
    "SeedInfo",
    "password_hash",
    "recreate_postgres_database",
    "seed_postgres",
    "seed_sqlite",
]

PASSWORD = "bench-password-1"
FUNDS = 1_000_000_000  # minor units per funded account: transfers never run dry
USER_COLUMNS = (
    "username",
    "username_key",
    "email",
    "email_key",
    "display_name",
    "password_hash",
    "balance",
    "create_time",
    "update_time",
)


@dataclass(frozen=True, slots=True)
class SeedInfo:
    first_id: int
    last_id: int
    funded_ids: tuple[int, ...]

    def username(self, user_id: int) -> str:
        return _name(user_id - self.first_id + 1)

    @property
    def middle_id(self) -> int:
        return (self.first_id + self.last_id) // 2


def password_hash() -> str:
    """The hash the service would store for PASSWORD (same CryptContext)."""
    from service.domain.passwords import default_context

    hashed: str = default_context().hash(PASSWORD)
    return hashed


def _name(n: int) -> str:
    return f"user{n:05d}"


def _rows(count: int, hashed: str) -> list[tuple[object, ...]]:
    now = datetime.now(UTC)
    rows: list[tuple[object, ...]] = []
    for n in range(1, count + 1):
        name = _name(n)
        created = now - timedelta(milliseconds=count - n + 1)
        rows.append(
            (
                name,
                name,
                f"{name}@example.com",
                f"{name}@example.com",
                f"Bench User {n}",
                hashed,
                0,
                created,
                created,
            )
        )
    return rows


def seed_sqlite(path: str, count: int, funded: int, hashed: str) -> SeedInfo:
    rows = [
        tuple(v.isoformat(sep=" ") if isinstance(v, datetime) else v for v in row)
        for row in _rows(count, hashed)
    ]
    columns = ", ".join(f'"{c}"' for c in USER_COLUMNS)
    marks = ", ".join("?" for _ in USER_COLUMNS)
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.executemany(f'INSERT INTO "users" ({columns}) VALUES ({marks})', rows)
            ids = [i for (i,) in connection.execute('SELECT "id" FROM "users" ORDER BY "id"')]
            funded_ids = ids[:funded]
            now = datetime.now(UTC).isoformat(sep=" ")
            connection.executemany(
                'UPDATE "users" SET "balance" = "balance" + ? WHERE "id" = ?',
                [(FUNDS, i) for i in funded_ids],
            )
            connection.executemany(
                'INSERT INTO "ledger" ("kind", "from_user_id", "to_user_id", "amount",'
                ' "request_id", "create_time") VALUES (?, NULL, ?, ?, ?, ?)',
                [("deposit", i, FUNDS, f"bench-seed-{i}", now) for i in funded_ids],
            )
    finally:
        connection.close()
    return SeedInfo(ids[0], ids[-1], tuple(funded_ids))


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database, query=""))


def _dsn(url: str) -> str:
    """asyncpg takes postgres:// and postgresql:// only."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


async def recreate_postgres_database(url: str) -> None:
    """Drop and create the database the URL names (connecting to ``postgres``)."""
    name = urlsplit(url).path.lstrip("/")
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"unexpected database name in {url!r}")
    connection = await asyncpg.connect(_dsn(_with_database(url, "postgres")), timeout=10)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def seed_postgres(url: str, count: int, funded: int, hashed: str) -> SeedInfo:
    connection = await asyncpg.connect(_dsn(_with_database(url, urlsplit(url).path[1:])))
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "users", records=_rows(count, hashed), columns=list(USER_COLUMNS)
            )
            ids = [r["id"] for r in await connection.fetch('SELECT "id" FROM "users" ORDER BY 1')]
            funded_ids = ids[:funded]
            await connection.execute(
                'UPDATE "users" SET "balance" = "balance" + $1 WHERE "id" = ANY($2::bigint[])',
                FUNDS,
                funded_ids,
            )
            now = datetime.now(UTC)
            await connection.copy_records_to_table(
                "ledger",
                records=[("deposit", None, i, FUNDS, f"bench-seed-{i}", now) for i in funded_ids],
                columns=[
                    "kind",
                    "from_user_id",
                    "to_user_id",
                    "amount",
                    "request_id",
                    "create_time",
                ],
            )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return SeedInfo(ids[0], ids[-1], tuple(funded_ids))
