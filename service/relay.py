"""The change feed, relayed to NATS JetStream (``--events-nats-url``).

Exactly one relay publishes at a time across every worker and replica: the
one that holds the relay's lock (a session-level PostgreSQL advisory lock on
a dedicated connection, to ``--events-direct-url`` when set: through a
transaction pooler such a lock holds nothing; on SQLite an exclusive lock on a file beside the
database). The others wait and take over when it goes away.

The holder publishes the feed in sequence order, one event at a time, each
waited for until JetStream acknowledges it (a PubAck), and only then moves
its checkpoint. After a crash it resumes after the later of its checkpoint
(table ``event_marks``) and the last message of this feed in the stream, so
at most the events between the last PubAck and the crash are sent again, and
JetStream drops those: each message's ``Nats-Msg-Id`` is ``<feed id>:<sequence>``
(the feed id is made once per database), and a repeated id within the
stream's duplicate window (2 minutes by default) is not stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any

import nats
import nats.js.errors
from users.v1 import events_pb2

from service.api.feed_methods import event_to_proto
from service.background import stop_task
from service.db import events as events_db
from service.db.feed_listener import dedicated_connection, session_dsn

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.js.client import JetStreamContext

    from service.config import Settings
    from service.db.database import Database
    from service.domain.events import Event
    from service.domain.feed_hub import FeedHub

__all__ = ["SEQUENCE_HEADER", "Relay", "feed_id"]

log = logging.getLogger("service.relay")

SEQUENCE_HEADER = "Users-Event-Sequence"
MSG_ID_HEADER = "Nats-Msg-Id"
# Seconds between attempts to take the lock, and after a failure.
RETRY_SECONDS = 2.0
# Seconds between checks that the lock's connection is still there.
LOCK_CHECK_SECONDS = 5.0


async def feed_id(database: Database) -> str:
    """The id of this database's feed, made once and kept in the database."""
    return (await database.secret("feed_id", 16)).hex()


class Relay:
    def __init__(self, settings: Settings, database: Database, hub: FeedHub) -> None:
        self._settings = settings
        self._database = database
        self._hub = hub
        self._stream = settings.events_nats_stream
        self._subject = settings.events_nats_subject
        self._checkpoint = f"relay:{self._stream}"
        self._task: asyncio.Task[None] | None = None
        # How far this process has published (for tests and logs).
        self.published_through = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="nats-relay")

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                async with self._lock():
                    log.info("relaying the change feed to stream %s", self._stream)
                    await self._relay()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("the NATS relay stopped: %s; retrying", _describe(error))
            await asyncio.sleep(RETRY_SECONDS)

    @contextlib.asynccontextmanager
    async def _lock(self) -> AsyncIterator[None]:
        """Hold the relay's lock for the block; cancel the block if the lock is lost."""
        if self._database.dialect == "postgres":
            async with self._advisory_lock():
                yield
        else:
            async with self._file_lock():
                yield

    @contextlib.asynccontextmanager
    async def _advisory_lock(self) -> AsyncIterator[None]:
        key = int.from_bytes(
            hashlib.sha256(self._checkpoint.encode()).digest()[:8], "big", signed=True
        )
        settings = self._settings
        dsn = session_dsn(settings.database_url, settings.events_direct_url)
        connection = await dedicated_connection(dsn)
        try:
            while True:
                if await connection.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    break
                await asyncio.sleep(RETRY_SECONDS)
            body = asyncio.current_task()
            assert body is not None
            watchdog = asyncio.create_task(self._watch_lock(connection, body))
            try:
                yield
            finally:
                await stop_task(watchdog)
        finally:
            # Closing the session releases the lock.
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    @staticmethod
    async def _watch_lock(connection: Any, body: asyncio.Task[Any]) -> None:
        """The lock lives as long as its session: stop relaying when the session is gone.

        Also when its server is no longer the primary: the other processes
        look for the lock on the new one, where nobody holds it.
        """
        while True:
            await asyncio.sleep(LOCK_CHECK_SECONDS)
            try:
                query = connection.fetchval("SELECT pg_catalog.pg_is_in_recovery()")
                standby = await asyncio.wait_for(query, LOCK_CHECK_SECONDS)
            except Exception:
                standby = None
            if standby is not False:
                log.warning("lost the NATS relay's lock; another process may take over")
                body.cancel()
                return

    @contextlib.asynccontextmanager
    async def _file_lock(self) -> AsyncIterator[None]:
        """SQLite: an exclusive lock on a file beside the database, released when we exit."""
        url = self._database.url
        path = url[len("sqlite://") :].split("?", 1)[0]
        if path in {"", ":memory:"}:
            yield  # a database of this process alone
            return
        lock_path = f"{path}.relay-{self._stream}.lock"
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(RETRY_SECONDS)
            yield
        finally:
            os.close(descriptor)

    async def _relay(self) -> None:
        feed = await feed_id(self._database)
        client = await nats.connect(
            self._settings.events_nats_url,
            name="users-events-relay",
            connect_timeout=5,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
        )
        try:
            js = client.jetstream(timeout=5)
            await self._ensure_stream(js)
            cursor = await self._resume_point(js, feed)
            hub = self._hub
            while True:
                events, watermark = await hub.take(cursor, (), 0)
                for event in events:
                    await self._publish(js, feed, event)
                    self.published_through = event.sequence
                if events:
                    # Every event up to the watermark is in the stream, acknowledged.
                    await events_db.set_mark(self._checkpoint, watermark)
                cursor = watermark
                if not events and cursor >= hub.head:
                    await hub.wait(self._settings.events_poll_interval)
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await js.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self._stream, subjects=[f"{self._subject}.>"])
            log.info("created JetStream stream %s", self._stream)

    async def _resume_point(self, js: JetStreamContext, feed: str) -> int:
        """After the checkpoint, or after this feed's last message in the stream if later."""
        cursor = await events_db.get_mark(self._checkpoint) or 0
        info = await js.stream_info(self._stream)
        last = info.state.last_seq
        if last:
            message = await js.get_msg(self._stream, last)
            headers = message.headers or {}
            if str(headers.get(MSG_ID_HEADER, "")).startswith(feed + ":"):
                cursor = max(cursor, int(headers[SEQUENCE_HEADER]))
        bounds = await events_db.feed_bounds()
        if bounds.expired(cursor):
            log.error(
                "the relay's position %d is older than the feed's retention; events up to"
                " %d were pruned before they were relayed",
                cursor,
                bounds.pruned_through,
            )
        return cursor

    async def _publish(self, js: JetStreamContext, feed: str, event: Event) -> None:
        message: events_pb2.Event = event_to_proto(event)
        subject = f"{self._subject}.{event.type.name}"
        headers = {
            MSG_ID_HEADER: f"{feed}:{event.sequence}",
            SEQUENCE_HEADER: str(event.sequence),
        }
        ack = await js.publish(
            subject, message.SerializeToString(), stream=self._stream, headers=headers
        )
        if ack.duplicate:
            log.info("event %d was already in the stream", event.sequence)


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
