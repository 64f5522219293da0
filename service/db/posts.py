"""Post queries."""

from __future__ import annotations

from datetime import UTC, datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from service.db.events import append_events
from service.db.models import PostRow, UserRow
from service.db.sql import Statement
from service.db.user_rows import to_post
from service.domain.entities import Post
from service.domain.errors import UserNotActive, UserNotFound
from service.domain.events import EventType, NewEvent
from service.domain.lifecycle import State

__all__ = ["insert_post", "list_posts"]


async def insert_post(user_id: int, title: str, body: str) -> Post:
    """Insert a post for an ACTIVE user; the state check is part of the INSERT.

    ``INSERT ... SELECT ... FROM users WHERE state = ACTIVE`` writes nothing
    for a user that is disabled, locked or deleted at that moment, so a post
    cannot slip in next to a concurrent DisableUser or DeleteUser.
    """
    now = datetime.now(UTC)
    try:
        async with in_transaction() as connection:
            # Built inside the transaction: a Statement binds the current connection.
            rows = await _insert(user_id, title, body, now).returning()
            if rows:
                post = Post(rows[0][0], user_id=user_id, title=title, body=body, create_time=now)
                await append_events(connection, [NewEvent(EventType.POST_CREATED, user_id, post)])
                return post
    except IntegrityError:
        # The foreign key is the last word: a user purged concurrently
        # cannot end up with an orphan post.
        raise UserNotFound(user_id) from None
    row = await UserRow.get_or_none(id=user_id, delete_time__isnull=True)
    if row is None:
        raise UserNotFound(user_id)
    raise UserNotActive(user_id, State(row.state).name)


def _insert(user_id: int, title: str, body: str, now: datetime) -> Statement:
    statement = Statement("INSERT INTO posts (user_id, title, body, create_time)")
    statement.add(f"SELECT id, {statement.params_of([title, body, now])} FROM users")
    statement.add(f"WHERE id = {statement.param(user_id)} AND delete_time IS NULL")
    statement.add(f"AND state = {statement.param(int(State.ACTIVE))} RETURNING id")
    return statement


async def list_posts(user_id: int, before_id: int | None, limit: int) -> tuple[list[Post], bool]:
    """Up to ``limit`` posts newest first, older than ``before_id``; and whether more follow."""
    if not await UserRow.exists(id=user_id, delete_time__isnull=True):
        raise UserNotFound(user_id)
    rows = PostRow.filter(user_id=user_id)
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    page = await rows.order_by("-id").limit(limit + 1)
    return [to_post(row) for row in page[:limit]], len(page) > limit
