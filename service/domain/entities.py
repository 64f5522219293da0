"""What the domain works with: plain immutable records, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.domain.lifecycle import State, etag_of

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["Attempts", "Credentials", "Post", "Transfer", "User", "UserQuery"]


@dataclass(frozen=True, slots=True)
class Post:
    id: int
    user_id: int
    title: str
    body: str
    create_time: datetime


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    email: str
    display_name: str
    balance: int
    create_time: datetime
    update_time: datetime
    # None when posts were not loaded (basic view), a tuple otherwise.
    posts: tuple[Post, ...] | None = None
    # DELETED whenever delete_time is set (see service.domain.lifecycle).
    state: State = State.ACTIVE
    version: int = 1
    delete_time: datetime | None = None
    purge_time: datetime | None = None

    @property
    def etag(self) -> str:
        return etag_of(self.id, self.version)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user together with its password hash; never leaves the domain."""

    user: User
    password_hash: str


@dataclass(frozen=True, slots=True)
class Transfer:
    id: int
    from_user_id: int
    to_user_id: int
    amount: int
    request_id: str
    create_time: datetime


@dataclass(frozen=True, slots=True)
class UserQuery:
    """Filters and order of ListUsers, already validated.

    ``sort_field`` is one of ``id``, ``create_time`` and ``username``; ties
    are broken by id, so the order is total and keyset pagination is stable.
    """

    username_prefix_key: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    sort_field: str = "id"
    descending: bool = False
    show_deleted: bool = False


@dataclass(frozen=True, slots=True)
class Attempts:
    """What the login throttle remembers of one key; times in ms since the epoch."""

    failures: int
    delay_ms: int
    blocked_until_ms: int
    last_attempt_ms: int
