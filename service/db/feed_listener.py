"""Commit notices of the change feed: PostgreSQL LISTEN, or an in-process call on SQLite.

A notice is only a wake-up: the feed hub then reads the table, which is the
truth, and re-reads it periodically anyway, so a notice lost while the
connection was down costs latency, never an event.

LISTEN needs a connection of its own for as long as it listens: a pooled one
goes back to the pool, and its registration with it (FACTS). So does a
session-level advisory lock (the relay's), hence ``dedicated_connection``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.background import stop_task
from service.db.events import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CommitListener", "dedicated_connection", "host_dsns", "session_dsn"]

log = logging.getLogger("service.feed")


def session_dsn(database_url: str, direct_url: str = "") -> str:
    """The asyncpg DSN of the feed's session-bound connections.

    ``direct_url`` (``--events-direct-url``) is an asyncpg DSN already and
    goes as it is, query included (``target_session_attrs``). The database
    URL's query holds pool sizes and other Tortoise or asyncpg pool options,
    which asyncpg would send to the server as settings: it is left out.
    """
    if direct_url:
        return urlunsplit(urlsplit(direct_url)._replace(scheme="postgresql"))
    return urlunsplit(urlsplit(database_url)._replace(scheme="postgresql", query=""))


def host_dsns(dsn: str) -> list[str]:
    """One DSN per host of a multi-host DSN, in order, each keeping the rest of it.

    asyncpg tries a multi-host DSN's hosts in turn, but under one timeout for
    all: a first host that drops packets would use it up on every attempt and
    the next host, the primary perhaps, would never be tried.
    """
    parts = urlsplit(dsn)
    credentials, at, hosts = parts.netloc.rpartition("@")
    return [urlunsplit(parts._replace(netloc=credentials + at + host)) for host in hosts.split(",")]


async def dedicated_connection(dsn: str, connect_timeout: float = 10.0) -> asyncpg.Connection[Any]:
    """A connection outside the pool, to the first host of ``dsn`` that fits it.

    Each call looks again, host by host: after a failover the
    ``target_session_attrs=read-write`` of a direct URL finds the new primary
    and passes over the demoted one.
    """
    last_error: Exception | None = None
    for host_dsn in host_dsns(dsn):
        try:
            return await asyncpg.connect(host_dsn, timeout=connect_timeout)
        except Exception as error:  # refused, timed out, not a primary: the next host
            last_error = error
    assert last_error is not None
    raise last_error


def _resolver(future: asyncio.Future[None]) -> Callable[[object], None]:
    def resolve(_: object) -> None:
        if not future.done():
            future.set_result(None)

    return resolve


class CommitListener:
    """LISTEN on one dedicated connection, reconnecting after a loss, calling ``wake``.

    ``notify()`` tells the other processes that this one committed events,
    with a NOTIFY on the same connection after the commit, coalesced: never
    inside the write transaction, whose commit it would serialise.
    """

    def __init__(self, dsn: str, wake: Callable[[], None], *, retry: float = 1.0) -> None:
        self._dsn = dsn
        self._wake = wake
        self._retry = retry
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection[Any] | None = None
        self._notify = asyncio.Event()
        self._notifier: asyncio.Task[None] | None = None

    def notify(self) -> None:
        self._notify.set()

    async def _send_notices(self) -> None:
        while True:
            await self._notify.wait()
            self._notify.clear()
            connection = self._connection
            if connection is None or connection.is_closed():
                continue  # the others' periodic re-read will do
            try:
                await connection.execute(f"NOTIFY {NOTIFY_CHANNEL}")
            except Exception as error:
                log.warning("cannot NOTIFY the other processes: %s", type(error).__name__)

    def start(self) -> None:
        self._notifier = asyncio.create_task(self._send_notices(), name="feed-notifier")
        self._task = asyncio.create_task(self._run(), name="feed-listener")

    async def close(self) -> None:
        await stop_task(self._notifier)
        await stop_task(self._task)
        self._notifier = self._task = None

    async def _run(self) -> None:
        while True:
            connection = None
            try:
                connection = await dedicated_connection(self._dsn)
                lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                connection.add_termination_listener(_resolver(lost))
                await connection.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake())
                self._connection = connection
                # Whatever committed while we were not listening.
                self._wake()
                await lost
                log.warning("the feed's LISTEN connection was lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("cannot LISTEN for feed notices: %s", type(error).__name__)
            finally:
                self._connection = None
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            await asyncio.sleep(self._retry)
