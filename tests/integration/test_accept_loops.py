"""Several gRPC servers share the port in one process: one call limit, one owner of the port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from users.v1 import events_pb2, user_service_pb2, user_service_pb2_grpc

from service.config import Settings
from service.listening import BindError
from service.server import UsersServer
from service.testing import running_service
from tests.helpers import create_user, failure
from tests.ops_helpers import free_port

if TYPE_CHECKING:
    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

LOOPS = 4


@contextlib.asynccontextmanager
async def channels(address: str, count: int) -> AsyncIterator[list[UserServiceAsyncStub]]:
    """``count`` channels, each its own connection (so the kernel spreads them over the servers)."""
    opened = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
    ]
    try:
        await asyncio.gather(*(c.channel_ready() for c in opened))
        yield [user_service_pb2_grpc.UserServiceStub(c) for c in opened]
    finally:
        await asyncio.gather(*(c.close(None) for c in opened))


async def test_the_call_limit_counts_the_calls_of_every_server_of_the_process(database_url):
    async with running_service(
        database_url, accept_loops=LOOPS, max_concurrent_rpcs=2, access_log=False
    ) as running:
        user = await create_user(running.stub, "limited")
        async with channels(running.address, 2 * LOOPS) as stubs:
            # Two watch streams hold the two slots for as long as they are open.
            watches = [
                stub.WatchEvents(events_pb2.WatchEventsRequest(after_sequence=0))
                for stub in stubs[:2]
            ]
            for watch in watches:
                first = await asyncio.wait_for(watch.read(), 10)
                assert isinstance(first, events_pb2.Event)
            # Whichever server each connection landed on, every other call is refused.
            for stub in stubs[2:]:
                got = await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=user.id)))
                assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED, got
                assert got.reason == "TOO_MANY_CALLS", got
            watches[0].cancel()
            # The slot is given back: a call on any connection gets through again.
            for _ in range(50):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    fetched = await stubs[-1].GetUser(user_service_pb2.GetUserRequest(id=user.id))
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the cancelled watch never gave its slot back")
            assert fetched.id == user.id
            watches[1].cancel()


async def test_calls_on_many_connections_are_all_served(database_url):
    async with running_service(database_url, accept_loops=LOOPS, access_log=False) as running:
        user = await create_user(running.stub, "spread")
        async with channels(running.address, 3 * LOOPS) as stubs:
            got = await asyncio.gather(
                *(
                    # A connection on a server that never started would hang: fail instead.
                    stub.GetUser(user_service_pb2.GetUserRequest(id=user.id), timeout=10)
                    for stub in stubs
                    for _ in range(5)
                )
            )
        assert {u.id for u in got} == {user.id}
        assert len(got) == 15 * LOOPS


def settings_on(port: int, database_url: str) -> Settings:
    return dataclasses.replace(
        Settings(),
        listen=f"127.0.0.1:{port}",
        database_url=database_url,
        database_wait=0,
        grace_period=0,
        accept_loops=LOOPS,
        access_log=False,
    )


async def test_a_second_server_on_a_taken_port_fails_instead_of_sharing_it(database_url):
    port = free_port()
    first = UsersServer(settings_on(port, database_url))
    await first.start()
    try:
        second = UsersServer(settings_on(port, database_url))
        with pytest.raises(BindError, match="in use"):
            await second.start()
    finally:
        await first.stop(0)


async def test_a_port_is_free_again_once_its_server_stopped(database_url):
    """Connections left in TIME_WAIT by the first server do not keep a restart off the port."""
    port = free_port()
    for _ in range(2):
        server = UsersServer(settings_on(port, database_url))
        await server.start()
        async with channels(f"127.0.0.1:{port}", 2) as stubs:
            try:
                for stub in stubs:
                    await create_user(stub)
            finally:
                # Stopped while its clients are connected, the server closes first:
                # the TIME_WAIT is on its port.
                await server.stop(0)
