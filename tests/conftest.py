"""Fixtures: a real server on 127.0.0.1:0 over a real database, once per backend.

Every test that takes ``service`` or ``stub`` runs twice: on SQLite (a file
under tmp_path) and on PostgreSQL (a fresh database per test, created from
USERS_TEST_POSTGRES_URL). Without that variable the PostgreSQL cases are
skipped with a visible reason; CI sets it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from service.testing import RunningService, running_service
from tests.requirements import NOT_APPLICABLE, STRICT_ENV, postgres_admin_url, strict

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator
    from pathlib import Path

    from _pytest.reports import TestReport
    from users.v1.user_service_pb2_grpc import UserServiceStub


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, TestReport, TestReport]:
    """Under USERS_TEST_STRICT, any skip but a "not applicable" one fails the test.

    ``tests.requirements.require`` already fails in that mode; this also catches
    a test that calls ``pytest.skip`` itself for want of something.
    """
    report = yield
    if strict() and report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        if not reason.removeprefix("Skipped: ").startswith(NOT_APPLICABLE):
            report.outcome = "failed"
            report.longrepr = f"skipped while {STRICT_ENV} is set: {reason}"
    return report


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'users.sqlite3'}"
        return
    admin_url = postgres_admin_url()
    name = f"users_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(admin_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest_asyncio.fixture
async def service(database_url: str) -> AsyncIterator[RunningService]:
    async with running_service(database_url) as running:
        yield running


@pytest.fixture
def stub(service: RunningService) -> UserServiceStub:
    return service.stub


@pytest.fixture
def backend(database_url: str) -> str:
    return "postgres" if database_url.startswith("postgres") else "sqlite"
