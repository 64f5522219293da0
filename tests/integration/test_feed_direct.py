"""--events-direct-url: the feed's LISTEN and the relay's lock take it, not the database URL.

On PostgreSQL the direct URL names two hosts, the first of them closed, and
an application_name of its own: the listener and the relay's lock must show
up under that name in pg_stat_activity, found on the second host, while the
pool's connections (the database URL) do not carry it.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from service.config import SettingError, Settings
from service.testing import running_service
from tests.helpers import create_user
from tests.integration.test_feed_relay import Stream, stream  # noqa: F401  (a fixture)
from tests.ops_helpers import eventually, free_port


def direct_url(database_url: str, application_name: str) -> str:
    """The same database, reached through a closed port first, then its real host."""
    parts = urlsplit(database_url)
    credentials, _, host = parts.netloc.rpartition("@")
    closed = f"127.0.0.1:{free_port()}"
    query = f"target_session_attrs=read-write&application_name={application_name}"
    netloc = f"{credentials}@{closed},{host}" if credentials else f"{closed},{host}"
    return urlunsplit(parts._replace(scheme="postgresql", netloc=netloc, query=query))


async def sessions_named(database_url: str, name: str) -> dict[str, int]:
    """The connections called ``name``: the listener's and advisory-lock holders.

    The listener's last query is its LISTEN, or the NOTIFY it sends on the
    same connection after this process's commits.
    """
    connection = await asyncpg.connect(urlunsplit(urlsplit(database_url)._replace(query="")))
    try:
        rows = await connection.fetch(
            """
            SELECT a.query ~ '^(LISTEN|NOTIFY) ' AS listening,
                   EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid
                           AND l.locktype = 'advisory' AND l.granted) AS locking
            FROM pg_stat_activity a
            WHERE a.application_name = $1 AND a.datname = current_database()
            """,
            name,
        )
    finally:
        await connection.close()
    return {
        "connections": len(rows),
        "listening": sum(row["listening"] for row in rows),
        "locking": sum(row["locking"] for row in rows),
    }


async def test_the_listener_and_the_relay_lock_connect_through_the_direct_url(
    database_url: str,
    stream: Stream,  # noqa: F811
) -> None:
    if database_url.startswith("sqlite"):
        # Nothing to divert on SQLite: the setting is refused, not ignored.
        with pytest.raises(SettingError, match="only for a PostgreSQL --database-url"):
            Settings(database_url=database_url, events_direct_url="postgres://u@h:5432/d")
        return
    name = f"users-direct-{uuid.uuid4().hex[:8]}"
    direct = direct_url(database_url, name)
    settings: dict[str, Any] = {**stream.settings(), "events_direct_url": direct}
    async with running_service(database_url, **settings) as app:
        await create_user(app.stub)
        await stream.wait_for(1)
        expected = {"connections": 2, "listening": 1, "locking": 1}

        async def both_direct() -> bool:
            return await sessions_named(database_url, name) == expected

        await eventually(both_direct, within=15, what="the LISTEN and the lock under the name")
        relay = app.server.feed.relay
        assert relay is not None
        assert relay.published_through >= 1
    assert (await sessions_named(database_url, name))["connections"] == 0
