"""Helpers for asserting on gRPC failures and making test data."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from users.v1 import user_service_pb2

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from users.v1 import resources_pb2
    from users.v1.user_service_pb2_grpc import UserServiceStub

PASSWORD = "correct horse battery"
_serial = itertools.count(1)


@dataclass
class Failure:
    """A failed call as a client sees it, with its aip.dev/193 details unpacked."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: dict[str, str] = field(default_factory=dict)
    retry_seconds: float | None = None


async def failure(call: Awaitable[Any]) -> Failure:
    """Await a call that must fail and return what the client got."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    result = Failure(error.code(), error.details() or "")
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return result
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info_ = error_details_pb2.ErrorInfo()
            detail.Unpack(info_)
            result.reason, result.domain = info_.reason, info_.domain
            result.metadata = dict(info_.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            result.retry_seconds = retry.retry_delay.ToTimedelta().total_seconds()
    return result


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_serial)}"


async def create_user(
    stub: UserServiceStub,
    username: str | None = None,
    *,
    email: str | None = None,
    password: str = PASSWORD,
    display_name: str = "",
) -> resources_pb2.User:
    username = username or unique_name()
    return await stub.CreateUser(
        user_service_pb2.CreateUserRequest(
            username=username,
            password=password,
            email=email or f"{username}@example.com",
            display_name=display_name,
        )
    )
