"""Memory of the server with many idle watchers, and with one that never reads.

The server runs in a process of its own so that its resident memory can be
read from /proc apart from the clients'. Events are appended through the
outbox by this process, 1,000 per transaction, to make a large feed quickly.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import grpc.aio
from tortoise.transactions import in_transaction
from users.v1 import events_pb2, user_service_pb2, user_service_pb2_grpc

from service.db.database import Database
from service.db.events import append_events
from service.domain.entities import User
from service.domain.events import EventType, NewEvent
from tests.helpers import create_user
from tests.integration.test_feed_watch import EOF, read_events
from tests.ops_helpers import eventually, free_port, service_environment, service_process

E = events_pb2
WATCHERS = 1000
BIG_NAME = "x" * 2000  # about 2 KB per event


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def append_big_events(database_url: str, count: int) -> None:
    database = Database(database_url, pool_size=2)
    await database.connect(create_schema=False)
    now = datetime.now(UTC)
    user = User(1, "big", "big@example.com", BIG_NAME, 0, now, now)
    try:
        with database.activate():
            for _ in range(count // 1000):
                async with in_transaction() as connection:
                    events = [NewEvent(EventType.USER_UPDATED, 1, user)] * 1000
                    await append_events(connection, events)
    finally:
        await database.close()


def environment(database_url: str) -> dict[str, str]:
    return service_environment(
        USERS_DATABASE_URL=database_url,
        USERS_MAX_CONCURRENT_RPCS="0",
        USERS_ACCESS_LOG="false",
        USERS_EVENTS_POLL_INTERVAL="0.2",
    )


async def test_a_thousand_idle_watchers_cost_little_and_all_get_the_next_event(
    tmp_path, database_url
):
    address = f"127.0.0.1:{free_port()}"
    async with service_process(listen=address, cwd=tmp_path, env=environment(database_url)) as p:
        await p.wait_serving()
        channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
        stubs = [user_service_pb2_grpc.UserServiceStub(c) for c in channels]
        await create_user(stubs[0])
        before = resident_bytes(p.process.pid)
        calls = [
            stubs[i % 4].WatchEvents(E.WatchEventsRequest(types=[E.POST_CREATED]))
            for i in range(WATCHERS)
        ]
        # Every stream is open once its metadata arrived.
        await asyncio.gather(*(c.initial_metadata() for c in calls))
        await asyncio.sleep(1)
        idle = resident_bytes(p.process.pid) - before
        user = await create_user(stubs[0])
        await stubs[0].CreatePost(
            user_service_pb2.CreatePostRequest(user_id=user.id, title="to all", body="watchers")
        )
        got = await asyncio.gather(*(read_events(c, 1, within=30) for c in calls))
        assert all(events[0].post.title == "to all" for events in got)
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close(None)
    print(
        f"{WATCHERS} idle watchers: {idle / 2**20:.1f} MiB ({idle / WATCHERS / 1024:.0f} KiB each)"
    )
    # About 20 KiB each here (mostly gRPC's per-stream state).
    assert idle < WATCHERS * 150 * 1024


async def test_a_watcher_that_never_reads_does_not_make_the_server_buffer_the_feed(
    tmp_path, database_url
):
    address = f"127.0.0.1:{free_port()}"
    async with service_process(listen=address, cwd=tmp_path, env=environment(database_url)) as p:
        await p.wait_serving()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            reader = stub.WatchEvents(E.WatchEventsRequest())
            received = 0

            async def read_all() -> None:
                nonlocal received
                while (message := await reader.read()) is not EOF:
                    assert isinstance(message, events_pb2.Event)
                    if message.type != E.BOOKMARK:
                        received += 1

            reading = asyncio.create_task(read_all())

            async def has(count: int) -> bool:
                return received >= count

            # Warm up: the ring fills and the allocator reaches its working size.
            await append_big_events(database_url, 20_000)
            await eventually(lambda: has(20_000), within=120, what="the reader to catch up")
            warm = resident_bytes(p.process.pid)

            async with grpc.aio.insecure_channel(address) as stalled_channel:
                stalled = user_service_pb2_grpc.UserServiceStub(stalled_channel).WatchEvents(
                    E.WatchEventsRequest()
                )
                await stalled.initial_metadata()
                await append_big_events(database_url, 20_000)  # about 40 MB more of feed
                await eventually(lambda: has(40_000), within=120, what="the reader to catch up")
                await asyncio.sleep(1)
                grown = resident_bytes(p.process.pid) - warm
                stalled.cancel()
            reader.cancel()
            reading.cancel()
    print(f"a stalled watcher over 40 MB of feed: the server grew {grown / 2**20:.1f} MiB")
    # Buffering for the stalled watcher would cost the whole 40 MB and more;
    # flow control stops it after the HTTP/2 window and one page.
    assert grown < 20 * 2**20
