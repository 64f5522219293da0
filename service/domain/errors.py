"""The one exception hierarchy of the service.

Every error a caller can see is a ``UsersError``; the transport maps each class
to a gRPC status code in one table (``service.api.status``)::

    UsersError
    ├── InvalidArgument          a field breaks a rule (carries field violations)
    │   └── RequestIdReused      an idempotency key came back with other fields
    ├── NotFound
    │   └── UserNotFound
    ├── AlreadyExists
    │   ├── UsernameTaken
    │   └── EmailTaken
    ├── FailedPrecondition
    │   ├── BalanceNotZero
    │   └── InsufficientFunds
    ├── Unauthenticated
    │   └── InvalidCredentials
    ├── ResourceExhausted
    │   └── TooManyAttempts      password checks of one login are locked out for a while
    ├── Aborted
    │   └── ConcurrencyConflict  retries were exhausted; safe to retry
    └── Unavailable
        └── DatabaseUnavailable
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "Aborted",
    "AlreadyExists",
    "BalanceNotZero",
    "ConcurrencyConflict",
    "DatabaseUnavailable",
    "EmailTaken",
    "FailedPrecondition",
    "FieldViolation",
    "InsufficientFunds",
    "InvalidArgument",
    "InvalidCredentials",
    "NotFound",
    "RequestIdReused",
    "ResourceExhausted",
    "TooManyAttempts",
    "Unauthenticated",
    "Unavailable",
    "UserNotFound",
    "UsernameTaken",
    "UsersError",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (``user.email``) and what is wrong."""

    field: str
    description: str


class UsersError(Exception):
    """Base of every error reported to callers; never raised itself."""

    reason: ClassVar[str] = "UNSPECIFIED"
    # Seconds a client should wait before retrying, when the error says so itself.
    retry_after: float | None = None

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(UsersError):
    """The request breaks a rule; ``violations`` names each bad field."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        *,
        message: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one violation")
        self.violations = tuple(violations)
        if message is None:
            fields = ", ".join(dict.fromkeys(v.field for v in violations))
            one = len(violations) == 1
            message = violations[0].description if one else f"Invalid fields: {fields}."
        super().__init__(message, metadata=metadata)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class RequestIdReused(InvalidArgument):
    reason = "REQUEST_ID_REUSED"

    def __init__(self, field: str = "request_id") -> None:
        super().__init__(
            [
                FieldViolation(
                    field,
                    "This request_id was already used with different fields; "
                    "use a new request_id for a new operation.",
                )
            ]
        )


class NotFound(UsersError):
    reason = "NOT_FOUND"


class UserNotFound(NotFound):
    reason = "USER_NOT_FOUND"

    def __init__(self, *user_ids: int, described: str | None = None) -> None:
        ids = ", ".join(str(i) for i in user_ids)
        noun = "User" if len(user_ids) == 1 else "Users"
        verb = "does" if len(user_ids) == 1 else "do"
        super().__init__(
            described or f"{noun} {ids} {verb} not exist.",
            metadata={"user_ids": ids} if ids else None,
        )
        self.user_ids = user_ids


class AlreadyExists(UsersError):
    reason = "ALREADY_EXISTS"


class UsernameTaken(AlreadyExists):
    reason = "USERNAME_TAKEN"

    def __init__(self) -> None:
        super().__init__("That username is already taken.", metadata={"field": "username"})


class EmailTaken(AlreadyExists):
    reason = "EMAIL_TAKEN"

    def __init__(self) -> None:
        super().__init__("That email is already in use.", metadata={"field": "email"})


class FailedPrecondition(UsersError):
    reason = "FAILED_PRECONDITION"


class BalanceNotZero(FailedPrecondition):
    reason = "BALANCE_NOT_ZERO"

    def __init__(self, user_id: int) -> None:
        super().__init__(
            f"User {user_id} still has a balance; transfer it away before deleting the user.",
            metadata={"user_id": str(user_id)},
        )


class InsufficientFunds(FailedPrecondition):
    reason = "INSUFFICIENT_FUNDS"

    def __init__(self, user_id: int) -> None:
        super().__init__(
            f"User {user_id} has insufficient funds for this transfer.",
            metadata={"user_id": str(user_id)},
        )


class Unauthenticated(UsersError):
    reason = "UNAUTHENTICATED"


class InvalidCredentials(Unauthenticated):
    reason = "INVALID_CREDENTIALS"

    def __init__(self) -> None:
        super().__init__("The username or password is incorrect.")


class ResourceExhausted(UsersError):
    reason = "RESOURCE_EXHAUSTED"


class TooManyAttempts(ResourceExhausted):
    reason = "TOO_MANY_ATTEMPTS"

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"Too many failed attempts; retry in {seconds} second{'s' if seconds != 1 else ''}."
        )
        self.retry_after = retry_after


class Aborted(UsersError):
    reason = "ABORTED"


class ConcurrencyConflict(Aborted):
    reason = "CONCURRENCY_CONFLICT"

    def __init__(self) -> None:
        super().__init__("The operation conflicted with concurrent changes; retry it.")


class Unavailable(UsersError):
    reason = "UNAVAILABLE"


class DatabaseUnavailable(Unavailable):
    reason = "DATABASE_UNAVAILABLE"

    def __init__(self) -> None:
        super().__init__("The database is unavailable; retry later.")
