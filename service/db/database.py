"""Connecting to the database, migrating its schema, and probing it.

Tortoise 1.x keeps its state in a context variable. ``Database`` owns one
``TortoiseContext``; ``activate()`` makes it current for the calling task, and
tasks created while it is current (grpc.aio's handler tasks are created by
``server.start()``) inherit it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tortoise.context import TortoiseContext
from tortoise.exceptions import ConfigurationError, IntegrityError

from service.db.errors import as_unavailable
from service.db.lanes import close_lanes
from service.db.migrate import apply_migrations, apps_config
from service.db.models import ServiceSecret
from service.db.pooled import postgres_config
from service.db.sqlite_reader import close_reader

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

__all__ = ["Database", "DatabaseUnreachable", "is_postgres", "redact", "with_pool_size"]

log = logging.getLogger("service.db")

# Waiting for the database at start-up: the first retry comes after half a
# second, each later one waits twice as long, never more than MAX_RETRY_DELAY,
# so that a database back after an outage is noticed within seconds.
FIRST_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 10.0
# One attempt to connect; asyncpg's own default (60 s) would hide the retries.
CONNECT_TIMEOUT = 10.0


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in {"postgres", "postgresql", "asyncpg"}


def with_pool_size(url: str, size: int, command_timeout: float = 0.0) -> str:
    """Set the asyncpg pool size and command timeout unless the URL already sets them.

    The timeout is asyncpg's, on the client: a server that has hung (frozen,
    or behind a network black hole) cannot enforce a statement_timeout, and
    the query's await would otherwise last until the caller's deadline.
    """
    if not is_postgres(url):
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("maxsize", str(size))
    query.setdefault("minsize", str(min(size, 2)))
    if command_timeout > 0:
        query.setdefault("command_timeout", f"{command_timeout:g}")
    return urlunsplit(parts._replace(query=urlencode(query)))


def _sqlite_path(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return None
    path = url[len("sqlite://") :].split("?", 1)[0]
    return None if path in {"", ":memory:"} else Path(path)


class OneLineDriverErrors(logging.Filter):
    """Turn a driver's traceback about a lost database into one line saying what happens next.

    During an outage asyncpg's pool logs "Failed to restore the pool connection
    floor; retrying" with a full traceback on every attempt, and asyncio logs
    the tracebacks of driver futures nobody waited for ("Future exception was
    never retrieved"), dozens a second across a fleet. A lost connection is an
    expected condition, already reported by health and by UNAVAILABLE: keep
    the record, drop the traceback. Any other exception keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and as_unavailable(error) is not None:
            text = " ".join(str(error).split())
            name = type(error).__name__
            cause = f"{name}: {text}" if text else name
            next_step = (
                "the pool retries by itself"
                if record.name.startswith("asyncpg")
                else "a driver task nobody awaited; calls meanwhile get UNAVAILABLE"
            )
            record.msg = f"{record.getMessage()} ({cause}; {next_step})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_ONE_LINE = OneLineDriverErrors()


def _quiet_driver_tracebacks() -> None:
    """Install the filter once on the loggers that log driver tracebacks (idempotent)."""
    for name in ("asyncpg.pool", "asyncio"):
        logger = logging.getLogger(name)
        if _ONE_LINE not in logger.filters:
            logger.addFilter(_ONE_LINE)


class DatabaseUnreachable(RuntimeError):
    """The database could not be reached at start-up.

    ``retryable`` tells a database that is away (refused, down, starting up)
    from one that refused us for good (a wrong password).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def redact(url: str) -> str:
    """The URL without its password, fit for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class _Retries:
    """Capped exponential backoff with jitter (so that replicas spread out), until a deadline."""

    def __init__(self, wait: float) -> None:
        self._deadline = time.monotonic() + wait
        self._delay = FIRST_RETRY_DELAY

    def next_pause(self) -> float | None:
        """Seconds to sleep before the next attempt; None once the wait is over."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            return None
        pause = min(self._delay * random.uniform(0.8, 1.0), left)
        self._delay = min(self._delay * 2, MAX_RETRY_DELAY)
        return pause


class Database:
    """One database: its Tortoise context, schema and health probe."""

    def __init__(self, url: str, *, pool_size: int = 10, command_timeout: float = 0.0) -> None:
        self.url = with_pool_size(url, pool_size, command_timeout)
        self.safe_url = redact(url)
        self.context = TortoiseContext()
        # The dialect doubles as the connection name: Tortoise caches compiled
        # SQL per (connection name, table) process-wide, so SQLite and
        # PostgreSQL databases in one process must not share a name.
        self.dialect = "postgres" if is_postgres(url) else "sqlite"
        if self.dialect == "postgres":
            _quiet_driver_tracebacks()

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Make this database current for the calling task (and tasks it creates)."""
        with self.context:
            yield

    async def connect(
        self,
        *,
        create_schema: bool = True,
        wait: float = 0.0,
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Initialise Tortoise and check the database answers.

        ``create_schema`` applies pending migrations (``service.db.migrate``);
        False leaves the schema untouched. ``then`` runs last, as part of the
        same attempt (a schema check, reading shared secrets): a database that
        goes away after the first query is retried like one that never
        answered, instead of failing start-up. ``wait`` is how many seconds to keep
        retrying, with capped exponential backoff, a database that cannot be
        reached (refused, down, starting up): 0 fails at once, ``inf`` never
        gives up. An error no retry can fix (a refused password) fails at once.
        Raises DatabaseUnreachable.
        """
        path = _sqlite_path(self.url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        with self.activate():
            if not self.context.inited:
                await self.context.init(
                    config={
                        "connections": {
                            self.dialect: postgres_config(self.url)
                            if self.dialect == "postgres"
                            else self.url
                        },
                        "apps": apps_config(self.dialect),
                    }
                )
            retries = _Retries(wait)
            while True:
                reached = False
                try:
                    # Tortoise connects lazily; fail here, not on the first request.
                    await asyncio.wait_for(self.probe(), CONNECT_TIMEOUT)
                    reached = True
                    if create_schema:
                        await apply_migrations(self)
                    if then is not None:
                        await then()
                    return
                except Exception as error:
                    lost = as_unavailable(error) is not None
                    pause = retries.next_pause() if lost else None
                    if pause is None:
                        if reached and not lost:
                            raise  # a migration failed, not the connection
                        within = f" within {wait:g}s" if wait and lost else ""
                        raise DatabaseUnreachable(
                            f"cannot reach the database at {self.safe_url}{within}:"
                            f" {self.describe(error)}",
                            retryable=lost,
                        ) from error
                    log.warning(
                        "cannot reach the %s database at %s: %s; retrying in %.1fs",
                        self.dialect,
                        self.safe_url,
                        self.describe(error),
                        pause,
                    )
                    await asyncio.sleep(pause)

    def describe(self, error: BaseException) -> str:
        """An error as one log line: its type and message, the password blanked out."""
        text = " ".join(str(error).split()) or type(error).__name__
        if type(error).__name__ not in text:
            text = f"{type(error).__name__}: {text}"
        password = urlsplit(self.url).password
        return text.replace(password, "***") if password else text

    async def probe(self) -> None:
        """Run ``SELECT 1``; raises when the database cannot be reached."""
        await self.context.db(self.dialect).execute_query("SELECT 1")

    def pool_stats(self) -> dict[str, int] | None:
        """Connections of the PostgreSQL pool by state; None on SQLite (one connection)."""
        if self.dialect != "postgres" or not self.context.inited:
            return None
        pool = getattr(self.context.db(self.dialect), "_pool", None)
        if pool is None:
            return None
        size, idle = pool.get_size(), pool.get_idle_size()
        return {"in_use": size - idle, "idle": idle, "max": pool.get_max_size()}

    async def close(self) -> None:
        try:
            db = self.context.db(self.dialect) if self.context.inited else None
        except ConfigurationError:  # closed already
            db = None
        if db is not None:
            # The lanes first: the pool's close waits for every connection.
            await close_lanes(db)
            close_reader(db)
        await self.context.close_connections()

    async def secret(self, name: str, nbytes: int = 32) -> bytes:
        """A random secret made once and shared by every process on this database."""
        with self.activate():
            row = await ServiceSecret.get_or_none(name=name)
            if row is None:
                value = base64.b64encode(secrets.token_bytes(nbytes)).decode()
                try:
                    row = await ServiceSecret.create(name=name, value=value)
                except IntegrityError:
                    # Another process made it first; use theirs.
                    row = await ServiceSecret.get(name=name)
            return base64.b64decode(row.value)
