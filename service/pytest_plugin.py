"""Pytest fixtures that run the real UserService in-process.

Opt in from a ``conftest.py``::

    pytest_plugins = ["service.pytest_plugin"]

then take ``users_stub`` (a connected ``UserServiceStub``) or ``users_service``
(a ``service.testing.RunningService``) in an async test. Each test gets a
fresh server over a private in-memory SQLite database; set the environment
variable ``USERS_TESTING_DATABASE_URL`` to run against another database.
Needs pytest-asyncio.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest_asyncio

from service.testing import RunningService, running_service

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

__all__ = ["users_service", "users_stub"]


@pytest_asyncio.fixture
async def users_service() -> AsyncIterator[RunningService]:
    url = os.environ.get("USERS_TESTING_DATABASE_URL", "sqlite://:memory:")
    async with running_service(url) as service:
        yield service


@pytest_asyncio.fixture
async def users_stub(users_service: RunningService) -> UserServiceAsyncStub:
    return users_service.stub
