"""OpenTelemetry spans around the database work: one CLIENT span per statement.

Tortoise has no query hooks, so ``install()`` wraps the methods through which
its SQLite and asyncpg clients send every statement (and begin, commit and
roll back transactions), once per process, and only when a server traces.
A wrapped method makes a span only while ``database_tracer`` holds a tracer,
which the call wrapper of a tracing server sets for the duration of a call:
queries outside calls (health probes, migrations) make none.

Spans carry the operation and table (``SELECT users``), never the SQL text:
Tortoise may render values into it, and values include password hashes.
Failures record the exception type only, for the same reason.
"""

from __future__ import annotations

import contextlib
import functools
import re
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from contextlib import AbstractContextManager

    from opentelemetry.trace import Tracer

__all__ = ["database_tracer", "describe", "install", "statement_span"]

database_tracer: ContextVar[Tracer | None] = ContextVar("database_tracer", default=None)

# Methods that send one statement (or a batch of one statement) to the driver.
_STATEMENTS = (
    "execute_insert",
    "execute_many",
    "execute_query",
    "execute_query_dict",
    "execute_script",
)
# Transaction control, on the transaction wrappers.
_TRANSACTIONS = {
    "begin": "BEGIN",
    "commit": "COMMIT",
    "rollback": "ROLLBACK",
    "savepoint": "SAVEPOINT",
    "release_savepoint": "RELEASE SAVEPOINT",
    "savepoint_rollback": "ROLLBACK TO SAVEPOINT",
}
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE|JOIN)\s+"?([A-Za-z_][A-Za-z0-9_]*)"?', re.IGNORECASE)
_installed = False


def describe(query: str) -> tuple[str, str]:
    """The operation and first table of a statement: ``("SELECT", "users")``."""
    words = query.lstrip().split(None, 1)
    operation = words[0].upper() if words else ""
    table = _TABLE.search(query)
    return operation, table.group(1) if table else ""


def install() -> None:
    """Wrap Tortoise's SQLite and asyncpg clients (once per process)."""
    global _installed
    if _installed:
        return
    from tortoise.backends.asyncpg import client as asyncpg_client
    from tortoise.backends.sqlite import client as sqlite_client

    clients = (
        (sqlite_client.SqliteClient, "sqlite"),
        (sqlite_client.SqliteTransactionWrapper, "sqlite"),
        (asyncpg_client.AsyncpgDBClient, "postgresql"),
        (asyncpg_client.TransactionWrapper, "postgresql"),
    )
    for cls, system in clients:
        # Only methods defined on the class itself: inherited ones are wrapped
        # where they are defined, and must not get two spans.
        for name in _STATEMENTS:
            if name in vars(cls):
                setattr(cls, name, _traced_statement(vars(cls)[name], system))
        for name, operation in _TRANSACTIONS.items():
            if name in vars(cls):
                setattr(cls, name, _traced_transaction(vars(cls)[name], system, operation))
    _installed = True


def _traced_statement(
    method: Callable[..., Awaitable[Any]], system: str
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def traced(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        with statement_span(system, query):
            return await method(self, query, *args, **kwargs)

    return traced


def _traced_transaction(
    method: Callable[..., Awaitable[Any]], system: str, operation: str
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracer = database_tracer.get()
        if tracer is None:
            return await method(self, *args, **kwargs)
        with _span(tracer, system, operation, ""):
            return await method(self, *args, **kwargs)

    return traced


# Reusable: entering and leaving it does nothing. An untraced statement (the
# common case) then costs one context-variable lookup, not a generator.
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def statement_span(system: str, query: str) -> AbstractContextManager[None]:
    """The span of one statement, sent by Tortoise or not (none outside traced calls)."""
    tracer = database_tracer.get()
    if tracer is None:
        return _NO_SPAN
    operation, table = describe(query)
    return _span(tracer, system, operation, table)


@contextlib.contextmanager
def _span(tracer: Tracer, system: str, operation: str, table: str) -> Iterator[None]:
    """A CLIENT span named as OpenTelemetry's database conventions say; errors by type only."""
    attributes = {"db.system.name": system, "db.operation.name": operation}
    if table:
        attributes["db.collection.name"] = table
    with tracer.start_as_current_span(
        f"{operation} {table}".strip() or system,
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except BaseException as error:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR))
            raise
