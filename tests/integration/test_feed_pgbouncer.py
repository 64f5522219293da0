"""The NATS relay's one-at-a-time lock behind PgBouncer in transaction mode.

Through such a pooler a session advisory lock is taken on whichever server
connection was lent for that one statement: with one server connection, as
here, every relay "gets" the lock (it is re-entrant within a session). With
``--events-direct-url`` the lock's session is PostgreSQL's own, and the
second relay waits. PostgreSQL only, by nature, and only where Debian's
pgbouncer is installed (``make ha``; CI installs it).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from service.testing import running_service
from tests.helpers import create_user
from tests.integration.test_feed_relay import Stream, stream  # noqa: F401  (a fixture)
from tests.ops_helpers import free_port
from tests.requirements import not_applicable, require

if TYPE_CHECKING:
    from collections.abc import Iterator

PGBOUNCER = "/usr/sbin/pgbouncer"


def _wait_for_port(port: int, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"PgBouncer did not listen on {port} within {within:.0f}s")
        time.sleep(0.1)


@pytest.fixture
def bouncer(database_url: str) -> Iterator[str]:
    """A PgBouncer (transaction mode, one server connection) in front of the test database."""
    if database_url.startswith("sqlite"):
        not_applicable("PgBouncer pools PostgreSQL connections only")
    if not Path(PGBOUNCER).exists():
        require("pgbouncer", f"no {PGBOUNCER} (make ha installs it)")
    target = urlsplit(database_url)
    port = free_port()
    run = Path(tempfile.mkdtemp(prefix="users-bouncer-"))
    owner = pwd.getpwnam("postgres")
    os.chown(run, owner.pw_uid, owner.pw_gid)
    ini = run / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n* = host={target.hostname} port={target.port or 5432}"
        f" user={target.username or 'postgres'}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\ndefault_pool_size = 1\n"
        "max_client_conn = 200\nlog_connections = 0\nlog_disconnections = 0\n"
    )
    process = subprocess.Popen(
        ["runuser", "-u", "postgres", "--", PGBOUNCER, str(ini)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, within=10)
        netloc = f"{target.username or 'postgres'}@127.0.0.1:{port}"
        yield urlunsplit(target._replace(netloc=netloc, query="statement_cache_size=0"))
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(run, ignore_errors=True)


async def test_behind_pgbouncer_the_direct_url_keeps_one_relay_at_a_time(
    database_url: str,
    bouncer: str,
    stream: Stream,  # noqa: F811
) -> None:
    settings: dict[str, Any] = {**stream.settings(), "events_direct_url": database_url}
    async with running_service(bouncer, **settings) as first:
        await create_user(first.stub)
        await stream.wait_for(1)
        async with running_service(bouncer, **settings) as second:
            for _ in range(3):
                await create_user(second.stub)
            await stream.wait_for(4)
            # Several lock attempts' time (one every 2 s) for the second relay.
            await asyncio.sleep(5)
            relays = [first.server.feed.relay, second.server.feed.relay]
            assert relays[0] is not None
            assert relays[1] is not None
            assert relays[0].published_through >= 4
            assert relays[1].published_through == 0  # waiting for the lock
