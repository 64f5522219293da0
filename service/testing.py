"""Run the real UserService in-process, for our tests and for consumers' tests.

Example (pytest with pytest-asyncio)::

    import pytest_asyncio
    from service.testing import running_service

    @pytest_asyncio.fixture
    async def users():
        async with running_service() as service:   # in-memory SQLite
            yield service.stub

    async def test_sign_up(users):
        user = await users.CreateUser(CreateUserRequest(...))

The server listens on a free port of 127.0.0.1, uses a private in-memory
SQLite database unless ``database_url`` names another, and is stopped (and
its database closed) when the block exits.

Unlike ``python -m service``, it does not wait for a database it cannot reach:
``running_service`` raises ``DatabaseUnreachable`` at once, so that a
misconfigured test fails instead of hanging. Pass ``database_wait=SECONDS``
to wait instead: the block is then entered as soon as the server listens,
with health NOT_SERVING and calls UNAVAILABLE until the database answers
(``await service.server.ready()`` waits for that).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc.aio
from users.v1 import user_service_pb2_grpc

from service.config import Settings
from service.server import UsersServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

    from service.api.tracing import Tracing

__all__ = ["RunningService", "running_service"]


@dataclass(frozen=True, slots=True)
class RunningService:
    server: UsersServer
    address: str
    channel: grpc.aio.Channel
    stub: UserServiceAsyncStub


@contextlib.asynccontextmanager
async def running_service(
    database_url: str = "sqlite://:memory:", *, tracing: Tracing | None = None, **settings: Any
) -> AsyncIterator[RunningService]:
    """Start a UserService on 127.0.0.1:0 and yield it with a connected stub.

    ``settings`` overrides fields of ``service.config.Settings``, for example
    ``hash_threads=1``. ``tracing`` traces its calls into a tracer provider
    of the caller's (an in-memory exporter, say) instead of the ``OTEL_*``
    variables' choice.
    """
    # Fail fast on an unreachable database unless the caller asks to wait.
    settings.setdefault("database_wait", 0)
    config = dataclasses.replace(
        Settings(), listen="127.0.0.1:0", database_url=database_url, grace_period=0, **settings
    )
    server = UsersServer(config, tracing=tracing)
    await server.start()
    address = f"127.0.0.1:{server.port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            yield RunningService(server, address, channel, stub)
    finally:
        await server.stop(0)
