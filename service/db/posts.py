"""Post queries."""

from __future__ import annotations

from tortoise.exceptions import IntegrityError

from service.db.models import PostRow, UserRow
from service.db.users import to_post
from service.domain.entities import Post
from service.domain.errors import UserNotFound

__all__ = ["insert_post", "list_posts"]


async def insert_post(user_id: int, title: str, body: str) -> Post:
    try:
        row = await PostRow.create(user_id=user_id, title=title, body=body)
    except IntegrityError:
        # The foreign key is the existence check, so a user deleted
        # concurrently cannot end up with an orphan post.
        raise UserNotFound(user_id) from None
    return to_post(row)


async def list_posts(user_id: int, before_id: int | None, limit: int) -> tuple[list[Post], bool]:
    """Up to ``limit`` posts newest first, older than ``before_id``; and whether more follow."""
    if not await UserRow.exists(id=user_id):
        raise UserNotFound(user_id)
    rows = PostRow.filter(user_id=user_id)
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    page = await rows.order_by("-id").limit(limit + 1)
    return [to_post(row) for row in page[:limit]], len(page) > limit
