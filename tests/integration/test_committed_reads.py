"""Point reads outside a transaction see the last commit and never wait for a writer.

GetUser, LookupUser and BatchGetUsers read on a lane of their own (SQLite: a
second connection read on the loop; PostgreSQL: a connection kept for
coalesced GetUsers, or the pool). While a write transaction holds a user's
row (and, on SQLite, the only writing connection), they answer at once with
the committed row, and with the new one as soon as it commits.
"""

from __future__ import annotations

import asyncio

from google.protobuf.field_mask_pb2 import FieldMask
from tortoise.transactions import in_transaction
from users.v1 import resources_pb2, user_service_pb2

from tests.helpers import create_user

# Far above an indexed read, far below the time a blocked read would wait.
ANSWER_WITHIN = 5.0


async def test_reads_answer_the_committed_row_while_a_write_transaction_is_open(service, stub):
    user = await create_user(stub)
    writing = asyncio.Event()
    release = asyncio.Event()

    async def writer() -> None:
        async with in_transaction() as connection:
            await connection.execute_query(
                "UPDATE users SET display_name = 'uncommitted' WHERE id = " + str(user.id)
            )
            writing.set()
            await release.wait()

    # The writer runs in the server's database context, as a handler would.
    with service.server.database.activate():
        task = asyncio.create_task(writer())
    await asyncio.wait_for(writing.wait(), ANSWER_WITHIN)
    try:
        got = await asyncio.wait_for(
            stub.GetUser(user_service_pb2.GetUserRequest(id=user.id)), ANSWER_WITHIN
        )
        looked_up = await asyncio.wait_for(
            stub.LookupUser(user_service_pb2.LookupUserRequest(username=user.username)),
            ANSWER_WITHIN,
        )
        batch = await asyncio.wait_for(
            stub.BatchGetUsers(user_service_pb2.BatchGetUsersRequest(ids=[user.id])),
            ANSWER_WITHIN,
        )
    finally:
        release.set()
        await task
    assert got.display_name == looked_up.display_name == user.display_name
    assert [u.display_name for u in batch.users] == [user.display_name]

    after = await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
    assert after.display_name == "uncommitted"
    looked_up = await stub.LookupUser(user_service_pb2.LookupUserRequest(username=user.username))
    assert looked_up.display_name == "uncommitted"


async def test_an_acknowledged_write_is_seen_by_the_next_read(stub):
    user = await create_user(stub)
    for n in range(20):
        name = f"name {n}"
        await stub.UpdateUser(
            user_service_pb2.UpdateUserRequest(
                user=resources_pb2.User(id=user.id, display_name=name),
                update_mask=FieldMask(paths=["display_name"]),
            )
        )
        got = await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
        assert got.display_name == name
