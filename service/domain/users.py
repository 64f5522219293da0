"""Use cases of user accounts: the rules between the transport and the queries."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from service.db import point_reads, user_listing
from service.db import users as users_db
from service.domain import rules
from service.domain.entities import User, UserQuery
from service.domain.errors import (
    FieldViolation,
    InvalidArgument,
    InvalidCredentials,
    UserNotFound,
)
from service.domain.lifecycle import STATE_CHANGES, State, parse_etag
from service.domain.pagination import check_page_size
from service.domain.previews import preview_update
from service.domain.throttle import account_key, login_key

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from service.domain.pagination import PageTokens
    from service.domain.passwords import PasswordHasher
    from service.domain.throttle import LoginThrottle

__all__ = [
    "DEFAULT_RETENTION",
    "MAX_BATCH_GET",
    "MUTABLE_FIELDS",
    "Accounts",
    "UserPage",
    "purge_deleted_users",
]

# How long a soft-deleted user can be undeleted before purge may remove it.
DEFAULT_RETENTION = timedelta(days=30)

MAX_BATCH_GET = 1000
# UpdateUser may change these; every other User field is output only.
MUTABLE_FIELDS = ("username", "email", "display_name")
_OUTPUT_ONLY = frozenset(
    {
        "id",
        "balance",
        "create_time",
        "update_time",
        "posts",
        "state",
        "etag",
        "delete_time",
        "purge_time",
    }
)
_SORT_FIELDS = frozenset({"id", "create_time", "username"})


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    next_page_token: str
    total_size: int


class Accounts:
    """Reading, changing and authenticating users (creating them: service.domain.signups)."""

    def __init__(
        self,
        hasher: PasswordHasher,
        page_tokens: PageTokens,
        throttle: LoginThrottle,
        *,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        self._hasher = hasher
        self._tokens = page_tokens
        self._throttle = throttle
        self._retention = retention

    async def get(
        self, user_id: int, *, with_posts: bool = False, show_deleted: bool = False
    ) -> User:
        user_id = rules.check_id(user_id)
        if not (with_posts or show_deleted):
            # The common case, coalesced with concurrent GetUsers into one query.
            return await point_reads.load_user(user_id)
        return await users_db.get_user(user_id, with_posts=with_posts, show_deleted=show_deleted)

    async def lookup(
        self, *, username: str | None = None, email: str | None = None, show_deleted: bool = False
    ) -> User:
        if username is not None:
            name = rules.check_username(username)
            user = await users_db.find_user(username_key=name.key, show_deleted=show_deleted)
            described = f"No user has the username {name!r}."
        elif email is not None:
            address = rules.check_email(email)
            user = await users_db.find_user(email_key=address.key, show_deleted=show_deleted)
            described = "No user has that email."
        else:
            raise InvalidArgument.field("username", "Set either username or email.")
        if user is None:
            raise UserNotFound(described=described)
        return user

    async def batch_get(self, ids: Sequence[int]) -> list[User]:
        if not ids:
            raise InvalidArgument.field("ids", "Give at least one id.")
        if len(ids) > MAX_BATCH_GET:
            raise InvalidArgument.field("ids", f"Give at most {MAX_BATCH_GET} ids.")
        bad = [
            FieldViolation(f"ids[{i}]", "Id must be a positive integer.")
            for i, user_id in enumerate(ids)
            if user_id <= 0
        ]
        if bad:
            raise InvalidArgument(bad)
        return await users_db.get_users(ids)

    async def list(
        self,
        *,
        page_size: int,
        page_token: str,
        username_prefix: str,
        created_after: datetime | None,
        created_before: datetime | None,
        order_by: str,
        show_deleted: bool = False,
    ) -> UserPage:
        found = rules.Violations()
        size = found.check(check_page_size, page_size)
        order = found.check(_parse_order_by, order_by)
        prefix = found.check(rules.check_username_prefix, username_prefix)
        found.raise_if_any()
        sort_field, descending = order
        query = UserQuery(
            username_prefix_key=rules.identity_key(prefix),
            created_after=created_after,
            created_before=created_before,
            sort_field=sort_field,
            descending=descending,
            show_deleted=show_deleted,
        )
        scope = {
            "prefix": query.username_prefix_key,
            "after": created_after,
            "before": created_before,
            "sort": sort_field,
            "desc": descending,
        }
        if show_deleted:
            # Only when set, so that tokens issued before the flag existed stay valid.
            scope["deleted"] = True
        position = self._tokens.decode(page_token, scope)
        users, resume_at = await user_listing.list_users(query, position, size)
        next_token = "" if resume_at is None else self._tokens.encode(scope, resume_at)
        return UserPage(users, next_token, await user_listing.count_users(query))

    async def update(
        self,
        user_id: int,
        values: Mapping[str, str],
        paths: Sequence[str],
        *,
        etag: str = "",
        validate_only: bool = False,
    ) -> User:
        rules.check_id(user_id, "user.id")
        version = parse_etag(etag, user_id, "user.etag")
        fields = _mask_fields(values, paths)
        found = rules.Violations()
        changes: dict[str, str] = {}
        if "username" in fields:
            name = found.check(rules.check_username, values["username"], "user.username")
            changes |= {"username": name, "username_key": getattr(name, "key", "")}
        if "email" in fields:
            address = found.check(rules.check_email, values["email"], "user.email")
            changes |= {"email": address, "email_key": getattr(address, "key", "")}
        if "display_name" in fields:
            changes["display_name"] = found.check(
                rules.check_display_name, values["display_name"], "user.display_name"
            )
        found.raise_if_any()
        if validate_only:
            return await preview_update(user_id, changes, version=version)
        return await users_db.update_user(user_id, changes, version=version)

    async def delete(self, user_id: int, *, etag: str = "") -> None:
        """Soft-delete: the user can be undeleted until its purge time."""
        rules.check_id(user_id)
        version = parse_etag(etag, user_id)
        await users_db.delete_user(user_id, retention=self._retention, version=version)

    async def undelete(self, user_id: int, *, etag: str = "") -> User:
        rules.check_id(user_id)
        return await users_db.undelete_user(user_id, version=parse_etag(etag, user_id))

    async def change_state(self, method: str, user_id: int, *, etag: str = "") -> User:
        """Apply one of the state methods (DisableUser, EnableUser, LockUser, UnlockUser)."""
        rules.check_id(user_id)
        version = parse_etag(etag, user_id)
        return await users_db.change_state(user_id, STATE_CHANGES[method], version=version)

    async def authenticate(self, identifier: str, password: str) -> User:
        """The user with these credentials; one answer for every kind of failure.

        Attempts are throttled per login name, existing or not (see
        service.domain.throttle), before any hashing is spent on them.
        """
        credentials = None
        key = _login_key(identifier)
        throttle_key = _login_throttle_key(identifier, key)
        await self._throttle.admit(throttle_key)
        if key is not None:
            credentials = await users_db.find_credentials(**key)
        stored = None if credentials is None else credentials.password_hash
        # The hash is verified whatever the user's state, so that a disabled,
        # locked or deleted user takes as long to refuse as a wrong password.
        result = await self._hasher.verify(rules.normalise_password(password), stored)
        if credentials is None or not result.ok or credentials.user.state != State.ACTIVE:
            raise InvalidCredentials()
        await self._throttle.succeeded(throttle_key)
        if result.new_hash is not None:
            # Outdated scheme or parameters: upgrade while the password is at hand.
            await users_db.replace_password_hash(
                credentials.user.id,
                result.new_hash,
                expected=credentials.password_hash,
                touch=False,
            )
        return credentials.user

    async def change_password(self, user_id: int, current: str, new: str) -> None:
        rules.check_id(user_id)
        secret = rules.check_password(new, "new_password")
        credentials = await users_db.get_credentials(user_id)
        # Ids are not secret (GetUser answers NOT_FOUND), so the check above may
        # come first; guesses of the current password are then throttled per account.
        throttle_key = account_key(user_id)
        await self._throttle.admit(throttle_key)
        result = await self._hasher.verify(
            rules.normalise_password(current), credentials.password_hash
        )
        # Checking the current password is authentication: only ACTIVE users pass.
        if not result.ok or credentials.user.state != State.ACTIVE:
            raise InvalidCredentials()
        await self._throttle.succeeded(throttle_key)
        replaced = await users_db.replace_password_hash(
            user_id,
            await self._hasher.hash(secret),
            expected=credentials.password_hash,
            touch=True,
        )
        if not replaced:
            # The user changed while the new password was hashing: deleted
            # (NOT_FOUND, raised by the look-up), disabled or locked, or given
            # another password; the current one no longer holds.
            await users_db.get_credentials(user_id)
            raise InvalidCredentials()


async def purge_deleted_users(now: datetime | None = None) -> int:
    """Remove for good the deleted users whose purge time has passed; how many.

    Frees their usernames and e-mail addresses. Run by ``python -m service purge``.
    """
    return await users_db.purge_deleted(now or datetime.now(UTC))


def _login_key(identifier: str) -> dict[str, str] | None:
    """The identity key a login name is stored under, or None if it cannot exist."""
    try:
        if "@" in identifier:
            return {"email_key": rules.check_email(identifier).key}
        return {"username_key": rules.check_username(identifier).key}
    except InvalidArgument:
        return None


def _login_throttle_key(identifier: str, key: Mapping[str, str] | None) -> str:
    """Every spelling of one login name shares a key, whether or not it exists."""
    if key is None:
        return login_key("invalid", unicodedata.normalize("NFKC", identifier).casefold())
    [(kind, identity)] = key.items()
    return login_key(kind, identity)


def _parse_order_by(order_by: str) -> tuple[str, bool]:
    words = order_by.split()
    if not words:
        return "id", False
    if (
        len(words) <= 2
        and words[0] in _SORT_FIELDS
        and (len(words) == 1 or words[1].lower() in {"asc", "desc"})
    ):
        return words[0], len(words) == 2 and words[1].lower() == "desc"
    raise InvalidArgument.field(
        "order_by",
        "Order must be one of id, create_time or username, optionally followed by desc.",
    )


def _mask_fields(values: Mapping[str, str], paths: Sequence[str]) -> set[str]:
    """The fields an update mask names (aip.dev/134); no mask means every field given."""
    if not paths:
        fields = {f for f in MUTABLE_FIELDS if values.get(f)}
        if not fields:
            raise InvalidArgument.field("update_mask", "Name the fields to update.")
        return fields
    if "*" in paths:
        return set(MUTABLE_FIELDS)
    bad = [
        FieldViolation(
            "update_mask",
            f"Field {path!r} is output only."
            if path in _OUTPUT_ONLY
            else f"Field {path!r} is unknown; updatable fields are {', '.join(MUTABLE_FIELDS)}.",
        )
        for path in paths
        if path not in MUTABLE_FIELDS
    ]
    if bad:
        raise InvalidArgument(bad)
    return set(paths)
