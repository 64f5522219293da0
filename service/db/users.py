"""User queries. Uniqueness is left to the unique indexes: insert, then map the violation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tortoise.exceptions import IntegrityError

from service.db.errors import unique_violation
from service.db.models import PostRow, UserRow
from service.db.sql import Statement, as_datetime
from service.domain.entities import Credentials, Post, User, UserQuery
from service.domain.errors import BalanceNotZero, UserNotFound

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


__all__ = [
    "count_users",
    "delete_user",
    "find_credentials",
    "find_user",
    "get_credentials",
    "get_user",
    "get_users",
    "insert_user",
    "list_users",
    "replace_password_hash",
    "update_user",
]

# ListUsers sort fields -> the columns of their keyset (id last, as tie-break).
_SORT_COLUMNS = {
    "id": ("id",),
    "create_time": ("create_time", "id"),
    "username": ("username_key", "id"),
}


def to_user(row: UserRow, posts: Sequence[PostRow] | None = None) -> User:
    return User(
        id=row.id,
        username=row.username,
        email=row.email,
        display_name=row.display_name,
        balance=row.balance,
        create_time=row.create_time,
        update_time=row.update_time,
        posts=None if posts is None else tuple(to_post(p) for p in posts),
    )


def to_post(row: PostRow) -> Post:
    return Post(
        id=row.id,
        user_id=row.user_id,
        title=row.title,
        body=row.body,
        create_time=row.create_time,
    )


async def insert_user(
    *,
    username: str,
    username_key: str,
    email: str,
    email_key: str,
    display_name: str,
    password_hash: str,
) -> User:
    try:
        row = await UserRow.create(
            username=username,
            username_key=username_key,
            email=email,
            email_key=email_key,
            display_name=display_name,
            password_hash=password_hash,
        )
    except IntegrityError as error:
        raise unique_violation(error) or error from None
    return to_user(row)


_COLUMNS = "id, username, email, display_name, balance, create_time, update_time"


def _user_of(row: Sequence[Any]) -> User:
    """A user from a row of ``_COLUMNS``."""
    return User(
        id=row[0],
        username=row[1],
        email=row[2],
        display_name=row[3],
        balance=row[4],
        create_time=as_datetime(row[5]),
        update_time=as_datetime(row[6]),
    )


async def get_user(user_id: int, *, with_posts: bool = False) -> User:
    if not with_posts:
        statement = Statement(f"SELECT {_COLUMNS} FROM users WHERE id =")
        rows = await statement.add(statement.param(user_id)).rows()
        if not rows:
            raise UserNotFound(user_id)
        return _user_of(rows[0])
    # One query for the user and one for all its posts, whatever their number.
    row = await UserRow.filter(id=user_id).prefetch_related("posts").first()
    if row is None:
        raise UserNotFound(user_id)
    posts = sorted(row.posts, key=lambda p: p.id, reverse=True)
    return to_user(row, posts)


async def find_user(
    *, username_key: str | None = None, email_key: str | None = None
) -> User | None:
    credentials = await find_credentials(username_key=username_key, email_key=email_key)
    return None if credentials is None else credentials.user


async def get_users(ids: Sequence[int]) -> list[User]:
    """All users with these ids, in the given order; UserNotFound names every missing id."""
    wanted = sorted(set(ids))
    statement = Statement(f"SELECT {_COLUMNS} FROM users WHERE id IN")
    statement.add(f"({statement.params_of(wanted)})")
    found = {row[0]: _user_of(row) for row in await statement.rows()}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise UserNotFound(*missing)
    return [found[i] for i in ids]


def _filtered(statement: Statement, query: UserQuery) -> Statement:
    """Add the WHERE clause of a listing's filters (always, so callers can add ``AND``)."""
    statement.add("WHERE 1 = 1")
    if query.username_prefix_key:
        pattern = _escape_like(query.username_prefix_key) + "%"
        statement.add(f"AND username_key LIKE {statement.param(pattern)} ESCAPE '\\'")
    if query.created_after is not None:
        statement.add(f"AND create_time >= {statement.param(query.created_after)}")
    if query.created_before is not None:
        statement.add(f"AND create_time < {statement.param(query.created_before)}")
    return statement


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def count_users(query: UserQuery) -> int:
    count = await _filtered(Statement("SELECT COUNT(*) FROM users"), query).scalar()
    return int(count)


async def list_users(
    query: UserQuery, after: Sequence[str | int] | None, limit: int
) -> tuple[list[User], list[str | int] | None]:
    """Up to ``limit`` users in the query's order, after the keyset position ``after``.

    Also returns the position to resume from, or None when no rows follow.
    """
    columns = _SORT_COLUMNS[query.sort_field]
    statement = _filtered(Statement(f"SELECT {_COLUMNS}, username_key FROM users"), query)
    if after is not None:
        values = _decode(columns, after)
        statement.add("AND " + _after(statement, columns, values, query.descending))
    direction = " DESC" if query.descending else ""
    statement.add("ORDER BY " + ", ".join(c + direction for c in columns))
    # One row more than asked tells whether another page follows.
    statement.add(f"LIMIT {statement.param(limit + 1)}")
    page = await statement.rows()
    users = [_user_of(row) for row in page[:limit]]
    resume_at = _position(columns, users[-1], page[limit - 1][7]) if len(page) > limit else None
    return users, resume_at


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


def _after(
    statement: Statement, columns: Sequence[str], values: Sequence[Any], descending: bool
) -> str:
    """Rows strictly after ``values`` in lexicographic (column, ..., id) order.

    Placeholders are bound in the order they appear in the text, as SQLite's
    positional ``?`` needs.
    """
    op = "<" if descending else ">"
    column, value = columns[0], values[0]
    if len(columns) == 1:
        return f"{column} {op} {statement.param(value)}"
    beyond, tied = statement.param(value), statement.param(value)
    rest = _after(statement, columns[1:], values[1:], descending)
    return f"({column} {op} {beyond} OR ({column} = {tied} AND {rest}))"


async def update_user(user_id: int, changes: Mapping[str, str]) -> User:
    try:
        updated = await UserRow.filter(id=user_id).update(**changes, update_time=datetime.now(UTC))
    except IntegrityError as error:
        raise unique_violation(error) or error from None
    if not updated:
        raise UserNotFound(user_id)
    return await get_user(user_id)


async def delete_user(user_id: int) -> None:
    """Delete a user with a zero balance, atomically: the guard is in the DELETE itself."""
    if await UserRow.filter(id=user_id, balance=0).delete():
        return
    if await UserRow.exists(id=user_id):
        raise BalanceNotZero(user_id)
    raise UserNotFound(user_id)


def _identity(username_key: str | None, email_key: str | None) -> dict[str, Any]:
    if (username_key is None) == (email_key is None):
        raise ValueError("pass exactly one of username_key and email_key")
    return {"username_key": username_key} if username_key is not None else {"email_key": email_key}


async def find_credentials(
    *, username_key: str | None = None, email_key: str | None = None
) -> Credentials | None:
    column, value = next(iter(_identity(username_key, email_key).items()))
    statement = Statement(f"SELECT {_COLUMNS}, password_hash FROM users WHERE {column} =")
    rows = await statement.add(statement.param(value)).rows()
    return Credentials(_user_of(rows[0]), rows[0][7]) if rows else None


async def get_credentials(user_id: int) -> Credentials:
    statement = Statement(f"SELECT {_COLUMNS}, password_hash FROM users WHERE id =")
    rows = await statement.add(statement.param(user_id)).rows()
    if not rows:
        raise UserNotFound(user_id)
    return Credentials(_user_of(rows[0]), rows[0][7])


async def replace_password_hash(user_id: int, new_hash: str, *, expected: str, touch: bool) -> bool:
    """Store a new hash only if the stored one is still ``expected`` (compare-and-set).

    Neither a login's re-hash nor a second concurrent ChangePassword can then
    overwrite a password changed in the meantime. A re-hash is upkeep, not a
    change of the user, so it passes ``touch=False`` and keeps update_time.
    """
    changes: dict[str, Any] = {"password_hash": new_hash}
    if touch:
        changes["update_time"] = datetime.now(UTC)
    return bool(await UserRow.filter(id=user_id, password_hash=expected).update(**changes))
