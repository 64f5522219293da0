"""validate_only (aip.dev/163): what CreateUser and UpdateUser would return, writing nothing.

The checks are those of the real call, uniqueness and the etag included; only
the write is left out. Soft-deleted users keep their username and email, so
they count as taking them. A race with a concurrent write can still make the
real call fail where the preview passed: a preview is advice, not a lock.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from service.db import signups as signups_db
from service.db import users as users_db
from service.domain.entities import User
from service.domain.errors import EtagMismatch

if TYPE_CHECKING:
    from collections.abc import Mapping

    from service.domain.rules import CheckedEmail, CheckedUsername

__all__ = ["preview_create", "preview_update"]


async def preview_create(username: CheckedUsername, email: CheckedEmail, display_name: str) -> User:
    """The user a create would make; id 0 (and no etag or times on the wire): never stored."""
    clash = await signups_db.identity_clash(username.key, email.key)
    if clash is not None:
        raise clash
    now = datetime.now(UTC)
    return User(
        id=0,
        username=username,
        email=email,
        display_name=display_name,
        balance=0,
        create_time=now,
        update_time=now,
        version=0,
    )


async def preview_update(user_id: int, changes: Mapping[str, str], *, version: int | None) -> User:
    """The user as an update with these checked ``changes`` would leave it.

    Same answers as the update itself: NOT_FOUND for a missing or deleted
    user, ABORTED for a stale etag, ALREADY_EXISTS for a name another user
    holds (the user's own current name is no clash).
    """
    user = await users_db.get_user(user_id)
    if version is not None and user.version != version:
        raise EtagMismatch(user_id)
    clash = await signups_db.identity_clash(
        changes.get("username_key"), changes.get("email_key"), except_id=user_id
    )
    if clash is not None:
        raise clash
    return dataclasses.replace(
        user,
        username=changes.get("username", user.username),
        email=changes.get("email", user.email),
        display_name=changes.get("display_name", user.display_name),
    )
