"""Use cases of posts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.db import posts as posts_db
from service.domain import rules
from service.domain.pagination import newest_first_page

if TYPE_CHECKING:
    from service.domain.entities import Post
    from service.domain.pagination import PageTokens

__all__ = ["PostPage", "Posts"]


@dataclass(frozen=True, slots=True)
class PostPage:
    posts: list[Post]
    next_page_token: str


class Posts:
    def __init__(self, page_tokens: PageTokens) -> None:
        self._tokens = page_tokens

    async def create(self, user_id: int, title: str, body: str) -> Post:
        found = rules.Violations()
        found.check(rules.check_id, user_id, "user_id")
        checked_title = found.check(rules.check_title, title)
        checked_body = found.check(rules.check_body, body)
        found.raise_if_any()
        return await posts_db.insert_post(user_id, checked_title, checked_body)

    async def list(self, user_id: int, page_size: int, page_token: str) -> PostPage:
        posts, token = await newest_first_page(
            self._tokens, "posts_of", user_id, page_size, page_token, posts_db.list_posts
        )
        return PostPage(posts, token)
