"""WatchEvents: resume, live events, filters, bookmarks, expiry, restarts and shutdown."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta

import grpc
import grpc.aio
import pytest
from users.v1 import events_pb2, user_service_pb2, user_service_pb2_grpc

from service.domain.feed import prune_feed
from service.testing import running_service
from tests.helpers import assert_error, create_user, failure
from tests.integration.test_feed_outbox import all_events, head
from tests.ops_helpers import free_port, service_environment, service_process

E = events_pb2


EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


async def read(call, within: float = 10.0) -> events_pb2.Event:
    message = await asyncio.wait_for(call.read(), within)
    assert message is not EOF, "the stream ended"
    assert isinstance(message, events_pb2.Event)
    return message


async def read_events(call, count: int, within: float = 10.0) -> list[events_pb2.Event]:
    """The next ``count`` events that are not bookmarks."""
    seen: list[events_pb2.Event] = []
    while len(seen) < count:
        message = await read(call, within)
        if message.type != E.BOOKMARK:
            seen.append(message)
    return seen


async def test_watch_resumes_from_the_middle_then_follows_new_commits(stub):
    start = await head(stub)
    users = [await create_user(stub) for _ in range(4)]
    events = await all_events(stub, start)
    middle = events[1].sequence

    call = stub.WatchEvents(E.WatchEventsRequest(after_sequence=middle))
    replayed = await read_events(call, 2)
    assert [e.user.id for e in replayed] == [u.id for u in users[2:]]
    later = await create_user(stub)
    live = await read_events(call, 1)
    assert live[0].user.id == later.id
    assert live[0].sequence > replayed[-1].sequence
    call.cancel()


async def test_watch_filters_by_type_and_user(stub):
    start = await head(stub)
    alice = await create_user(stub)
    call = stub.WatchEvents(
        E.WatchEventsRequest(after_sequence=start, user_id=alice.id, types=[E.DEPOSIT_MADE])
    )
    bob = await create_user(stub)
    await stub.Deposit(user_service_pb2.DepositRequest(user_id=bob.id, amount=5, request_id="b"))
    await stub.Deposit(user_service_pb2.DepositRequest(user_id=alice.id, amount=3, request_id="x"))
    await stub.TransferFunds(
        user_service_pb2.TransferFundsRequest(
            from_user_id=bob.id, to_user_id=alice.id, amount=1, request_id="t"
        )
    )
    await stub.Deposit(user_service_pb2.DepositRequest(user_id=alice.id, amount=4, request_id="y"))
    deposits = await read_events(call, 2)
    assert [(e.type, e.user.id, e.user.balance) for e in deposits] == [
        (E.DEPOSIT_MADE, alice.id, 3),
        (E.DEPOSIT_MADE, alice.id, 8),
    ]
    call.cancel()


async def test_a_quiet_watch_gets_bookmarks_at_the_watermark(database_url):
    async with running_service(database_url, events_bookmark_interval=0.3) as running:
        stub = running.stub
        user = await create_user(stub)
        call = stub.WatchEvents(E.WatchEventsRequest(user_id=user.id + 1000))
        for _ in range(3):
            await create_user(stub)
        end = await head(stub)
        while True:
            bookmark = await read(call, within=5)
            assert bookmark.type == E.BOOKMARK
            assert not bookmark.HasField("create_time")
            assert bookmark.user_id == 0
            if bookmark.sequence >= end:
                break
        call.cancel()


async def test_an_expired_cursor_is_out_of_range_with_the_oldest_sequence(service):
    stub = service.stub
    first = await create_user(stub)
    for _ in range(3):
        await create_user(stub)
    events = await all_events(stub)
    with service.server.database.activate():
        pruned = await prune_feed(timedelta(0), now=datetime.now(UTC) + timedelta(seconds=1))
    assert pruned == len(events) - 1  # the newest event always stays
    cursor = events[0].sequence

    listed = await failure(stub.ListEvents(E.ListEventsRequest(after_sequence=cursor)))
    assert_error(listed, grpc.StatusCode.OUT_OF_RANGE, "CURSOR_EXPIRED")
    assert listed.metadata["oldest_sequence"] == str(events[-1].sequence)
    assert int(listed.metadata["watermark"]) >= events[-1].sequence
    watched = await failure(stub.WatchEvents(E.WatchEventsRequest(after_sequence=cursor)).read())
    assert_error(watched, grpc.StatusCode.OUT_OF_RANGE, "CURSOR_EXPIRED")
    # From the start, or from the oldest kept, is fine.
    assert [e.sequence for e in await all_events(stub)] == [events[-1].sequence]
    assert await all_events(stub, int(listed.metadata["watermark"])) == []
    assert first.id


async def test_a_watch_resumes_without_loss_across_a_server_restart(database_url):
    async with running_service(database_url) as running:
        start = await head(running.stub)
        channel = grpc.aio.insecure_channel(running.address)
        watcher = user_service_pb2_grpc.UserServiceStub(channel)
        call = watcher.WatchEvents(E.WatchEventsRequest(after_sequence=start))
        created = [await create_user(running.stub) for _ in range(3)]
        seen = await read_events(call, 3)
    # The server stopped under the stream: it ends, retryable.
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await read_events(call, 1)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    await channel.close(None)

    async with running_service(database_url) as running:
        created += [await create_user(running.stub) for _ in range(2)]
        call = running.stub.WatchEvents(E.WatchEventsRequest(after_sequence=seen[-1].sequence))
        seen += await read_events(call, 2)
        call.cancel()
    assert [e.user.id for e in seen] == [u.id for u in created]


async def test_sigterm_ends_watch_streams_with_unavailable_at_once(tmp_path, database_url):
    address = f"127.0.0.1:{free_port()}"
    env = service_environment(USERS_DATABASE_URL=database_url, USERS_GRACE_PERIOD="30")
    async with service_process(listen=address, cwd=tmp_path, env=env) as process:
        await process.wait_serving()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            await create_user(stub)
            call = stub.WatchEvents(E.WatchEventsRequest())
            await read_events(call, 1)
            process.signal(signal.SIGTERM)
            got = await failure(asyncio.wait_for(call.read(), 10))
            assert_error(got, grpc.StatusCode.UNAVAILABLE, "SERVER_SHUTTING_DOWN")
            # Well within the 30 s grace period: nothing waited for the stream.
            assert await process.wait_exit(within=15) == 0
