"""User queries. Uniqueness is left to the unique indexes: insert, then map the violation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from service.db.errors import unique_violation
from service.db.models import PostRow, UserRow
from service.domain.entities import Credentials, Post, User, UserQuery
from service.domain.errors import BalanceNotZero, UserNotFound

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from tortoise.queryset import QuerySet

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


async def get_user(user_id: int, *, with_posts: bool = False) -> User:
    query = UserRow.filter(id=user_id)
    if with_posts:
        # One query for the user and one for all its posts, whatever their number.
        query = query.prefetch_related("posts")
    row = await query.first()
    if row is None:
        raise UserNotFound(user_id)
    if not with_posts:
        return to_user(row)
    posts = sorted(row.posts, key=lambda p: p.id, reverse=True)
    return to_user(row, posts)


async def find_user(
    *, username_key: str | None = None, email_key: str | None = None
) -> User | None:
    row = await UserRow.get_or_none(**_identity(username_key, email_key))
    return None if row is None else to_user(row)


async def get_users(ids: Sequence[int]) -> list[User]:
    """All users with these ids, in the given order; UserNotFound names every missing id."""
    rows = {row.id: row for row in await UserRow.filter(id__in=set(ids))}
    missing = sorted({i for i in ids if i not in rows})
    if missing:
        raise UserNotFound(*missing)
    return [to_user(rows[i]) for i in ids]


def _filtered(query: UserQuery) -> QuerySet[UserRow]:
    rows = UserRow.all()
    if query.username_prefix_key:
        rows = rows.filter(username_key__startswith=query.username_prefix_key)
    if query.created_after is not None:
        rows = rows.filter(create_time__gte=query.created_after)
    if query.created_before is not None:
        rows = rows.filter(create_time__lt=query.created_before)
    return rows


async def count_users(query: UserQuery) -> int:
    return await _filtered(query).count()


async def list_users(
    query: UserQuery, after: Sequence[str | int] | None, limit: int
) -> tuple[list[User], list[str | int] | None]:
    """Up to ``limit`` users in the query's order, after the keyset position ``after``.

    Also returns the position to resume from, or None when no rows follow.
    """
    columns = _SORT_COLUMNS[query.sort_field]
    rows = _filtered(query)
    if after is not None:
        rows = rows.filter(_after(columns, _decode(columns, after), query.descending))
    direction = "-" if query.descending else ""
    # One row more than asked tells whether another page follows.
    page = await rows.order_by(*(direction + c for c in columns)).limit(limit + 1)
    resume_at = _encode(columns, page[limit - 1]) if len(page) > limit else None
    return [to_user(row) for row in page[:limit]], resume_at


def _encode(columns: Sequence[str], row: UserRow) -> list[str | int]:
    values: list[str | int] = []
    for column in columns:
        value = getattr(row, column)
        values.append(value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value)
    return values


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


def _after(columns: Sequence[str], values: Sequence[Any], descending: bool) -> Q:
    """Rows strictly after ``values`` in lexicographic (column, ..., id) order."""
    op = "lt" if descending else "gt"
    condition = Q(**{f"{columns[-1]}__{op}": values[-1]})
    for column, value in zip(reversed(columns[:-1]), reversed(values[:-1]), strict=True):
        condition = Q(**{f"{column}__{op}": value}) | (Q(**{column: value}) & condition)
    return condition


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
    row = await UserRow.get_or_none(**_identity(username_key, email_key))
    return None if row is None else Credentials(to_user(row), row.password_hash)


async def get_credentials(user_id: int) -> Credentials:
    row = await UserRow.get_or_none(id=user_id)
    if row is None:
        raise UserNotFound(user_id)
    return Credentials(to_user(row), row.password_hash)


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
