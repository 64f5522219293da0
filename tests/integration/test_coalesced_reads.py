"""Concurrent GetUsers share one query (service.db.point_reads): each still gets its own answer."""

from __future__ import annotations

import asyncio

import grpc
from users.v1 import user_service_pb2

from service.db import point_reads
from tests.helpers import create_user, failure, insert_rows
from tests.integration.money_helpers import counting_statements


async def test_concurrent_get_users_each_get_their_own_user_or_not_found(service, stub):
    await insert_rows(service, [f"coalesce{i:03d}" for i in range(60)])
    users = (await stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=100))).users
    deleted = await create_user(stub)
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=deleted.id))
    missing = deleted.id + 1000
    # Duplicates, a deleted user and one that never existed, all at once.
    wanted = [u.id for u in users] + [users[0].id, users[5].id, deleted.id, missing]

    async def get(user_id: int) -> object:
        try:
            return await stub.GetUser(user_service_pb2.GetUserRequest(id=user_id))
        except grpc.aio.AioRpcError as error:
            return error.code()

    got = await asyncio.gather(*(get(i) for i in wanted))
    by_id = {u.id: u for u in users}
    for user_id, answer in zip(wanted, got, strict=True):
        if user_id in by_id:
            assert answer == by_id[user_id]
        else:
            assert answer == grpc.StatusCode.NOT_FOUND


async def test_a_batch_larger_than_the_limit_is_split_and_still_answered(
    service, stub, monkeypatch
):
    monkeypatch.setattr(point_reads, "MAX_BATCH", 3)
    await insert_rows(service, [f"split{i}" for i in range(10)])
    users = (await stub.ListUsers(user_service_pb2.ListUsersRequest())).users
    got = await asyncio.gather(
        *(stub.GetUser(user_service_pb2.GetUserRequest(id=u.id)) for u in users)
    )
    assert list(got) == list(users)


async def test_a_deleted_user_is_not_found_through_the_shared_read(stub):
    user = await create_user(stub)
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id))
    got = await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=user.id)))
    assert got.code == grpc.StatusCode.NOT_FOUND
    assert str(user.id) in got.message


async def test_concurrent_get_users_share_reads_on_postgresql(service, stub, backend):
    await insert_rows(service, [f"share{i:02d}" for i in range(30)])
    users = list((await stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=50))).users)
    with counting_statements(service) as statements:
        got = await asyncio.gather(
            *(stub.GetUser(user_service_pb2.GetUserRequest(id=u.id)) for u in users)
        )
    assert list(got) == users
    reads = [s for s in statements if "FROM users WHERE id" in s]
    if backend == "postgres":
        # The first call reads alone; the calls that arrive during a read
        # share the next one.
        assert 1 < len(reads) < len(users)
    else:
        # SQLite reads each on the loop: microseconds, nothing to share.
        assert len(reads) == len(users)
