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
    from collections.abc import Awaitable, Sequence
    from datetime import datetime

    from users.v1 import resources_pb2
    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

    from service.testing import RunningService

PASSWORD = "correct horse battery"
DOMAIN = "users.v1"
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


def fullwidth(text: str) -> str:
    """The full-width form of ASCII text (U+FF01..U+FF5E); its NFKC form is ``text``."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_serial)}"


async def create_user(
    stub: UserServiceAsyncStub,
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


def email_of_length(length: int) -> str:
    """A syntactically valid address of exactly ``length`` characters (at least 70)."""
    local = "a" * 64
    rest = length - len(local) - len("@") - len(".com")
    if rest < 1:
        raise ValueError("length too small")
    labels = []
    while rest > 51:
        labels.append("b" * 50)
        rest -= 51
    labels.append("c" * rest)
    address = f"{local}@{'.'.join(labels)}.com"
    assert len(address) == length
    return address


def assert_invalid(got: Failure, *fields: str) -> None:
    """An aip.dev/193 INVALID_ARGUMENT whose BadRequest names exactly ``fields``."""
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT, got
    assert got.domain == DOMAIN, got
    assert got.reason == "INVALID_ARGUMENT", got
    assert set(got.violations) == set(fields), got
    assert all(got.violations.values()), got


def assert_error(got: Failure, code: grpc.StatusCode, reason: str) -> None:
    """A failure with this code and an ErrorInfo of this reason in our domain."""
    assert got.code == code, got
    assert got.reason == reason, got
    assert got.domain == DOMAIN, got


async def list_all(
    stub: UserServiceAsyncStub,
    *,
    page_size: int,
    page_token: str = "",
    max_pages: int = 1000,
    **query: Any,
) -> list[resources_pb2.User]:
    """Every user of a ListUsers query from ``page_token`` on, following next_page_token."""
    users: list[resources_pb2.User] = []
    token = page_token
    for _ in range(max_pages):
        page = await stub.ListUsers(
            user_service_pb2.ListUsersRequest(page_size=page_size, page_token=token, **query)
        )
        assert len(page.users) <= page_size
        users.extend(page.users)
        token = page.next_page_token
        if not token:
            return users
    raise AssertionError(f"ListUsers did not end within {max_pages} pages")


async def insert_rows(
    service: RunningService,
    usernames: Sequence[str],
    *,
    create_times: Sequence[datetime] | None = None,
    **columns: Any,
) -> None:
    """Insert users straight into the database, bypassing the API and its hashing.

    For tests that need many rows (page-size limits) or a stored state the API
    cannot produce (old hash schemes, chosen creation times). Names must be
    ASCII: their identity key is then their lower-case form.
    """
    from service.db.models import UserRow

    if create_times is not None:
        assert len(create_times) == len(usernames)
    rows = []
    for i, name in enumerate(usernames):
        assert name.isascii(), name
        values: dict[str, Any] = {
            "username": name,
            "username_key": name.lower(),
            "email": f"{name}@example.com",
            "email_key": f"{name.lower()}@example.com",
            "password_hash": "!unusable",
        }
        if create_times is not None:
            values["create_time"] = create_times[i]
        values.update(columns)
        rows.append(UserRow(**values))
    with service.server.database.activate():
        await UserRow.bulk_create(rows, batch_size=500)
