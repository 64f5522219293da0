"""Reads outside a transaction on kept connections (service.db.lanes), through the real service.

PostgreSQL runs them on a few connections kept out of the pool; SQLite has no
lanes (its reads run on the loop, ``service.db.sqlite_reader``) and must give
the same answers to the same calls.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import grpc
from users.v1 import user_service_pb2

from service.db import lanes
from tests.helpers import create_user, insert_rows
from tests.ops_helpers import eventually

if TYPE_CHECKING:
    from users.v1.resources_pb2 import User
    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

    from service.testing import RunningService


async def test_a_storm_of_mixed_reads_answers_each_call_and_leaves_room_for_writes(
    service: RunningService, stub: UserServiceAsyncStub, backend: str
) -> None:
    await insert_rows(service, [f"lanes{i:03d}" for i in range(40)])
    users = list((await stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=100))).users)

    async def lookup(user: User) -> User:
        request = user_service_pb2.LookupUserRequest(username=user.username.upper())
        return await stub.LookupUser(request)

    async def batch(user: User) -> User:
        ids = [user.id, users[0].id]
        reply = await stub.BatchGetUsers(user_service_pb2.BatchGetUsersRequest(ids=ids))
        return reply.users[0]

    async def get(user: User) -> User:
        request = user_service_pb2.GetUserRequest(id=user.id, show_deleted=True)
        return await stub.GetUser(request)

    calls = [read(user) for user in users for read in (lookup, batch, get)]
    created, *answers = await asyncio.gather(create_user(stub, username="lanes_writer"), *calls)
    assert answers == [user for user in users for _ in range(3)]
    assert created.username == "lanes_writer"
    if backend == "postgres":
        kept = _lanes(service)
        assert 1 <= kept.taken <= kept.limit

        async def only_lanes_out() -> bool:
            stats = service.server.database.pool_stats()
            assert stats is not None
            return stats["in_use"] == kept.taken

        # Only the lanes stay out of the pool once the storm is over (the
        # change feed's background reads may hold one for a moment).
        await eventually(only_lanes_out, within=5, what="every connection but the lanes back")


async def test_reads_come_back_after_the_lanes_connections_are_lost(
    service, stub, backend, database_url
):
    user = await create_user(stub)
    request = user_service_pb2.LookupUserRequest(username=user.username)
    assert await stub.LookupUser(request) == user
    if backend == "postgres":
        pids = [lane.get_server_pid() for lane in _lanes(service).idle]
        assert pids
        killer = await asyncpg.connect(database_url)
        try:
            terminate = "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid"
            await killer.execute(terminate, pids)
        finally:
            await killer.close()
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(await stub.LookupUser(request))
        except grpc.aio.AioRpcError as error:
            outcomes.append(error.code())
    # A read that meets the dead connection may fail, as a lost database does;
    # the lane then goes back to the pool and the next read gets an answer.
    assert outcomes[-1] == user
    failures = [o for o in outcomes if o != user]
    assert failures in ([], [grpc.StatusCode.UNAVAILABLE])
    assert await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id)) == user


def _lanes(service: RunningService) -> lanes.Lanes:
    database = service.server.database
    with database.activate():
        found = lanes.lanes_of(database.context.db(database.dialect))
    assert found is not None
    return found
