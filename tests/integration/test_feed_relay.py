"""The NATS JetStream relay, against the real server on 127.0.0.1:4222.

Each test relays into a stream of its own (unique name and subjects) and
deletes it afterwards. The stream is read back message by message and
compared with the feed: every event once, in sequence order.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import uuid
from typing import TYPE_CHECKING

import grpc.aio
import nats
import nats.js.errors
import pytest
from users.v1 import events_pb2, user_service_pb2_grpc

from service.testing import running_service
from tests.helpers import create_user
from tests.integration.test_feed_outbox import all_events
from tests.ops_helpers import eventually, free_port, service_environment, service_process
from tests.requirements import require

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

NATS_URL = "nats://127.0.0.1:4222"


def _nats_up() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", 4222)) == 0


@pytest.fixture(autouse=True)
def _needs_nats() -> None:
    # CI starts NATS (.ci/run) and sets USERS_TEST_STRICT: there its absence fails.
    if not _nats_up():
        require("NATS", f"no NATS server at {NATS_URL}")


class Stream:
    def __init__(self, js: nats.js.JetStreamContext, name: str, subject: str) -> None:
        self.js, self.name, self.subject = js, name, subject

    def settings(self) -> dict[str, str]:
        return {
            "events_nats_url": NATS_URL,
            "events_nats_stream": self.name,
            "events_nats_subject": self.subject,
        }

    def environment(self) -> dict[str, str]:
        return {f"USERS_{k.upper()}": v for k, v in self.settings().items()}

    async def count(self) -> int:
        try:
            return int((await self.js.stream_info(self.name)).state.messages)
        except nats.js.errors.NotFoundError:
            return 0

    async def messages(self) -> list[tuple[str, dict[str, str], events_pb2.Event]]:
        info = await self.js.stream_info(self.name)
        found = []
        for number in range(info.state.first_seq, info.state.last_seq + 1):
            message = await self.js.get_msg(self.name, number)
            event = events_pb2.Event.FromString(message.data or b"")
            found.append((message.subject or "", dict(message.headers or {}), event))
        return found

    async def wait_for(self, count: int, within: float = 30) -> None:
        async def enough() -> bool:
            return await self.count() >= count

        await eventually(enough, within=within, what=f"{count} messages in stream {self.name}")


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    tag = uuid.uuid4().hex[:12]
    made = Stream(js, f"USERS_TEST_{tag}", f"users_test.{tag}.events")
    try:
        yield made
    finally:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(made.name)
        await client.close()


def assert_relayed_once_in_order(
    messages: list[tuple[str, dict[str, str], events_pb2.Event]],
    feed: list[events_pb2.Event],
    subject: str,
) -> None:
    assert [event for _, _, event in messages] == feed
    feed_ids = set()
    for subject_of, headers, event in messages:
        assert subject_of == f"{subject}.{events_pb2.EventType.Name(event.type)}"
        assert headers["Users-Event-Sequence"] == str(event.sequence)
        feed_id, _, sequence = headers["Nats-Msg-Id"].partition(":")
        assert sequence == str(event.sequence)
        feed_ids.add(feed_id)
    assert len(feed_ids) == 1
    assert len(next(iter(feed_ids))) == 32


async def test_the_relay_publishes_every_event_once_in_order(database_url, stream):
    async with running_service(database_url, **stream.settings()) as running:
        for _ in range(5):
            await create_user(running.stub)
        feed = await all_events(running.stub)
        await stream.wait_for(len(feed))
        await asyncio.sleep(0.5)
        assert_relayed_once_in_order(await stream.messages(), feed, stream.subject)


async def test_one_relay_at_a_time_and_the_other_takes_over(database_url, stream):
    async with running_service(database_url, **stream.settings()) as first:
        await create_user(first.stub)
        await stream.wait_for(1)
        async with running_service(database_url, **stream.settings()) as second:
            for _ in range(3):
                await create_user(second.stub)
            await stream.wait_for(4)
            relays = [first.server.feed.relay, second.server.feed.relay]
            assert relays[0] is not None
            assert relays[1] is not None
            assert relays[0].published_through > 0
            assert relays[1].published_through == 0  # waiting for the lock
            await first.server.stop(0)
            for _ in range(2):
                await create_user(second.stub)
            await stream.wait_for(6, within=30)
            assert relays[1].published_through > 0
            await asyncio.sleep(0.5)
            feed = await all_events(second.stub)
            assert_relayed_once_in_order(await stream.messages(), feed, stream.subject)


async def test_the_relay_loses_nothing_across_a_sigkill(tmp_path, database_url, stream):
    env = service_environment(USERS_DATABASE_URL=database_url, **stream.environment())
    created = 0

    async def write_for_a_while(address: str, count: int) -> None:
        nonlocal created
        async with grpc.aio.insecure_channel(address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            for _ in range(count):
                await create_user(stub)
                created += 1

    address = f"127.0.0.1:{free_port()}"
    async with service_process(listen=address, cwd=tmp_path, env=env) as process:
        await process.wait_serving()
        await write_for_a_while(address, 10)
        await stream.wait_for(3)
        writing = asyncio.create_task(write_for_a_while(address, 1000))
        await asyncio.sleep(0.3)
        process.signal(signal.SIGKILL)
        with pytest.raises(grpc.aio.AioRpcError):
            await writing
        await process.wait_exit()
    relayed_before = await stream.count()

    address = f"127.0.0.1:{free_port()}"
    async with service_process(listen=address, cwd=tmp_path, env=env) as process:
        await process.wait_serving()
        await write_for_a_while(address, 5)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            feed = await all_events(stub)
        # Acknowledged writes all made it into the feed (one may have committed unanswered).
        assert len(feed) >= created
        await stream.wait_for(len(feed))
        await asyncio.sleep(0.5)
        assert_relayed_once_in_order(await stream.messages(), feed, stream.subject)
    assert relayed_before < len(feed)
