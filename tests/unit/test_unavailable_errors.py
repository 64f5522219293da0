"""Which failures count as "the database cannot be reached" (UNAVAILABLE, safe to retry).

Each case is an error seen (or raised the same way) when PostgreSQL goes away
or refuses connections; anything else must stay a genuine fault (INTERNAL).
"""

from __future__ import annotations

import asyncpg
import pytest
from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError

from service.db.errors import as_unavailable
from service.domain.errors import DatabaseUnavailable

E = asyncpg.exceptions


def wrapped(error: BaseException) -> OperationalError:
    """The error as Tortoise re-raises it, with the driver's error as its cause."""
    try:
        raise OperationalError(str(error)) from error
    except OperationalError as outer:
        return outer


@pytest.mark.parametrize(
    "error",
    [
        E.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        E.AdminShutdownError("terminating connection due to administrator command"),
        E.CannotConnectNowError("the database system is starting up"),
        E.TooManyConnectionsError("sorry, too many clients already"),
        ConnectionRefusedError(111, "Connect call failed"),
        DBConnectionError("can't connect"),
        wrapped(E.ConnectionDoesNotExistError("connection was closed")),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_lost_or_refused_connection_is_unavailable(error):
    assert isinstance(as_unavailable(error), DatabaseUnavailable)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        KeyError("id"),
        IntegrityError("duplicate key value violates unique constraint"),
        E.UniqueViolationError("duplicate key value violates unique constraint"),
        E.UndefinedTableError('relation "users" does not exist'),
        # The same SQLSTATE class as a database refusing connections, but about a query.
        E.ObjectNotInPrerequisiteStateError('currval of sequence "s" is not yet defined'),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_genuine_fault_is_not_unavailable(error):
    assert as_unavailable(error) is None


@pytest.mark.parametrize(
    "error",
    [
        # ALTER DATABASE ... ALLOW_CONNECTIONS false (maintenance): raised by the pool's
        # connect, seen in test_operations_health.
        E.ObjectNotInPrerequisiteStateError(
            'database "users" is not currently accepting connections'
        ),
        # The database was dropped or renamed under the running service.
        E.InvalidCatalogNameError('database "users" does not exist'),
        # Another backend crashed and the server is resetting every connection.
        E.CrashShutdownError("terminating connection because of crash of another server process"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_database_that_refuses_new_connections_is_unavailable(error):
    assert isinstance(as_unavailable(error), DatabaseUnavailable)


def test_a_connection_the_server_dropped_under_an_idle_pool_is_unavailable():
    error = E.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
    assert isinstance(as_unavailable(error), DatabaseUnavailable)


def test_a_timeout_talking_to_the_database_is_unavailable():
    assert isinstance(as_unavailable(TimeoutError()), DatabaseUnavailable)
