"""User queries. Uniqueness is left to the unique indexes: insert, then map the violation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from service.db.errors import unique_violation
from service.db.events import append_events
from service.db.models import UserRow
from service.db.sql import Statement
from service.db.user_rows import COLUMNS, MORE, VISIBLE, to_user, user_of
from service.domain.entities import Credentials, User
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
    "delete_user",
    "find_credentials",
    "find_user",
    "get_credentials",
    "get_user",
    "get_users",
    "insert_user",
    "purge_deleted",
    "replace_password_hash",
    "undelete_user",
    "update_user",
]


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


async def get_user(user_id: int, *, with_posts: bool = False, show_deleted: bool = False) -> User:
    if not with_posts:
        statement = Statement(f"SELECT {COLUMNS} FROM users WHERE id =")
        statement.add(statement.param(user_id))
        if not show_deleted:
            statement.add(f"AND {VISIBLE}")
        rows = await statement.committed_rows()
        if not rows:
            raise UserNotFound(user_id)
        return user_of(rows[0])
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
    statement = Statement(f"SELECT {COLUMNS} FROM users WHERE")
    if statement.dialect == "postgres":
        # One array parameter: one prepared statement (and plan) for any
        # number of ids, where ``IN ($1, ...)`` made one per count.
        statement.add(f"id = ANY({statement.param(wanted)}::bigint[])")
    else:
        statement.add(f"id IN ({statement.params_of(wanted)})")
    statement.add(f"AND {VISIBLE}")
    found = {row[0]: user_of(row) for row in await statement.committed_rows()}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise UserNotFound(*missing)
    return [found[i] for i in ids]


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
    statement = Statement(f"SELECT {COLUMNS}, password_hash FROM users WHERE {column} =")
    rows = await statement.add(statement.param(value)).committed_rows()
    return Credentials(user_of(rows[0]), rows[0][MORE]) if rows else None


async def get_credentials(user_id: int) -> Credentials:
    """The credentials of a user that is not deleted."""
    statement = Statement(f"SELECT {COLUMNS}, password_hash FROM users WHERE id =")
    statement.add(f"{statement.param(user_id)} AND {VISIBLE}")
    rows = await statement.committed_rows()
    if not rows:
        raise UserNotFound(user_id)
    return Credentials(user_of(rows[0]), rows[0][MORE])


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
