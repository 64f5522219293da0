"""Many writers, one live follower: every acknowledged write is seen exactly once, in order.

On PostgreSQL transactions commit in another order than they write: some
writers here append their event and then wait a little before they commit,
so that later writers commit first. A feed that handed out a cursor past an
uncommitted event would lose those events for the follower.
"""

from __future__ import annotations

import asyncio
import random

import grpc.aio
from tortoise.transactions import in_transaction
from users.v1 import events_pb2, user_service_pb2, user_service_pb2_grpc

from service.db.events import append_events
from service.domain.entities import Post
from service.domain.events import EventType, NewEvent
from service.testing import running_service
from tests.helpers import create_user
from tests.integration.test_feed_outbox import all_events, head
from tests.ops_helpers import eventually

E = events_pb2
WRITERS = 12
WRITES_EACH = 25
SLOW_WRITERS = 4


async def test_a_live_follower_sees_every_acknowledged_write_once_in_order(database_url):
    async with running_service(database_url, db_pool_size=20) as running:
        stub = running.stub
        users = [await create_user(stub) for _ in range(WRITERS)]
        start = await head(stub)
        seen: list[events_pb2.Event] = []
        channel = grpc.aio.insecure_channel(running.address)
        follower = user_service_pb2_grpc.UserServiceStub(channel)
        call = follower.WatchEvents(
            E.WatchEventsRequest(after_sequence=start, types=[E.POST_CREATED])
        )

        async def follow() -> None:
            async for event in call:
                seen.append(event)

        following = asyncio.create_task(follow())
        acknowledged: set[int] = set()

        async def writer(user_id: int) -> None:
            for n in range(WRITES_EACH):
                post = await stub.CreatePost(
                    user_service_pb2.CreatePostRequest(user_id=user_id, title=f"{n}", body="b")
                )
                acknowledged.add(post.id)

        async def slow_writer(number: int) -> None:
            # Appends through the outbox and commits a moment later.
            for n in range(WRITES_EACH):
                post_id = 10_000_000 + number * 1000 + n
                post = Post(post_id, users[0].id, "slow", "b", users[0].create_time.ToDatetime())
                async with in_transaction() as connection:
                    event = NewEvent(EventType.POST_CREATED, users[0].id, post)
                    await append_events(connection, [event])
                    await asyncio.sleep(random.uniform(0, 0.03))
                acknowledged.add(post_id)

        # Tasks started here inherit the server's database context.
        with running.server.database.activate():
            slow = [asyncio.create_task(slow_writer(i)) for i in range(SLOW_WRITERS)]
        await asyncio.gather(*(writer(u.id) for u in users), *slow)
        total = WRITES_EACH * (WRITERS + SLOW_WRITERS)
        assert len(acknowledged) == total

        async def caught_up() -> bool:
            return len(seen) >= total

        await eventually(caught_up, within=30, what=f"the follower to see {total} events")
        await asyncio.sleep(0.5)  # nothing more may come
        call.cancel()
        following.cancel()
        await channel.close(None)

        sequences = [e.sequence for e in seen]
        assert sequences == sorted(sequences), "out of order"
        assert len(set(sequences)) == len(sequences), "an event came twice"
        assert sorted(e.post.id for e in seen) == sorted(acknowledged), "lost or extra events"
        # A reader paging through ListEvents afterwards sees the same feed.
        listed = await all_events(stub, start, types=[E.POST_CREATED])
        assert [e.sequence for e in listed] == sequences
