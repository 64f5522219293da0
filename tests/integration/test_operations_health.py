"""grpc.health.v1 follows the database: NOT_SERVING and UNAVAILABLE while it is gone."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import TYPE_CHECKING

import asyncpg
import grpc
import grpc.aio
from users.v1 import user_service_pb2

from service.testing import running_service
from tests.helpers import create_user, failure
from tests.ops_helpers import (
    NOT_SERVING,
    SERVICE_NAME,
    SERVING,
    admin_connection,
    database_name,
    eventually,
    health_status,
    require_postgres,
    stub_of,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Words of asyncpg, Tortoise and PostgreSQL that must never reach a client.
DRIVER_WORDS = ("asyncpg", "tortoise", "postgres", 'database "', "terminat", "sql", "select ")
EXCEPTION_NAME = re.compile(r"[a-z](Error|Exception)\b")


def driver_text(message: str) -> list[str]:
    """What in a client-facing message comes from the driver, the ORM or the server."""
    found = [w for w in DRIVER_WORDS if w in message.lower()]
    return found + EXCEPTION_NAME.findall(message)


async def test_both_health_names_are_serving_and_unknown_names_are_not_found(database_url):
    async with running_service(database_url) as running:
        assert await health_status(running.address) == SERVING
        assert await health_status(running.address, SERVICE_NAME) == SERVING
        assert await health_status(running.address, "no.such.Service") is None


@contextlib.asynccontextmanager
async def database_cut_off(name: str) -> AsyncIterator[asyncpg.Connection]:
    """Make a database refuse connections and drop the ones it has; restore on exit."""
    admin = await admin_connection()
    try:
        yield admin
    finally:
        # Always restore, or the fixture could not drop the database.
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def cut_off(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
    )


async def health_is(address: str, status: int) -> bool:
    return (
        await health_status(address) == status
        and await health_status(address, SERVICE_NAME) == status
    )


async def test_health_follows_the_database_away_and_back(database_url):
    require_postgres(database_url)
    name = database_name(database_url)
    async with running_service(database_url, health_probe_interval=0.2) as running:
        address, stub = running.address, stub_of(running)
        user = await create_user(stub)
        assert await health_is(address, SERVING)
        async with database_cut_off(name) as admin:
            await cut_off(admin, name)
            await eventually(lambda: health_is(address, NOT_SERVING), within=10, what="NOT_SERVING")
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await eventually(lambda: health_is(address, SERVING), within=10, what="SERVING again")
        fetched = await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
        assert fetched.id == user.id
        await create_user(stub)


async def test_calls_are_unavailable_while_the_database_refuses_connections(database_url):
    require_postgres(database_url)
    name = database_name(database_url)
    async with running_service(database_url, health_probe_interval=0.2) as running:
        address, stub = running.address, stub_of(running)
        user = await create_user(stub)
        async with database_cut_off(name) as admin:
            await cut_off(admin, name)
            await eventually(lambda: health_is(address, NOT_SERVING), within=10, what="NOT_SERVING")
            for call in (
                stub.GetUser(user_service_pb2.GetUserRequest(id=user.id)),
                stub.ListUsers(user_service_pb2.ListUsersRequest()),
                stub.Deposit(user_service_pb2.DepositRequest(user_id=user.id, amount=5)),
            ):
                got = await failure(call)
                assert got.code == grpc.StatusCode.UNAVAILABLE, got
                assert got.message
                assert not driver_text(got.message), got
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await eventually(lambda: health_is(address, SERVING), within=10, what="SERVING again")
        fetched = await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
        assert fetched.balance == 0, "the deposit made while the database was away did nothing"


async def test_calls_recover_without_a_restart_when_the_database_drops_its_connections(
    database_url, caplog
):
    require_postgres(database_url)
    name = database_name(database_url)
    caplog.set_level(logging.ERROR, logger="service.errors")
    # No probe during the test: the calls themselves meet the dropped connections.
    async with running_service(database_url, health_probe_interval=3600) as running:
        user = await create_user(stub_of(running))
        admin = await admin_connection()
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
        finally:
            await admin.close()
        codes, messages = [], []
        for _ in range(20):
            try:
                await stub_of(running).GetUser(user_service_pb2.GetUserRequest(id=user.id))
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
                messages.append(error.details() or "")
            else:
                codes.append(grpc.StatusCode.OK)
                break
        assert codes[-1] == grpc.StatusCode.OK, codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert not [m for m in messages if driver_text(m)], messages
    assert not [r for r in caplog.records if r.exc_info], "no call was an unexpected fault"
