"""User queries. Uniqueness is left to the unique indexes: insert, then map the violation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from service.db.errors import unique_violation
from service.db.events import append_events
from service.db.models import PostRow, UserRow
from service.db.sql import Statement, as_datetime
from service.domain.entities import Credentials, Post, User, UserQuery
from service.domain.errors import (
    Aborted,
    BalanceNotZero,
    ConcurrencyConflict,
    EtagMismatch,
    InvalidStateTransition,
    RetentionExpired,
    UserNotFound,
)
from service.domain.events import STATE_EVENTS, EventType, NewEvent
from service.domain.lifecycle import State

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import timedelta

    from service.domain.lifecycle import StateChange


__all__ = [
    "change_state",
    "count_users",
    "delete_user",
    "find_credentials",
    "find_user",
    "get_credentials",
    "get_user",
    "get_users",
    "insert_user",
    "list_users",
    "purge_deleted",
    "replace_password_hash",
    "undelete_user",
    "update_user",
]

# Soft-deleted users are left out of every read that does not ask for them.
_VISIBLE = "delete_time IS NULL"

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
        state=_state(row.state, row.delete_time),
        version=row.version,
        delete_time=row.delete_time,
        purge_time=row.purge_time,
    )


def _state(stored: int, delete_time: object) -> State:
    """The state callers see: DELETED overrides the stored one while delete_time is set."""
    return State.DELETED if delete_time is not None else State(stored)


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


_COLUMNS = (
    "id, username, email, display_name, balance, create_time, update_time,"
    " state, version, delete_time, purge_time"
)
# Index of the first column a query selects after ``_COLUMNS``.
_MORE = 11


def _user_of(row: Sequence[Any]) -> User:
    """A user from a row of ``_COLUMNS``."""
    delete_time, purge_time = row[9], row[10]
    return User(
        id=row[0],
        username=row[1],
        email=row[2],
        display_name=row[3],
        balance=row[4],
        create_time=as_datetime(row[5]),
        update_time=as_datetime(row[6]),
        state=_state(row[7], delete_time),
        version=row[8],
        delete_time=None if delete_time is None else as_datetime(delete_time),
        purge_time=None if purge_time is None else as_datetime(purge_time),
    )


async def get_user(user_id: int, *, with_posts: bool = False, show_deleted: bool = False) -> User:
    if not with_posts:
        statement = Statement(f"SELECT {_COLUMNS} FROM users WHERE id =")
        statement.add(statement.param(user_id))
        if not show_deleted:
            statement.add(f"AND {_VISIBLE}")
        rows = await statement.rows()
        if not rows:
            raise UserNotFound(user_id)
        return _user_of(rows[0])
    # One query for the user and one for all its posts, whatever their number.
    users = UserRow.filter(id=user_id)
    if not show_deleted:
        users = users.filter(delete_time__isnull=True)
    row = await users.prefetch_related("posts").first()
    if row is None:
        raise UserNotFound(user_id)
    posts = sorted(row.posts, key=lambda p: p.id, reverse=True)
    return to_user(row, posts)


async def find_user(
    *, username_key: str | None = None, email_key: str | None = None, show_deleted: bool = False
) -> User | None:
    credentials = await find_credentials(username_key=username_key, email_key=email_key)
    if credentials is None:
        return None
    user = credentials.user
    return user if show_deleted or user.state != State.DELETED else None


async def get_users(ids: Sequence[int]) -> list[User]:
    """All users with these ids, in the given order; UserNotFound names every missing id."""
    wanted = sorted(set(ids))
    statement = Statement(f"SELECT {_COLUMNS} FROM users WHERE id IN")
    statement.add(f"({statement.params_of(wanted)}) AND {_VISIBLE}")
    found = {row[0]: _user_of(row) for row in await statement.rows()}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise UserNotFound(*missing)
    return [found[i] for i in ids]


def _filtered(statement: Statement, query: UserQuery) -> Statement:
    """Add the WHERE clause of a listing's filters (always, so callers can add ``AND``)."""
    statement.add("WHERE 1 = 1")
    if not query.show_deleted:
        statement.add(f"AND {_VISIBLE}")
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
    resume_at = _position(columns, users[-1], page[limit - 1][_MORE]) if len(page) > limit else None
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


async def _write(
    user_id: int,
    version: int | None,
    guards: Mapping[str, Any],
    changes: Mapping[str, Any],
    now: datetime | None = None,
) -> bool:
    """One guarded UPDATE of a user that bumps its version; whether it matched.

    Every condition (the etag's version included) is in the statement itself,
    so nothing can change between the check and the write.
    """
    rows = UserRow.filter(id=user_id, **guards)
    if version is not None:
        rows = rows.filter(version=version)
    update_time = now or datetime.now(UTC)
    try:
        return bool(await rows.update(**changes, version=F("version") + 1, update_time=update_time))
    except IntegrityError as error:
        raise unique_violation(error) or error from None


async def _current(user_id: int) -> UserRow:
    """The row as it is now, to explain why a guarded write matched nothing."""
    row = await UserRow.get_or_none(id=user_id)
    if row is None:
        raise UserNotFound(user_id)
    return row


def _check_version(row: UserRow, version: int | None) -> None:
    if version is not None and row.version != version:
        raise EtagMismatch(row.id)


def _raced(user_id: int, version: int | None) -> Aborted:
    """The error when the row no longer explains the failed write: it changed in between.

    With an etag that means it is stale; without one the write is simply safe to retry.
    """
    return ConcurrencyConflict() if version is None else EtagMismatch(user_id)


async def update_user(
    user_id: int, changes: Mapping[str, str], *, version: int | None = None
) -> User:
    """Change fields of a user that is not deleted (and still at ``version``, if given)."""
    async with in_transaction() as connection:
        if not await _write(user_id, version, {"delete_time__isnull": True}, changes):
            row = await _current(user_id)
            if row.delete_time is not None:
                raise UserNotFound(user_id)
            _check_version(row, version)
            raise _raced(user_id, version)
        user = await get_user(user_id, show_deleted=True)
        await append_events(connection, [NewEvent(EventType.USER_UPDATED, user_id, user)])
    return user


async def delete_user(user_id: int, *, retention: timedelta, version: int | None = None) -> None:
    """Soft-delete a user with a zero balance, atomically: the guards are in the UPDATE."""
    now = datetime.now(UTC)
    guards = {"delete_time__isnull": True, "balance": 0}
    deletion = {"delete_time": now, "purge_time": now + retention}
    async with in_transaction() as connection:
        if await _write(user_id, version, guards, deletion, now):
            user = await get_user(user_id, show_deleted=True)
            await append_events(connection, [NewEvent(EventType.USER_DELETED, user_id, user)])
            return
    row = await _current(user_id)
    if row.delete_time is not None:
        raise UserNotFound(user_id)
    _check_version(row, version)
    if row.balance != 0:
        raise BalanceNotZero(user_id)
    raise _raced(user_id, version)


async def undelete_user(user_id: int, *, version: int | None = None) -> User:
    """Restore a soft-deleted user whose purge time has not come yet."""
    now = datetime.now(UTC)
    guards = {"delete_time__isnull": False, "purge_time__gt": now}
    restored = {"delete_time": None, "purge_time": None}
    async with in_transaction() as connection:
        if not await _write(user_id, version, guards, restored):
            row = await _current(user_id)
            _check_version(row, version)
            if row.delete_time is None:
                state = State(row.state).name
                raise InvalidStateTransition(user_id, state, "UndeleteUser", State.DELETED.name)
            if row.purge_time is not None and row.purge_time <= now:
                raise RetentionExpired(user_id, row.purge_time.isoformat())
            raise _raced(user_id, version)
        user = await get_user(user_id, show_deleted=True)
        await append_events(connection, [NewEvent(EventType.USER_UNDELETED, user_id, user)])
    return user


async def change_state(user_id: int, change: StateChange, *, version: int | None = None) -> User:
    """Apply a state method to a user that is not deleted and is in one of its source states."""
    guards = {"delete_time__isnull": True, "state__in": [int(s) for s in change.sources]}
    async with in_transaction() as connection:
        if not await _write(user_id, version, guards, {"state": int(change.target)}):
            row = await _current(user_id)
            if row.delete_time is not None:
                raise UserNotFound(user_id)
            _check_version(row, version)
            if row.state not in change.sources:
                state = State(row.state).name
                raise InvalidStateTransition(user_id, state, change.method, change.allowed)
            raise _raced(user_id, version)
        user = await get_user(user_id, show_deleted=True)
        event = NewEvent(STATE_EVENTS[change.method], user_id, user)
        await append_events(connection, [event])
    return user


async def purge_deleted(now: datetime, batch_size: int = 500) -> int:
    """Remove soft-deleted users whose purge time is at or before ``now``; how many.

    Their posts go with them (ON DELETE CASCADE); ledger rows name users by
    plain id and stay. Batches keep each transaction (and its locks) short.
    """
    purged = 0
    while True:
        select = Statement("SELECT id FROM users WHERE delete_time IS NOT NULL AND purge_time <=")
        select.add(f"{select.param(now)} ORDER BY purge_time, id LIMIT {int(batch_size)}")
        ids = [row[0] for row in await select.rows()]
        if ids:
            async with in_transaction() as connection:
                # The DELETE re-checks the deletion itself, so an UndeleteUser that
                # commits between the SELECT and the DELETE keeps its user: on
                # PostgreSQL the WHERE is evaluated again on a row changed meanwhile.
                delete = Statement("DELETE FROM users WHERE id IN")
                delete.add(f"({delete.params_of(ids)}) AND delete_time IS NOT NULL")
                delete.add(f"AND purge_time <= {delete.param(now)} RETURNING id")
                # Counted by RETURNING: the row count would include cascaded posts on SQLite.
                gone = sorted(row[0] for row in await delete.returning())
                # No snapshot: what a purge removes must not live on in the feed.
                events = [NewEvent(EventType.USER_PURGED, i, None) for i in gone]
                await append_events(connection, events)
            purged += len(gone)
        if len(ids) < batch_size:
            return purged


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
    return Credentials(_user_of(rows[0]), rows[0][_MORE]) if rows else None


async def get_credentials(user_id: int) -> Credentials:
    """The credentials of a user that is not deleted."""
    statement = Statement(f"SELECT {_COLUMNS}, password_hash FROM users WHERE id =")
    statement.add(f"{statement.param(user_id)} AND {_VISIBLE}")
    rows = await statement.rows()
    if not rows:
        raise UserNotFound(user_id)
    return Credentials(_user_of(rows[0]), rows[0][_MORE])


async def replace_password_hash(user_id: int, new_hash: str, *, expected: str, touch: bool) -> bool:
    """Store a new hash only if the stored one is still ``expected`` (compare-and-set).

    Neither a login's re-hash nor a second concurrent ChangePassword can then
    overwrite a password changed in the meantime. A re-hash is upkeep, not a
    change of the user, so it passes ``touch=False`` and keeps update_time and
    the etag; a password change is a write of the user and changes both.
    """
    changes: dict[str, Any] = {"password_hash": new_hash}
    guards: dict[str, Any] = {"id": user_id, "password_hash": expected}
    if touch:
        changes["update_time"] = datetime.now(UTC)
        changes["version"] = F("version") + 1
        # A password change is for an ACTIVE user that is not deleted, also
        # when it was disabled or deleted while the new password was hashing.
        guards.update(delete_time__isnull=True, state=int(State.ACTIVE))
    else:
        # Upkeep: the user, as anyone can see it, is unchanged; no event.
        return bool(await UserRow.filter(**guards).update(**changes))
    async with in_transaction() as connection:
        if not await UserRow.filter(**guards).update(**changes):
            return False
        user = await get_user(user_id)
        await append_events(connection, [NewEvent(EventType.PASSWORD_CHANGED, user_id, user)])
    return True
