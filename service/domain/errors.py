"""The one exception hierarchy of the service.

Every error a caller can see is a ``UsersError``; the transport maps each class
to a gRPC status code in one table (``service.api.status``)::

    UsersError
    ├── InvalidArgument          a field breaks a rule (carries field violations)
    │   ├── RequestIdReused      an idempotency key came back with other fields
    │   └── InvalidEtag          an etag this service did not issue for that user
    ├── NotFound
    │   └── UserNotFound
    ├── AlreadyExists
    │   ├── UsernameTaken
    │   └── EmailTaken
    ├── FailedPrecondition
    │   ├── BalanceNotZero
    │   ├── InsufficientFunds
    │   ├── InvalidStateTransition  the user's state does not allow the change
    │   ├── UserNotActive        a DISABLED or LOCKED user cannot do this
    │   └── RetentionExpired     too late to undelete
    ├── Unauthenticated
    │   └── InvalidCredentials
    ├── ResourceExhausted
    │   └── TooManyAttempts      password checks of one login are locked out for a while
    ├── Aborted
    │   ├── ConcurrencyConflict  retries were exhausted; safe to retry
    │   └── EtagMismatch         the user changed since the etag was read
    ├── OutOfRange
    │   └── CursorExpired        events after a feed cursor were pruned
    └── Unavailable
        ├── DatabaseUnavailable
        └── ServerShuttingDown   a watch ends because the server stops
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
    "CursorExpired",
    "DatabaseUnavailable",
    "EmailTaken",
    "EtagMismatch",
    "FailedPrecondition",
    "FieldViolation",
    "InsufficientFunds",
    "InvalidArgument",
    "InvalidCredentials",
    "InvalidEtag",
    "InvalidStateTransition",
    "NotFound",
    "OutOfRange",
    "RequestIdReused",
    "ResourceExhausted",
    "RetentionExpired",
    "ServerShuttingDown",
    "TooManyAttempts",
    "Unauthenticated",
    "Unavailable",
    "UserNotActive",
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
    # False when resending the very same request cannot succeed (the caller
    # must re-read first), even though the status code is a retryable one.
    retry_as_is: ClassVar[bool] = True
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


class InvalidEtag(InvalidArgument):
    reason = "INVALID_ETAG"

    def __init__(self, field: str, user_id: int) -> None:
        super().__init__(
            [
                FieldViolation(
                    field,
                    f"This is not an etag of user {user_id}; send the etag of a "
                    "User read from this service, or none.",
                )
            ],
            metadata={"user_id": str(user_id)},
        )


class NotFound(UsersError):
    reason = "NOT_FOUND"


class UserNotFound(NotFound):
    reason = "USER_NOT_FOUND"

    # Status details travel in trailers, which clients cap (8-16 KiB): a list
    # of a thousand ids would turn NOT_FOUND into RESOURCE_EXHAUSTED.
    MESSAGE_IDS = 10
    METADATA_IDS = 100

    def __init__(self, *user_ids: int, described: str | None = None) -> None:
        shown = ", ".join(str(i) for i in user_ids[: self.MESSAGE_IDS])
        more = len(user_ids) - self.MESSAGE_IDS
        if more > 0:
            shown += f" and {more} more"
        noun = "User" if len(user_ids) == 1 else "Users"
        verb = "does" if len(user_ids) == 1 else "do"
        metadata = {}
        if user_ids:
            metadata["user_ids"] = ", ".join(str(i) for i in user_ids[: self.METADATA_IDS])
        if len(user_ids) > self.METADATA_IDS:
            # The list above is cut short; this says by how much.
            metadata["missing_count"] = str(len(user_ids))
        super().__init__(described or f"{noun} {shown} {verb} not exist.", metadata=metadata)
        self.user_ids = user_ids


class AlreadyExists(UsersError):
    reason = "ALREADY_EXISTS"


class UsernameTaken(AlreadyExists):
    """The username is taken; in a batch, ``index`` names the entry (and ``duplicate_of``
    the earlier entry it repeats, when the clash is inside the batch)."""

    reason = "USERNAME_TAKEN"

    def __init__(self, index: int | None = None, *, duplicate_of: int | None = None) -> None:
        message, metadata = _taken("username", "is already taken", index, duplicate_of)
        super().__init__(message, metadata=metadata)


class EmailTaken(AlreadyExists):
    """The email is in use; ``index`` and ``duplicate_of`` as in UsernameTaken."""

    reason = "EMAIL_TAKEN"

    def __init__(self, index: int | None = None, *, duplicate_of: int | None = None) -> None:
        message, metadata = _taken("email", "is already in use", index, duplicate_of)
        super().__init__(message, metadata=metadata)


def _taken(
    field: str, verb: str, index: int | None, duplicate_of: int | None
) -> tuple[str, dict[str, str]]:
    """Message and metadata of a uniqueness clash, naming the batch entry if there is one."""
    if index is None:
        return f"That {field} {verb}.", {"field": field}
    entry = f"requests[{index}]"
    metadata = {"field": f"{entry}.{field}", "index": str(index)}
    if duplicate_of is None:
        return f"Entry {entry}: that {field} {verb}.", metadata
    metadata["duplicate_of"] = str(duplicate_of)
    return (
        f"Entry {entry}: that {field} {verb} by entry requests[{duplicate_of}] of this batch.",
        metadata,
    )


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


class InvalidStateTransition(FailedPrecondition):
    reason = "INVALID_STATE_TRANSITION"

    def __init__(self, user_id: int, state: str, method: str, allowed: str) -> None:
        super().__init__(
            f"User {user_id} is {state}; {method} applies only to a user that is {allowed}.",
            metadata={"user_id": str(user_id), "state": state},
        )


class UserNotActive(FailedPrecondition):
    reason = "USER_NOT_ACTIVE"

    def __init__(self, user_id: int, state: str) -> None:
        super().__init__(
            f"User {user_id} is {state}; only an ACTIVE user can do this.",
            metadata={"user_id": str(user_id), "state": state},
        )


class RetentionExpired(FailedPrecondition):
    reason = "RETENTION_EXPIRED"

    def __init__(self, user_id: int, purge_time: str) -> None:
        super().__init__(
            f"User {user_id} was deleted and its purge time {purge_time} has passed; "
            "it can no longer be undeleted.",
            metadata={"user_id": str(user_id), "purge_time": purge_time},
        )


class Unauthenticated(UsersError):
    reason = "UNAUTHENTICATED"


class InvalidCredentials(Unauthenticated):
    reason = "INVALID_CREDENTIALS"

    def __init__(self) -> None:
        super().__init__("The username or password is incorrect.")


class ResourceExhausted(UsersError):
    reason = "RESOURCE_EXHAUSTED"


class TooManyCalls(ResourceExhausted):
    reason = "TOO_MANY_CALLS"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The server is serving its limit of {limit} calls at once; retry with backoff."
        )


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


class EtagMismatch(Aborted):
    reason = "ETAG_MISMATCH"
    retry_as_is = False

    def __init__(self, user_id: int) -> None:
        super().__init__(
            f"User {user_id} has changed since this etag was read; read it again and retry.",
            metadata={"user_id": str(user_id)},
        )


class Unavailable(UsersError):
    reason = "UNAVAILABLE"


class DatabaseUnavailable(Unavailable):
    reason = "DATABASE_UNAVAILABLE"

    def __init__(self) -> None:
        super().__init__("The database is unavailable; retry later.")


class ServerShuttingDown(Unavailable):
    reason = "SERVER_SHUTTING_DOWN"

    def __init__(self) -> None:
        super().__init__("The server is shutting down; resume from the last sequence received.")


class OutOfRange(UsersError):
    reason = "OUT_OF_RANGE"


class CursorExpired(OutOfRange):
    """Events after the cursor were pruned (past --events-retention-days): relist, then watch."""

    reason = "CURSOR_EXPIRED"
    retry_as_is = False

    def __init__(self, cursor: int, oldest_sequence: int, watermark: int) -> None:
        super().__init__(
            f"Events after sequence {cursor} are no longer kept; the oldest kept is "
            f"{oldest_sequence}. Relist the users, then resume from sequence {watermark}.",
            metadata={"oldest_sequence": str(oldest_sequence), "watermark": str(watermark)},
        )
