"""ListUsers queries: keyset pages and total_size, each costing O(page) at any table size.

Every order walks an index in order (see migration 0006): ``id`` the primary
key, ``create_time`` the ``(create_time, id)`` index, ``username`` the
``(username_key, id)`` index. The keyset condition is a row-value
comparison, ``(create_time, id) > ($1, $2)``, which both databases turn into
the start of an index range; an ``a > x OR (a = x AND ...)`` form is not
one on PostgreSQL.

Username keys are compared by code point on both backends: SQLite's BINARY
collation does that by default, and on PostgreSQL every comparison says
``COLLATE "C"`` (its index too), whatever the database's collation. That
makes the ``username_prefix`` filter an index range, ``key >= prefix AND key
< successor(prefix)``, exact for any prefix: neither ``LIKE`` (not indexable
under C.UTF-8 on PostgreSQL, case-insensitive on SQLite) nor a collation
whose order is not that of code points would be.

``total_size`` (aip.dev/158 allows an estimate) is exact up to
``EXACT_COUNT_LIMIT`` matches, counted over at most that many index entries;
beyond, it is an estimate that is never below the limit: PostgreSQL's
planner estimate for the same filters (from the table statistics, kept fresh
after imports, see service.db.statistics); on SQLite the span of ids of the
matching rows when only time filters apply (ids grow with create_time), and
for a username prefix the limit itself, a lower bound.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from service.db.sql import Statement
from service.db.user_rows import COLUMNS, MORE, VISIBLE, user_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from service.domain.entities import User, UserQuery

__all__ = ["EXACT_COUNT_LIMIT", "count_users", "list_users", "prefix_successor"]

EXACT_COUNT_LIMIT = 10_000

# ListUsers sort fields -> the columns of their keyset (id last, as tie-break).
_SORT_COLUMNS = {
    "id": ("id",),
    "create_time": ("create_time", "id"),
    "username": ("username_key", "id"),
}
_SURROGATES = range(0xD800, 0xE000)


def prefix_successor(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix`` (code points).

    None when there is none (a prefix of only U+10FFFF): no upper bound then.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop()) + 1
        if last in _SURROGATES:
            last = _SURROGATES.stop  # PostgreSQL cannot store a lone surrogate
        if last <= sys.maxunicode:
            return "".join(chars) + chr(last)
    return None


def _column(statement: Statement, column: str) -> str:
    """A column as compared and ordered: username keys by code point on both backends."""
    if column == "username_key" and statement.dialect == "postgres":
        return 'username_key COLLATE "C"'
    return column


def _filtered(statement: Statement, query: UserQuery) -> Statement:
    """Add the WHERE clause of a listing's filters (always, so callers can add ``AND``)."""
    statement.add("WHERE 1 = 1")
    if not query.show_deleted:
        statement.add(f"AND {VISIBLE}")
    if query.username_prefix_key:
        key = _column(statement, "username_key")
        statement.add(f"AND {key} >= {_bound(statement, query.username_prefix_key)}")
        successor = prefix_successor(query.username_prefix_key)
        if successor is not None:
            statement.add(f"AND {key} < {_bound(statement, successor)}")
    if query.created_after is not None:
        statement.add(f"AND create_time >= {_bound(statement, query.created_after)}")
    if query.created_before is not None:
        statement.add(f"AND create_time < {_bound(statement, query.created_before)}")
    return statement


def _bound(statement: Statement, value: str | datetime) -> str:
    """A filter's value: a parameter on SQLite, a literal on PostgreSQL.

    asyncpg prepares every statement and PostgreSQL may switch a prepared
    statement to a generic plan after five runs. A generic plan cannot know
    how selective ``create_time >= $1`` or a prefix range is (it assumes a
    third of the table), and picked a walk of the primary key and a
    sequential scan for the count: the newest 1,000 of 1M users then took
    180 ms instead of 4. With the values in the text each filter is planned
    for what it selects. Both kinds of value are safe to inline: timestamps
    are formatted here, and text is quoted with every quote doubled
    (standard_conforming_strings, on since PostgreSQL 9.1, keeps backslashes
    literal); username keys hold neither quotes nor NUL anyway.
    """
    if statement.dialect != "postgres":
        return statement.param(value)
    if isinstance(value, datetime):
        return f"'{value.astimezone(UTC).isoformat()}'::timestamptz"
    if "\x00" in value:
        raise ValueError("a NUL character cannot be in a username key")
    return "'" + value.replace("'", "''") + "'"


async def count_users(query: UserQuery) -> int:
    """total_size: exact up to EXACT_COUNT_LIMIT matches, an estimate above (module doc)."""
    statement = _filtered(Statement("SELECT COUNT(*) FROM (SELECT 1 FROM users"), query)
    statement.add(f"LIMIT {EXACT_COUNT_LIMIT + 1}) AS matches")
    counted = int(await statement.scalar())
    if counted <= EXACT_COUNT_LIMIT:
        return counted
    return max(counted, await _estimate(query))


async def _estimate(query: UserQuery) -> int:
    probe = Statement()
    if probe.dialect == "postgres":
        explain = Statement("EXPLAIN (FORMAT JSON) SELECT 1 FROM users")
        plan = await _filtered(explain, query).scalar()
        parsed = json.loads(plan) if isinstance(plan, str) else plan
        return int(parsed[0]["Plan"]["Plan Rows"])
    if query.username_prefix_key:
        return 0
    return await _id_span(query)


async def _id_span(query: UserQuery) -> int:
    """Ids from the first to the last row of the time window: two index probes."""
    first = _filtered(Statement("SELECT id FROM users"), query)
    first.add("ORDER BY create_time, id LIMIT 1")
    last = _filtered(Statement("SELECT id FROM users"), query)
    last.add("ORDER BY create_time DESC, id DESC LIMIT 1")
    low, high = await first.scalar(), await last.scalar()
    return 0 if low is None or high is None else int(high) - int(low) + 1


async def list_users(
    query: UserQuery, after: Sequence[str | int] | None, limit: int
) -> tuple[list[User], list[str | int] | None]:
    """Up to ``limit`` users in the query's order, after the keyset position ``after``.

    Also returns the position to resume from, or None when no rows follow.
    """
    columns = _SORT_COLUMNS[query.sort_field]
    statement = _filtered(Statement(f"SELECT {COLUMNS}, username_key FROM users"), query)
    keyset = [_column(statement, c) for c in columns]
    if after is not None:
        values = _decode(columns, after)
        op = "<" if query.descending else ">"
        if len(columns) == 1:
            statement.add(f"AND {keyset[0]} {op} {statement.param(values[0])}")
        else:
            bound = statement.params_of(values)
            statement.add(f"AND ({', '.join(keyset)}) {op} ({bound})")
    direction = " DESC" if query.descending else ""
    if await _sort_the_window(statement, query):
        # A unary plus keeps SQLite from walking the sort column's index.
        keyset[0] = "+" + keyset[0]
    statement.add("ORDER BY " + ", ".join(c + direction for c in keyset))
    # One row more than asked tells whether another page follows.
    statement.add(f"LIMIT {statement.param(limit + 1)}")
    page = await statement.rows()
    users = [user_of(row) for row in page[:limit]]
    resume_at = _position(columns, users[-1], page[limit - 1][MORE]) if len(page) > limit else None
    return users, resume_at


async def _sort_the_window(statement: Statement, query: UserQuery) -> bool:
    """Whether SQLite should read a narrow time window by its index and sort it.

    Without statistics SQLite walks the index of the sort order (id, say) and
    filters on create_time, which for the newest 1,000 of 1M users read the
    whole table (600 ms). When the window holds at most EXACT_COUNT_LIMIT rows
    (estimated by its ids, see _id_span), reading and sorting it is bounded;
    a wider window keeps the ordered walk. PostgreSQL's planner makes this
    choice itself from its statistics.
    """
    windowed = query.created_after is not None or query.created_before is not None
    if statement.dialect == "postgres" or not windowed or query.sort_field == "create_time":
        return False
    if query.username_prefix_key:
        return False  # the prefix range already bounds the rows read
    return await _id_span(query) <= EXACT_COUNT_LIMIT


def _position(columns: Sequence[str], user: User, username_key: str) -> list[str | int]:
    values: dict[str, str | int] = {
        "id": user.id,
        "create_time": user.create_time.astimezone(UTC).isoformat(),
        "username_key": username_key,
    }
    return [values[c] for c in columns]


def _decode(columns: Sequence[str], position: Sequence[str | int]) -> list[Any]:
    if len(position) != len(columns):
        raise ValueError("position does not match the sort columns")
    values: list[Any] = []
    for column, value in zip(columns, position, strict=True):
        if column == "create_time":
            values.append(datetime.fromisoformat(str(value)))
        elif column == "id":
            values.append(int(value))
        else:
            values.append(str(value))
    return values
