from __future__ import annotations

import grpc
from users.v1 import user_service_pb2

from tests.helpers import create_user, failure


async def test_created_user_can_be_read_back(stub):
    created = await create_user(stub, "Alice")
    fetched = await stub.GetUser(user_service_pb2.GetUserRequest(id=created.id))
    assert fetched == created


async def test_missing_user_is_not_found(stub):
    got = await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=424242)))
    assert got.code == grpc.StatusCode.NOT_FOUND
    assert got.reason == "USER_NOT_FOUND"
