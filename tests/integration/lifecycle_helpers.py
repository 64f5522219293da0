"""Helpers for lifecycle tests: put a user into a state, call a state method by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from users.v1 import resources_pb2, user_service_pb2

if TYPE_CHECKING:
    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

ACTIVE = resources_pb2.ACTIVE
DISABLED = resources_pb2.DISABLED
LOCKED = resources_pb2.LOCKED
DELETED = resources_pb2.DELETED

# Every method that moves a user between states, by name.
STATE_METHODS = (
    "DisableUser",
    "EnableUser",
    "LockUser",
    "UnlockUser",
    "DeleteUser",
    "UndeleteUser",
)

_REQUESTS = {
    "DisableUser": user_service_pb2.DisableUserRequest,
    "EnableUser": user_service_pb2.EnableUserRequest,
    "LockUser": user_service_pb2.LockUserRequest,
    "UnlockUser": user_service_pb2.UnlockUserRequest,
    "DeleteUser": user_service_pb2.DeleteUserRequest,
    "UndeleteUser": user_service_pb2.UndeleteUserRequest,
}


async def call(
    stub: UserServiceAsyncStub, method: str, user_id: int, etag: str = ""
) -> resources_pb2.User | None:
    """Call a state method; the User it returns (None for DeleteUser, which returns Empty)."""
    response = await getattr(stub, method)(_REQUESTS[method](id=user_id, etag=etag))
    return response if isinstance(response, resources_pb2.User) else None


async def get(stub: UserServiceAsyncStub, user_id: int) -> resources_pb2.User:
    """The user as stored, deleted or not."""
    return await stub.GetUser(user_service_pb2.GetUserRequest(id=user_id, show_deleted=True))


async def put_in_state(stub: UserServiceAsyncStub, user_id: int, state: int) -> None:
    """Move a new (ACTIVE) user into ``state`` through the API."""
    method: dict[int, str | None] = {
        ACTIVE: None,
        DISABLED: "DisableUser",
        LOCKED: "LockUser",
        DELETED: "DeleteUser",
    }
    name = method[state]
    if name is not None:
        await call(stub, name, user_id)
    assert (await get(stub, user_id)).state == state
