"""Start-up either applies pending migrations or refuses to serve, as --migrate-on-start says."""

from __future__ import annotations

import dataclasses

import pytest
from users.v1 import user_service_pb2

from service.config import Settings
from service.db.migrate import MigrationsPending
from service.server import UsersServer
from service.testing import running_service


def _settings(database_url: str, *, migrate_on_start: bool) -> Settings:
    return dataclasses.replace(
        Settings(),
        listen="127.0.0.1:0",
        database_url=database_url,
        grace_period=0,
        migrate_on_start=migrate_on_start,
    )


async def test_start_up_refuses_an_unmigrated_database_when_told_not_to_migrate(database_url):
    server = UsersServer(_settings(database_url, migrate_on_start=False))
    with pytest.raises(MigrationsPending) as refused:
        await server.start()
    assert "0001_initial" in str(refused.value)
    assert "python -m service migrate" in str(refused.value)
    assert server.port == 0, "it must not have started serving"


async def test_a_migrated_database_serves_without_migrating_at_start_up(database_url):
    migrator = UsersServer(_settings(database_url, migrate_on_start=True))
    await migrator.start()
    await migrator.stop(0)
    async with running_service(database_url, migrate_on_start=False) as service:
        reply = await service.stub.ListUsers(user_service_pb2.ListUsersRequest())
    assert reply.total_size == 0
