"""One reader of the change feed per process, and any number of cheap subscribers.

As in etcd's watchable store or the Kubernetes watch cache, "what is
committed" is apart from "who is waiting": a single task reads new events
from the database (woken by the database's commit notice, with a periodic
re-read in case a notice is lost) into a small ring buffer, and subscribers
pull from it at their own pace, each holding only its cursor. A subscriber
that falls behind the ring (a slow consumer, or one resuming from long ago)
reads its next page from the database itself, a few at a time, so that no
subscriber ever makes the server buffer the feed for it: memory stays that of
the ring plus one page per subscriber being written, however many watch.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
from typing import TYPE_CHECKING

from service.background import stop_task
from service.db import events as events_db
from service.domain.errors import ServerShuttingDown

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

    from service.domain.events import Event, EventType

    Reader = Callable[..., Awaitable[tuple[list[Event], int]]]

__all__ = ["FeedHub"]

log = logging.getLogger("service.feed")

# Events kept in memory for subscribers that keep up: at least this many, or
# this many bytes of snapshots, whichever is less, and at most twice that.
RING_SIZE = 2048
RING_BYTES = 8 * 1024 * 1024
# Events per database read, by the hub and by a subscriber catching up.
PAGE_SIZE = 500
# Subscribers of one process reading the database at once to catch up.
CATCH_UP_READERS = 4
# Re-reads while this process's own write is not readable yet: the first
# after this many seconds, each later one twice as late, at most MAX_PAUSE.
FIRST_PAUSE = 0.002
MAX_PAUSE = 0.1
# Seconds after the last subscriber's visit that the ring keeps filling. With
# nobody watching, the hub only moves its head (and the floor with it): every
# write's event is not read back and decoded for nobody; a subscriber that
# comes later catches up from the database, as one behind the ring does.
WATCHED_FOR = 30.0
# With nobody watching, the head follows the feed's end at most this often
# (seconds between the starts of two reads). Under a write storm a read per
# write is a database round trip per write for nobody: it cost about a sixth
# of TransferFunds' throughput. What it delays is the NOTIFY that tells other
# processes this one's writes are readable: by this much at most, and only
# while writes come faster than this. A lone write is still followed at once.
FOLLOW_EVERY = 0.01


class FeedHub:
    """The committed feed up to ``head``, and the recent part of it in memory."""

    def __init__(
        self,
        *,
        poll_interval: float = 1.0,
        ring_size: int = RING_SIZE,
        ring_bytes: int = RING_BYTES,
        read: Reader = events_db.read_events,
        end: Callable[[], Awaitable[int]] = events_db.feed_end,
    ) -> None:
        self.poll_interval = poll_interval
        self._read = read
        self._end = end
        self._ring_size = ring_size
        self._ring_bytes = ring_bytes
        self._bytes = 0
        # Between ring_size and twice as many recent events (trimmed in halves:
        # amortised O(1)), with their sequences apart for bisection.
        self._ring: list[Event] = []
        self._sequences: list[int] = []
        # The ring holds every event in (floor, head].
        self.floor = 0
        self.head = 0
        self._wake = asyncio.Event()
        # The highest sequence this process appended that the head has not passed.
        self._pending = 0
        self._pause = FIRST_PAUSE
        # Called when the head passes this process's own writes (PostgreSQL:
        # NOTIFY the other processes).
        self.on_local_commit: Callable[[], None] | None = None
        self._advanced: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._catch_up = asyncio.Semaphore(CATCH_UP_READERS)
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self._visited = -math.inf  # loop time of the last take() or wait()
        self._followed = -math.inf  # loop time of the last unwatched read's start

    def start(self) -> None:
        """Start reading, at the feed's current end: the ring holds nothing older."""
        self._task = asyncio.create_task(self._run(), name="feed-hub")

    def wake(self, pending: int = 0) -> None:
        """Something may have committed: read soon.

        ``pending`` is the highest sequence this process just appended (0 if
        unknown, or for another process's notice): the hub re-reads, quickly
        at first, until its head passes it, since it commits a moment later.
        """
        if pending > self._pending:
            self._pending = pending
            self._pause = FIRST_PAUSE
        self._wake.set()

    async def close(self) -> None:
        """Stop reading and end every subscriber's wait with ServerShuttingDown."""
        self.closed = True
        self._advance()
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        started = False
        while True:
            if started:
                waiting = self._pending > self.head
                pause = min(self._pause, self.poll_interval) if waiting else self.poll_interval
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._wake.wait()
                if waiting:
                    self._pause = min(self._pause * 2, MAX_PAUSE)
            self._wake.clear()
            try:
                if not started:
                    # Until then floor and head are 0: subscribers wait, then catch up.
                    self.floor = self.head = await self._end()
                    started = True
                    self._advance()
                waiting = self._pending > self.head
                await self._read_new()
                if waiting and self._pending <= self.head and self.on_local_commit is not None:
                    self.on_local_commit()
            except Exception as error:
                # The database is away: subscribers wait, the next round retries.
                log.warning("reading the change feed failed: %s", type(error).__name__)
                if not started:
                    await asyncio.sleep(self.poll_interval)

    async def _read_new(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._visited >= WATCHED_FOR:
            pause = self._followed + FOLLOW_EVERY - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            self._followed = loop.time()
            watermark = await self._end()
            if watermark > self.head:
                # The ring must hold every event in (floor, head]: empty it.
                self._ring.clear()
                self._sequences.clear()
                self._bytes = 0
                self.floor = self.head = watermark
                self._advance()
            return
        while True:
            events, watermark = await self._read(self.head, PAGE_SIZE)
            if events:
                self._keep(events)
            if watermark > self.head:
                self.head = watermark
                self._advance()
            if len(events) < PAGE_SIZE:
                return

    def _keep(self, events: list[Event]) -> None:
        """Add to the ring; past twice its bounds, drop the oldest down to them."""
        self._ring.extend(events)
        self._sequences.extend(e.sequence for e in events)
        self._bytes += sum(e.size for e in events)
        if len(self._ring) < 2 * self._ring_size and self._bytes < 2 * self._ring_bytes:
            return
        drop = max(len(self._ring) - self._ring_size, 0)
        kept_bytes = self._bytes - sum(e.size for e in self._ring[:drop])
        while drop < len(self._ring) - 1 and kept_bytes > self._ring_bytes:
            kept_bytes -= self._ring[drop].size
            drop += 1
        if drop:
            self.floor = self._sequences[drop - 1]
            del self._ring[:drop], self._sequences[:drop]
            self._bytes = kept_bytes

    def _advance(self) -> None:
        advanced, self._advanced = self._advanced, asyncio.get_running_loop().create_future()
        advanced.set_result(None)

    async def take(
        self, cursor: int, types: Collection[EventType], user_id: int
    ) -> tuple[list[Event], int]:
        """Matching events after ``cursor`` that are committed now, and the new cursor.

        From the ring when it still covers the cursor, else one page from the database.
        """
        if self.closed:
            raise ServerShuttingDown()
        self._visited = asyncio.get_running_loop().time()
        if cursor >= self.floor:
            wanted = frozenset(types)
            start = bisect.bisect_right(self._sequences, cursor)
            found = [e for e in self._ring[start:] if e.matches(wanted, user_id)]
            return found, max(cursor, self.head)
        async with self._catch_up:
            return await self._read(cursor, PAGE_SIZE, types=types, user_id=user_id)

    async def wait(self, seconds: float) -> None:
        """Until the head moves, ``seconds`` pass, or the hub closes (raises)."""
        if self.closed:
            raise ServerShuttingDown()
        self._visited = asyncio.get_running_loop().time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await asyncio.shield(self._advanced)
        if self.closed:
            raise ServerShuttingDown()
