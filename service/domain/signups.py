"""Creating users: one at a time (idempotent, or validate-only) or in atomic batches.

A new user comes with a plaintext password, hashed here in the bounded pool,
or with a ``password_hash`` imported from another system, checked for format
and cost and stored as is (the first successful login re-hashes it).

Idempotency (aip.dev/155): a CreateUser with a request_id records it with the
user in one transaction. A retry with the same fields returns that user as it
is now; other fields are REQUEST_ID_REUSED. The comparison uses a SHA-256 of
the non-secret fields and of an imported hash, never a fast hash of a
password: a plaintext password is checked against the user's stored hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.db import signups as signups_db
from service.db.signups import NewUserRow
from service.domain import rules
from service.domain.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    EmailTaken,
    FieldViolation,
    InvalidArgument,
    RequestIdReused,
    UsernameTaken,
)
from service.domain.money import check_request_id
from service.domain.passwords import check_imported_hash
from service.domain.previews import preview_create

if TYPE_CHECKING:
    from collections.abc import Sequence

    from service.db.signups import CreateRequest
    from service.domain.entities import User
    from service.domain.passwords import PasswordHasher

__all__ = ["MAX_BATCH_CREATE", "NewUser", "Signups"]

MAX_BATCH_CREATE = 1000
_CHECKS_PER_TURN = 50
# Field violations listed in one error (see _invalid_entries).
_MAX_VIOLATIONS = 10


@dataclass(frozen=True, slots=True)
class NewUser:
    """A CreateUserRequest as received: nothing checked yet."""

    username: str = ""
    email: str = ""
    display_name: str = ""
    password: str = ""
    password_hash: str = ""
    request_id: str = ""
    validate_only: bool = False


@dataclass(frozen=True, slots=True)
class _Checked:
    """A NewUser that passed every rule; exactly one of secret and imported is set."""

    username: rules.CheckedUsername
    email: rules.CheckedEmail
    display_name: str
    secret: str | None
    imported: str | None

    def row(self, password_hash: str) -> NewUserRow:
        return NewUserRow(
            username=self.username,
            username_key=self.username.key,
            email=self.email,
            email_key=self.email.key,
            display_name=self.display_name,
            password_hash=password_hash,
        )

    @property
    def fingerprint(self) -> str:
        """What a retry must repeat, without any password (see the module docstring)."""
        imported = None if self.imported is None else hashlib.sha256(self.imported.encode())
        fields = [
            str(self.username),
            str(self.email),
            self.display_name,
            "password" if imported is None else "sha256:" + imported.hexdigest(),
        ]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


class Signups:
    """CreateUser and BatchCreateUsers."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher

    async def create(self, new: NewUser) -> User:
        found = rules.Violations()
        request_id = found.check(check_request_id, new.request_id) if new.request_id else ""
        checked = found.check(_check, new)
        found.raise_if_any()
        if new.validate_only:
            return await preview_create(checked.username, checked.email, checked.display_name)
        if not request_id:
            return await signups_db.insert_user(checked.row(await self._password_hash(checked)))
        previous = await signups_db.find_create_request(request_id)
        if previous is not None:
            return await self._replay(previous, checked)
        row = checked.row(await self._password_hash(checked))
        try:
            user = await signups_db.insert_user_once(row, request_id, checked.fingerprint)
        except AlreadyExists:
            # A concurrent call with this request id may have taken the name first.
            previous = await signups_db.find_create_request(request_id)
            if previous is None:
                raise
            return await self._replay(previous, checked)
        if user is not None:
            return user
        previous = await signups_db.find_create_request(request_id)
        if previous is None:
            # Recorded by a concurrent call whose user was purged at once since.
            raise ConcurrencyConflict()
        return await self._replay(previous, checked)

    async def batch_create(self, entries: Sequence[NewUser]) -> list[User]:
        """Create every entry or none; errors name the entry by its index."""
        if not entries:
            raise InvalidArgument.field("requests", "Give at least one user to create.")
        if len(entries) > MAX_BATCH_CREATE:
            raise InvalidArgument.field(
                "requests", f"Give at most {MAX_BATCH_CREATE} users per batch."
            )
        checked = await _check_batch(entries)
        _refuse_repeats(checked)
        plain = [c.secret for c in checked if c.secret is not None]
        if plain:
            # Hashing costs ~20 ms an entry: find a clash before spending it.
            clash = await signups_db.first_clash([c.row("") for c in checked])
            if clash is not None:
                raise clash
        hashes = iter(await self._hasher.hash_many(plain))
        rows = [c.row(c.imported if c.imported is not None else next(hashes)) for c in checked]
        return await signups_db.insert_users(rows)

    async def _password_hash(self, checked: _Checked) -> str:
        if checked.imported is not None:
            return checked.imported
        assert checked.secret is not None
        return await self._hasher.hash(checked.secret)

    async def _replay(self, previous: CreateRequest, checked: _Checked) -> User:
        """The user an earlier call with this request id created, if this call repeats it."""
        if previous.fingerprint != checked.fingerprint:
            raise RequestIdReused()
        # The password is deliberately not compared: a replay that checked it
        # would let anyone holding a request id guess the user's password
        # without the login throttle, whatever the user's state. A retry is
        # the same request resent; the first call's password stands.
        return await signups_db.current_user(previous.user_id)


def _check(new: NewUser, prefix: str = "") -> _Checked:
    """Every rule of one new user; InvalidArgument names each bad field under ``prefix``."""
    found = rules.Violations()
    username = found.check(rules.check_username, new.username, prefix + "username")
    email = found.check(rules.check_email, new.email, prefix + "email")
    display_name = found.check(rules.check_display_name, new.display_name, prefix + "display_name")
    secret = imported = None
    if new.password and new.password_hash:
        found.check(_refuse, prefix + "password_hash", "Set either password or password_hash.")
    elif new.password_hash:
        imported = found.check(check_imported_hash, new.password_hash, prefix + "password_hash")
    else:
        secret = found.check(rules.check_password, new.password, prefix + "password")
    found.raise_if_any()
    return _Checked(username, email, display_name, secret, imported)


def _refuse(field: str, description: str) -> None:
    raise InvalidArgument.field(field, description)


async def _check_batch(entries: Sequence[NewUser]) -> list[_Checked]:
    """Every entry checked; one InvalidArgument for all the bad entries.

    About 0.3 ms of CPU an entry (mostly e-mail syntax): the loop gets a turn
    every ``_CHECKS_PER_TURN`` entries so that 1,000 do not stall other calls.
    """
    checked: list[_Checked] = []
    violations: list[FieldViolation] = []
    bad_entries: list[int] = []
    for index, entry in enumerate(entries):
        if index and index % _CHECKS_PER_TURN == 0:
            await asyncio.sleep(0)
        prefix = f"requests[{index}]."
        bad = []
        if entry.request_id:
            bad.append(FieldViolation(prefix + "request_id", "Not supported inside a batch."))
        if entry.validate_only:
            bad.append(FieldViolation(prefix + "validate_only", "Not supported inside a batch."))
        try:
            checked.append(_check(entry, prefix))
        except InvalidArgument as error:
            bad.extend(error.violations)
        if bad:
            bad_entries.append(index)
        violations.extend(bad)
    if bad_entries:
        raise _invalid_entries(violations, bad_entries[0], len(bad_entries))
    return checked


def _invalid_entries(
    violations: Sequence[FieldViolation], first_bad: int, bad_entries: int
) -> InvalidArgument:
    """One error for every bad entry, its size bounded whatever their number.

    Status details travel in a trailer, and clients refuse trailers over 8-16
    KiB (RESOURCE_EXHAUSTED instead of our answer): 1,000 bad entries would
    need about 60 KiB. So only the first violations are listed.
    """
    shown = violations[:_MAX_VIOLATIONS]
    metadata = {"index": str(first_bad), "invalid_entries": str(bad_entries)}
    if len(violations) == 1:
        message: str | None = f"{shown[0].field}: {shown[0].description}"
    elif len(violations) > len(shown):
        message = (
            f"{len(violations)} fields of {bad_entries} entries are invalid, from "
            f"requests[{first_bad}] on; the first {len(shown)} are listed."
        )
    else:
        message = None
    return InvalidArgument(shown, message=message, metadata=metadata)


def _refuse_repeats(checked: Sequence[_Checked]) -> None:
    """ALREADY_EXISTS for the first entry that repeats an earlier one's username or email."""
    usernames: dict[str, int] = {}
    emails: dict[str, int] = {}
    for index, entry in enumerate(checked):
        earlier = usernames.setdefault(entry.username.key, index)
        if earlier != index:
            raise UsernameTaken(index, duplicate_of=earlier)
        earlier = emails.setdefault(entry.email.key, index)
        if earlier != index:
            raise EmailTaken(index, duplicate_of=earlier)
