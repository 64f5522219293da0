"""Translation of driver and ORM failures into domain errors."""

from __future__ import annotations

import asyncio

import asyncpg
from tortoise.exceptions import DBConnectionError, IntegrityError

from service.domain.errors import (
    AlreadyExists,
    DatabaseUnavailable,
    EmailTaken,
    UsernameTaken,
    UsersError,
)

__all__ = ["as_unavailable", "unique_violation"]

# Errors that mean "the database cannot serve us right now", not "this call is
# wrong": lost or refused connections (class 08, which is also what PgBouncer
# answers when it cannot reach a server or waited too long for one), operator
# intervention such as shutdown, crash recovery or a refused start-up (class
# 57), a database that is gone, a write sent to a node that is (now) a
# standby (25006: after a demotion, until the pooler follows the new
# primary; nothing was written), and asyncpg's own connection-state failures.
_DRIVER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    DBConnectionError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    *_DRIVER_UNAVAILABLE,
)


def unique_violation(error: IntegrityError) -> AlreadyExists | None:
    """The domain error for a unique-index violation, or None if it is another one.

    PostgreSQL names the constraint (``users_username_key_key``); SQLite names
    the column (``UNIQUE constraint failed: users.username_key``).
    """
    cause = error.__cause__
    text = getattr(cause, "constraint_name", None) or str(error)
    if "username_key" in text:
        return UsernameTaken()
    if "email_key" in text:
        return EmailTaken()
    return None


def as_unavailable(error: BaseException) -> UsersError | None:
    """DatabaseUnavailable if the error (or one it was raised from) is a lost connection."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, _UNAVAILABLE) or _refuses_connections(seen):
            return DatabaseUnavailable()
        seen = seen.__cause__ or seen.__context__
    return None


def _refuses_connections(error: BaseException) -> bool:
    """SQLSTATE 55000 at connect: ``ALTER DATABASE ... ALLOW_CONNECTIONS false``."""
    return isinstance(
        error, asyncpg.exceptions.ObjectNotInPrerequisiteStateError
    ) and "accepting connections" in str(error)
