"""The feed hub fills its ring only while someone watches, and never loses an event for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from service.domain import feed_hub
from service.domain.feed_hub import FeedHub


@dataclass(frozen=True)
class FakeEvent:
    sequence: int
    size: int = 10

    def matches(self, types: Any, user_id: int) -> bool:
        return True


class FakeFeed:
    """A committed feed in memory, counting the hub's and subscribers' reads."""

    def __init__(self) -> None:
        self.events: list[FakeEvent] = []
        self.reads = 0
        self.ends = 0

    def append(self, count: int) -> None:
        start = len(self.events) + 1
        self.events += [FakeEvent(n) for n in range(start, start + count)]

    async def read(self, after: int, limit: int, **_: Any) -> tuple[list[FakeEvent], int]:
        self.reads += 1
        page = [e for e in self.events if e.sequence > after][:limit]
        return page, page[-1].sequence if len(page) == limit else len(self.events)

    async def end(self) -> int:
        self.ends += 1
        return len(self.events)


async def settle(hub: FeedHub, feed: FakeFeed) -> None:
    """Wake the hub until its head reaches the end of the feed."""
    for _ in range(200):
        if hub.head == len(feed.events):
            return
        hub.wake()
        await asyncio.sleep(0.005)
    raise AssertionError(f"the hub's head stayed at {hub.head}")


@contextlib.asynccontextmanager
async def running_hub(feed: FakeFeed, poll_interval: float = 0.01) -> AsyncIterator[FeedHub]:
    hub = FeedHub(poll_interval=poll_interval, read=feed.read, end=feed.end)  # type: ignore[arg-type]
    hub.start()
    try:
        yield hub
    finally:
        await hub.close()


async def take_all(hub: FeedHub, cursor: int, end: int) -> list[int]:
    taken: list[int] = []
    while cursor < end:
        events, cursor = await hub.take(cursor, (), 0)
        taken += [e.sequence for e in events]
    return taken


async def test_with_nobody_watching_the_hub_moves_its_head_without_reading_events():
    feed = FakeFeed()
    async with running_hub(feed) as hub:
        feed.append(30)
        await settle(hub, feed)
        assert feed.reads == 0
        assert hub.floor == hub.head == 30

        # A subscriber from the start catches up from the database: nothing lost.
        assert await take_all(hub, 0, 30) == list(range(1, 31))


async def test_once_watched_new_events_come_from_the_ring():
    feed = FakeFeed()
    async with running_hub(feed) as hub:
        feed.append(5)
        await settle(hub, feed)
        await hub.take(hub.head, (), 0)  # a subscriber arrives at the head
        feed.append(20)
        await settle(hub, feed)
        reads = feed.reads
        assert await take_all(hub, 5, 25) == list(range(6, 26))
        assert feed.reads == reads, "the subscriber read the database, not the ring"


async def test_after_the_last_visit_the_ring_stops_filling(monkeypatch):
    monkeypatch.setattr(feed_hub, "WATCHED_FOR", 0.05)
    feed = FakeFeed()
    async with running_hub(feed) as hub:
        await hub.take(0, (), 0)
        await asyncio.sleep(0.1)
        feed.append(10)
        await settle(hub, feed)
        reads = feed.reads
        assert hub.floor == 10
        assert await take_all(hub, 0, 10) == list(range(1, 11))
        assert feed.reads > reads


async def test_with_nobody_watching_a_write_storm_is_followed_a_read_per_period(monkeypatch):
    monkeypatch.setattr(feed_hub, "FOLLOW_EVERY", 0.02)
    feed = FakeFeed()
    async with running_hub(feed) as hub:
        await settle(hub, feed)
        loop = asyncio.get_running_loop()
        ends, began = feed.ends, loop.time()
        for _ in range(40):  # a write and its wake every millisecond or so
            feed.append(1)
            hub.wake(pending=len(feed.events))
            await asyncio.sleep(0.001)
        await settle(hub, feed)
        periods = (loop.time() - began) / feed_hub.FOLLOW_EVERY
        assert feed.ends - ends <= periods + 2, f"{feed.ends - ends} reads in {periods:.1f} periods"
        assert hub.head == 40
        assert await take_all(hub, 0, 40) == list(range(1, 41))


async def test_with_nobody_watching_a_lone_write_is_followed_at_once(monkeypatch):
    monkeypatch.setattr(feed_hub, "FOLLOW_EVERY", 0.2)
    feed = FakeFeed()
    # No periodic re-read in between: the last read is the one before the quiet spell.
    async with running_hub(feed, poll_interval=30.0) as hub:
        await settle(hub, feed)
        await asyncio.sleep(0.25)  # quiet for longer than a period
        loop = asyncio.get_running_loop()
        began = loop.time()
        feed.append(1)
        hub.wake(pending=1)
        await settle(hub, feed)
        assert loop.time() - began < 0.1
