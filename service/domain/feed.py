"""Use cases of the change feed: ListEvents and WatchEvents.

Both take a cursor (the last sequence a consumer saw) and hand out committed
events after it in sequence order, never one twice and never skipping one
(service.db.events explains why on each backend). A cursor into the part of
the feed that retention pruned is refused with CursorExpired rather than
silently moved forward: the consumer has missed events and must relist.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from service.db import events as events_db
from service.domain.errors import CursorExpired, FieldViolation, InvalidArgument
from service.domain.events import MAX_PAGE_SIZE, Event, EventType

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from service.domain.feed_hub import FeedHub

__all__ = [
    "DEFAULT_BOOKMARK_INTERVAL",
    "DEFAULT_PAGE_SIZE",
    "Bookmark",
    "EventPage",
    "Feed",
    "FeedQuery",
    "prune_feed",
]

DEFAULT_PAGE_SIZE = 100
DEFAULT_BOOKMARK_INTERVAL = 10.0
_STORED_TYPES = frozenset(EventType) - {EventType.BOOKMARK}


@dataclass(frozen=True, slots=True)
class FeedQuery:
    after: int
    types: frozenset[EventType]
    user_id: int


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[Event]
    watermark: int


@dataclass(frozen=True, slots=True)
class Bookmark:
    """Nothing matching up to ``sequence``: the consumer may resume from there."""

    sequence: int


def check_query(after: int, types: Sequence[int], user_id: int) -> FeedQuery:
    violations = []
    if after < 0:
        violations.append(FieldViolation("after_sequence", "Sequence must not be negative."))
    if user_id < 0:
        violations.append(FieldViolation("user_id", "User id must not be negative (0: all)."))
    wanted = set()
    for index, number in enumerate(types):
        if number not in {int(t) for t in _STORED_TYPES}:
            violations.append(
                FieldViolation(f"types[{index}]", f"{number} is not a type of stored event.")
            )
        else:
            wanted.add(EventType(number))
    if violations:
        raise InvalidArgument(violations)
    return FeedQuery(after, frozenset(wanted), user_id)


async def _check_cursor(cursor: int) -> None:
    """CursorExpired when events after ``cursor`` were pruned (0 reads what is kept)."""
    if cursor == 0:
        return
    bounds = await events_db.feed_bounds()
    if bounds.expired(cursor):
        raise CursorExpired(cursor, bounds.oldest_sequence, await events_db.feed_end())


class Feed:
    """The change feed of one database, as seen from one server process."""

    def __init__(self, hub: FeedHub, *, bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL):
        self._hub = hub
        self._bookmark_interval = bookmark_interval

    async def list(
        self, after: int, page_size: int, types: Sequence[int], user_id: int
    ) -> EventPage:
        if page_size < 0:
            raise InvalidArgument.field("page_size", "Page size must not be negative.")
        query = check_query(after, types, user_id)
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        await _check_cursor(query.after)
        events, watermark = await events_db.read_events(
            query.after, size, types=query.types, user_id=query.user_id
        )
        return EventPage(events, watermark)

    async def watch(self, query: FeedQuery) -> AsyncIterator[Event | Bookmark]:
        """Every matching committed event after the cursor, then each new one, for ever.

        Yields a Bookmark when nothing matching was sent for the bookmark
        interval. Raises ServerShuttingDown when the server stops, and
        CursorExpired when retention overtakes a consumer that lags that far.
        """
        hub = self._hub
        await _check_cursor(query.after)
        cursor = query.after
        behind = cursor < hub.floor
        quiet_since = time.monotonic()
        while True:
            if behind:
                await _check_cursor(cursor)
            events, cursor = await hub.take(cursor, query.types, query.user_id)
            behind = cursor < hub.floor
            for event in events:
                yield event
            if events:
                quiet_since = time.monotonic()
                continue
            if behind:
                continue
            left = self._bookmark_interval - (time.monotonic() - quiet_since)
            if left <= 0:
                yield Bookmark(cursor)
                quiet_since = time.monotonic()
                continue
            if cursor >= hub.head:
                await hub.wait(left)


async def prune_feed(retention: timedelta, now: datetime | None = None) -> int:
    """Delete events older than ``retention``; how many. Run by ``python -m service purge``."""
    return await events_db.prune_events((now or datetime.now(UTC)) - retention)
