"""Inserts of new users: idempotent single creates and all-or-nothing batches.

Uniqueness stays with the unique indexes: a clash is found by inserting and
mapping the violation, and only then, outside the failed transaction (which
PostgreSQL poisons), is it traced back to the entry that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from service.db import statistics
from service.db import users as users_db
from service.db.errors import unique_violation
from service.db.events import append_events
from service.db.models import CreateRequestRow
from service.db.sql import Statement
from service.domain.errors import AlreadyExists, ConcurrencyConflict, EmailTaken, UsernameTaken
from service.domain.events import EventType, NewEvent

if TYPE_CHECKING:
    from collections.abc import Sequence

    from service.domain.entities import User

__all__ = [
    "CreateRequest",
    "NewUserRow",
    "current_user",
    "find_create_request",
    "first_clash",
    "identity_clash",
    "insert_user",
    "insert_user_once",
    "insert_users",
]

# Rows per INSERT: 9 parameters each stays far below SQLite's 32,766 and
# PostgreSQL's 32,767 bound parameters, and 500 rows already amortise the
# round-trip.
_CHUNK = 500
_INSERTED = (
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
class NewUserRow:
    """The columns of a user to insert, already validated and hashed."""

    username: str
    username_key: str
    email: str
    email_key: str
    display_name: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A recorded CreateUser request id: the user it created and the request's fingerprint."""

    user_id: int
    fingerprint: str


class _Claimed(Exception):
    """The request id was recorded by a concurrent call; rolls the transaction back."""


async def insert_user(row: NewUserRow) -> User:
    """Insert a user together with its USER_CREATED event."""
    async with in_transaction() as connection:
        user = await _insert(row)
        await append_events(connection, [NewEvent(EventType.USER_CREATED, user.id, user)])
    return user


async def _insert(row: NewUserRow) -> User:
    return await users_db.insert_user(
        username=row.username,
        username_key=row.username_key,
        email=row.email,
        email_key=row.email_key,
        display_name=row.display_name,
        password_hash=row.password_hash,
    )


async def insert_user_once(row: NewUserRow, request_id: str, fingerprint: str) -> User | None:
    """Insert a user and record its request id in one transaction.

    None when the request id is already recorded (nothing is inserted then);
    UsernameTaken or EmailTaken as for any insert.
    """
    try:
        async with in_transaction() as connection:
            user = await _insert(row)
            try:
                await CreateRequestRow.create(
                    request_id=request_id, user_id=user.id, fingerprint=fingerprint
                )
            except IntegrityError:
                raise _Claimed from None
            await append_events(connection, [NewEvent(EventType.USER_CREATED, user.id, user)])
    except _Claimed:
        return None
    return user


async def find_create_request(request_id: str) -> CreateRequest | None:
    statement = Statement("SELECT user_id, fingerprint FROM user_create_requests WHERE")
    statement.add(f"request_id = {statement.param(request_id)}")
    rows = await statement.rows()
    return CreateRequest(rows[0][0], rows[0][1]) if rows else None


async def current_user(user_id: int) -> User:
    """The user as it is now, soft-deleted or not (what a replayed create returns)."""
    return await users_db.get_user(user_id, show_deleted=True)


async def identity_clash(
    username_key: str | None, email_key: str | None, *, except_id: int | None = None
) -> AlreadyExists | None:
    """The error an insert or update would hit on these identity keys, if any.

    Soft-deleted users count: they keep their username and email until purged.
    """
    keys = [(c, k) for c, k in (("username_key", username_key), ("email_key", email_key)) if k]
    if not keys:
        return None
    statement = Statement("SELECT username_key, email_key FROM users WHERE (")
    statement.add(" OR ".join(f"{column} = {statement.param(key)}" for column, key in keys) + ")")
    if except_id is not None:
        statement.add(f"AND id <> {statement.param(except_id)}")
    rows = await statement.rows()
    if username_key and any(row[0] == username_key for row in rows):
        return UsernameTaken()
    if email_key and any(row[1] == email_key for row in rows):
        return EmailTaken()
    return None


async def first_clash(rows: Sequence[NewUserRow]) -> AlreadyExists | None:
    """The first entry whose username or email an existing user already holds."""
    usernames, emails = set(), set()
    for chunk in _chunks(rows, _CHUNK):
        statement = Statement("SELECT username_key, email_key FROM users WHERE username_key IN")
        statement.add(f"({statement.params_of([r.username_key for r in chunk])})")
        statement.add(f"OR email_key IN ({statement.params_of([r.email_key for r in chunk])})")
        for username_key, email_key in await statement.rows():
            usernames.add(username_key)
            emails.add(email_key)
    for index, row in enumerate(rows):
        if row.username_key in usernames:
            return UsernameTaken(index)
        if row.email_key in emails:
            return EmailTaken(index)
    return None


async def insert_users(rows: Sequence[NewUserRow]) -> list[User]:
    """Insert every user in one transaction, or none; returned in the order given.

    Multi-row ``INSERT ... RETURNING`` (a few statements for 1,000 users, not
    1,000 round-trips); ids are matched back by username key, unique within
    the batch, since neither database promises RETURNING's row order. A
    unique violation is traced to the first clashing entry.
    """
    now = datetime.now(UTC)
    try:
        async with in_transaction() as connection:
            ids: dict[str, int] = {}
            for chunk in _chunks(rows, _CHUNK):
                statement = Statement(f"INSERT INTO users ({', '.join(_INSERTED)}) VALUES")
                statement.add(
                    ", ".join(
                        f"({statement.params_of([*_values(row), 0, now, now])})" for row in chunk
                    )
                )
                statement.add("RETURNING id, username_key")
                ids.update((key, user_id) for user_id, key in await statement.returning())
            users = await users_db.get_users([ids[row.username_key] for row in rows])
            created = [NewEvent(EventType.USER_CREATED, u.id, u) for u in users]
            await append_events(connection, created)
        statistics.users_inserted(len(users))
        return users
    except IntegrityError as error:
        if unique_violation(error) is None:
            raise
    # The transaction is rolled back; find out, outside it, which entry clashed.
    clash = await first_clash(rows)
    # None: the user we clashed with was removed in the meantime.
    raise clash or ConcurrencyConflict()


def _values(row: NewUserRow) -> list[str]:
    return [
        row.username,
        row.username_key,
        row.email,
        row.email_key,
        row.display_name,
        row.password_hash,
    ]


def _chunks(rows: Sequence[NewUserRow], size: int) -> list[Sequence[NewUserRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]
