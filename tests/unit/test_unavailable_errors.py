"""Which failures count as "the database cannot be reached" (UNAVAILABLE, safe to retry).

Each case is an error seen (or raised the same way) when PostgreSQL goes away
or refuses connections; anything else must stay a genuine fault (INTERNAL).
"""

from __future__ import annotations

import asyncpg
import pytest
from tortoise.exceptions import (
    DBConnectionError,
    IntegrityError,
    OperationalError,
    TransactionManagementError,
)

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


def as_tortoise_raises(error: BaseException) -> TransactionManagementError:
    """How Tortoise 1.1 re-raises asyncpg's class-25 errors inside a transaction."""
    try:
        raise TransactionManagementError(error) from error
    except TransactionManagementError as outer:
        return outer


# -- a primary that moved (Patroni switchover or failover behind PgBouncer) ----


@pytest.mark.parametrize(
    "error",
    [
        # A write that reached the demoted node before PgBouncer followed the new primary.
        as_tortoise_raises(
            E.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction")
        ),
        E.ReadOnlySQLTransactionError(
            "cannot execute SELECT FOR UPDATE in a read-only transaction"
        ),
        # PgBouncer's own errors, all SQLSTATE 08P01, while no server answers.
        E.ProtocolViolationError("server conn crashed?"),
        E.ProtocolViolationError("pgbouncer cannot connect to server"),
        E.ProtocolViolationError("query_wait_timeout"),
        E.ProtocolViolationError("server login has been failing, try again later"),
        # A fast shutdown of the old primary during a switchover.
        as_tortoise_raises(E.AdminShutdownError("terminating connection due to administrator")),
    ],
    ids=lambda error: f"{type(error).__name__}:{str(error)[:24]}",
)
def test_a_primary_that_moved_is_unavailable(error):
    assert isinstance(as_unavailable(error), DatabaseUnavailable)


@pytest.mark.parametrize(
    "error",
    [
        # The same SQLSTATE class (25) but our own mistake, not the database's state.
        as_tortoise_raises(E.InFailedSQLTransactionError("current transaction is aborted")),
        E.ActiveSQLTransactionError("CREATE INDEX CONCURRENTLY cannot run inside a transaction"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_misused_transaction_is_not_unavailable(error):
    assert as_unavailable(error) is None
