"""ListEvents and WatchEvents: the change feed on the wire.

WatchEvents is a server stream, which the call wrapper (service.api.calls)
does not wrap, so it maps its own errors here, the same way: a domain error
becomes its status, a lost database UNAVAILABLE, anything else INTERNAL
(logged). grpc.aio writes each yielded message before it asks for the next,
and the write waits for HTTP/2 flow control: a consumer that stops reading
stops its own stream, not the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp
from users.v1 import events_pb2

from service.api.mappers import post_to_proto, transfer_to_proto, user_to_proto
from service.api.status import internal_status, to_status
from service.domain.entities import Post, Transfer, User
from service.domain.errors import UsersError
from service.domain.events import Event
from service.domain.feed import Bookmark, check_query

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from service.domain.feed import Feed

__all__ = ["FeedMethods", "event_to_proto"]

log = logging.getLogger("service.errors")


def event_to_proto(event: Event | Bookmark) -> events_pb2.Event:
    if isinstance(event, Bookmark):
        return events_pb2.Event(sequence=event.sequence, type=events_pb2.BOOKMARK)
    stamp = Timestamp()
    stamp.FromDatetime(event.create_time)
    message = events_pb2.Event(
        sequence=event.sequence,
        type=events_pb2.EventType.ValueType(int(event.type)),
        create_time=stamp,
        user_id=event.user_id,
        actor=event.actor,
    )
    resource = event.resource
    if isinstance(resource, User):
        message.user.CopyFrom(user_to_proto(resource))
    elif isinstance(resource, Transfer):
        message.transfer.CopyFrom(transfer_to_proto(resource))
    elif isinstance(resource, Post):
        message.post.CopyFrom(post_to_proto(resource))
    return message


class FeedMethods:
    """The feed's methods of users.v1.UserService (mixed into the servicer)."""

    _feed: Feed
    _classify: Callable[[BaseException], UsersError | None]

    async def ListEvents(
        self, request: events_pb2.ListEventsRequest, context: Any
    ) -> events_pb2.ListEventsResponse:
        page = await self._feed.list(
            request.after_sequence, request.page_size, list(request.types), request.user_id
        )
        return events_pb2.ListEventsResponse(
            events=[event_to_proto(e) for e in page.events], watermark=page.watermark
        )

    async def WatchEvents(
        self, request: events_pb2.WatchEventsRequest, context: Any
    ) -> AsyncIterator[events_pb2.Event]:
        try:
            query = check_query(request.after_sequence, list(request.types), request.user_id)
            async for event in self._feed.watch(query):
                yield event_to_proto(event)
        except UsersError as error:
            await context.abort_with_status(to_status(error))
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as error:
            mapped = self._classify(error)
            if mapped is None:
                log.exception("unexpected error in WatchEvents")
                await context.abort_with_status(internal_status())
            else:
                log.warning("WatchEvents failed: %s (%s)", mapped.reason, type(error).__name__)
                await context.abort_with_status(to_status(mapped))
