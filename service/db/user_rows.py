"""Rows of the users table as entities: the selected columns and their mapping."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.db.sql import as_datetime
from service.domain.entities import Post, User
from service.domain.lifecycle import State

if TYPE_CHECKING:
    from collections.abc import Sequence

    from service.db.models import PostRow, UserRow

__all__ = ["COLUMNS", "MORE", "VISIBLE", "state_of", "to_post", "to_user", "user_of"]

# Soft-deleted users are left out of every read that does not ask for them.
VISIBLE = "delete_time IS NULL"

COLUMNS = (
    "id, username, email, display_name, balance, create_time, update_time,"
    " state, version, delete_time, purge_time"
)
# Index of the first column a query selects after ``COLUMNS``.
MORE = 11


def state_of(stored: int, delete_time: object) -> State:
    """The state callers see: DELETED overrides the stored one while delete_time is set."""
    return State.DELETED if delete_time is not None else State(stored)


def user_of(row: Sequence[Any]) -> User:
    """A user from a row of ``COLUMNS``."""
    delete_time, purge_time = row[9], row[10]
    return User(
        id=row[0],
        username=row[1],
        email=row[2],
        display_name=row[3],
        balance=row[4],
        create_time=as_datetime(row[5]),
        update_time=as_datetime(row[6]),
        state=state_of(row[7], delete_time),
        version=row[8],
        delete_time=None if delete_time is None else as_datetime(delete_time),
        purge_time=None if purge_time is None else as_datetime(purge_time),
    )


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
        state=state_of(row.state, row.delete_time),
        version=row.version,
        delete_time=row.delete_time,
        purge_time=row.purge_time,
    )


def to_post(row: PostRow) -> Post:
    return Post(
        id=row.id,
        user_id=row.user_id,
        title=row.title,
        body=row.body,
        create_time=row.create_time,
    )
