"""Connecting to the database, migrating its schema, and probing it.

Tortoise 1.x keeps its state in a context variable. ``Database`` owns one
``TortoiseContext``; ``activate()`` makes it current for the calling task, and
tasks created while it is current (grpc.aio's handler tasks are created by
``server.start()``) inherit it.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tortoise.context import TortoiseContext
from tortoise.exceptions import IntegrityError

from service.db.migrate import apply_migrations, apps_config
from service.db.models import ServiceSecret

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Database", "DatabaseUnreachable", "is_postgres", "redact", "with_pool_size"]


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in {"postgres", "postgresql", "asyncpg"}


def with_pool_size(url: str, size: int) -> str:
    """Set the asyncpg pool size unless the URL already sets it."""
    if not is_postgres(url):
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("maxsize", str(size))
    query.setdefault("minsize", str(min(size, 2)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _sqlite_path(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return None
    path = url[len("sqlite://") :].split("?", 1)[0]
    return None if path in {"", ":memory:"} else Path(path)


class DatabaseUnreachable(RuntimeError):
    """The database could not be reached at start-up."""


def redact(url: str) -> str:
    """The URL without its password, fit for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Database:
    """One database: its Tortoise context, schema and health probe."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = with_pool_size(url, pool_size)
        self.safe_url = redact(url)
        self.context = TortoiseContext()
        # The dialect doubles as the connection name: Tortoise caches compiled
        # SQL per (connection name, table) process-wide, so SQLite and
        # PostgreSQL databases in one process must not share a name.
        self.dialect = "postgres" if is_postgres(url) else "sqlite"

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Make this database current for the calling task (and tasks it creates)."""
        with self.context:
            yield

    async def connect(self, *, create_schema: bool = True) -> None:
        """Initialise Tortoise and check the database answers.

        ``create_schema`` applies pending migrations (``service.db.migrate``);
        False leaves the schema untouched.
        """
        path = _sqlite_path(self.url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        with self.activate():
            await self.context.init(
                config={
                    "connections": {self.dialect: self.url},
                    "apps": apps_config(self.dialect),
                }
            )
            # Tortoise connects lazily; fail here, not on the first request.
            try:
                await self.probe()
            except Exception as error:
                raise DatabaseUnreachable(
                    f"cannot reach the database at {self.safe_url}: {error}"
                ) from error
        if create_schema:
            await apply_migrations(self)

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
