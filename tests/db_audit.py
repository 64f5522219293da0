"""Raw SQL on the service's database, on both backends, for audits after a race.

What a race left behind is read here, not through the service: a service
that answered wrongly about its own writes would otherwise vouch for itself.
SQLite files are read with the standard ``sqlite3`` module, PostgreSQL with
asyncpg. SQL is written with ``$1, $2 ...`` placeholders; SQLite gets them as
``?1, ?2 ...``.

``bank_violations()`` checks the invariants of the money (``tests/bank_load.py``
reports them after its fault load too).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections import defaultdict
from typing import Any

import asyncpg

from tests.integration.money_helpers import ledger_sums

__all__ = [
    "balances",
    "bank_violations",
    "invariant_violations",
    "ledger_rows",
    "rows",
    "scalar",
    "user_row",
    "user_rows",
]

USER_COLUMNS = (
    "id, username, username_key, email, email_key, display_name, balance, state, version,"
    " delete_time"
)


def _sqlite_path(database_url: str) -> str:
    path = database_url.removeprefix("sqlite://")
    if path in {"", ":memory:"}:
        raise ValueError("an in-memory SQLite database cannot be audited from outside")
    return path


def _sqlite_rows(path: str, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    connection = sqlite3.connect(path, timeout=30)
    try:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute(re.sub(r"\$(\d+)", r"?\1", sql), args)]
    finally:
        connection.close()


async def rows(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The rows of one query, as dicts, read directly from the database."""
    if database_url.startswith("sqlite"):
        return await asyncio.to_thread(_sqlite_rows, _sqlite_path(database_url), sql, args)
    connection = await asyncpg.connect(database_url)
    try:
        return [dict(row) for row in await connection.fetch(sql, *args)]
    finally:
        await connection.close()


async def scalar(database_url: str, sql: str, *args: Any) -> Any:
    """The first column of the only row of a query."""
    (row,) = await rows(database_url, sql, *args)
    return next(iter(row.values()))


async def user_rows(database_url: str, where: str = "TRUE", *args: Any) -> list[dict[str, Any]]:
    """Users rows (deleted ones included) matching ``where``, by id."""
    return await rows(
        database_url, f"SELECT {USER_COLUMNS} FROM users WHERE {where} ORDER BY id", *args
    )


async def user_row(database_url: str, user_id: int) -> dict[str, Any] | None:
    found = await user_rows(database_url, "id = $1", user_id)
    return found[0] if found else None


async def ledger_rows(database_url: str, where: str = "TRUE", *args: Any) -> list[dict[str, Any]]:
    """Ledger rows (deposits and transfers) matching ``where``, by id."""
    return await rows(
        database_url,
        "SELECT id, kind, from_user_id, to_user_id, amount, request_id FROM ledger"
        f" WHERE {where} ORDER BY id",
        *args,
    )


async def balances(database_url: str, *user_ids: int) -> list[int]:
    """The stored balances of these users, in this order."""
    stored = {row["id"]: row["balance"] for row in await user_rows(database_url)}
    return [stored[user_id] for user_id in user_ids]


def invariant_violations(
    balances: dict[int, int], ledger: list[dict[str, Any]] | list[Any]
) -> list[str]:
    """What is wrong with these balances and this ledger; empty when the books balance."""
    broken = []
    deposited = sum(row["amount"] for row in ledger if row["kind"] == "deposit")
    if sum(balances.values()) != deposited:
        broken.append(f"sum of balances {sum(balances.values())} != sum of deposits {deposited}")
    broken += [f"user {i} has a negative balance {b}" for i, b in balances.items() if b < 0]
    by_ledger = ledger_sums(
        (row["from_user_id"], row["to_user_id"], row["amount"]) for row in ledger
    )
    for user_id, balance in balances.items():
        if by_ledger.get(user_id, 0) != balance:
            broken.append(
                f"user {user_id}: balance {balance} != ledger sum {by_ledger.get(user_id, 0)}"
            )
    broken += [f"ledger names user {i}, who has no row" for i in by_ledger if i not in balances]
    seen: dict[str, int] = defaultdict(int)
    for row in ledger:
        seen[row["request_id"]] += 1
    broken += [f"request_id {rid} applied {n} times" for rid, n in seen.items() if n > 1]
    return broken


async def bank_violations(database_url: str) -> list[str]:
    """The broken invariants of the money on the database: none when the books balance."""
    users = await rows(database_url, "SELECT id, balance FROM users")
    balances = {row["id"]: row["balance"] for row in users}
    return invariant_violations(balances, await ledger_rows(database_url))
