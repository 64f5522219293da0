"""The pytest plugin as another project uses it: opted in from its conftest.py, run by pytest."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import asyncpg
import pytest

from tests.ops_helpers import service_environment

if TYPE_CHECKING:
    from pathlib import Path

CONFTEST = 'pytest_plugins = ["service.pytest_plugin"]\n'
PYTEST_INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
TESTS = """
from users.v1 import user_service_pb2 as pb


async def sign_up(stub, username):
    request = pb.CreateUserRequest(
        username=username, password="long secret", email=username + "@example.org"
    )
    return await stub.CreateUser(request)


async def test_first(users_stub):
    assert (await sign_up(users_stub, "<NAME>")).id


async def test_second_gets_a_fresh_service(users_service):
    user = await sign_up(users_service.stub, "<OTHER>")
    listed = await users_service.stub.ListUsers(pb.ListUsersRequest())
    assert [u.username for u in listed.users] == <EXPECTED>
"""


async def run_consumer_suite(project: Path, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project),
        cwd=project,
        env=service_environment(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode()


def write_project(project: Path, name: str, other: str, expected: list[str]) -> None:
    project.mkdir()
    (project / "conftest.py").write_text(CONFTEST)
    (project / "pytest.ini").write_text(PYTEST_INI)
    tests = TESTS.replace("<NAME>", name).replace("<OTHER>", other)
    (project / "test_consumer.py").write_text(tests.replace("<EXPECTED>", repr(expected)))


async def test_a_consumer_project_gets_a_fresh_in_memory_service_per_test(tmp_path):
    project = tmp_path / "consumer"
    # The same username in both tests: only a fresh database per test lets both pass.
    write_project(project, "carol", "carol", ["carol"])
    status, output = await run_consumer_suite(project)
    assert status == 0, output
    assert "2 passed" in output, output


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_consumer_project_can_point_the_plugin_at_postgres(database_url, tmp_path):
    project = tmp_path / "consumer"
    write_project(project, "carol", "dave", ["carol", "dave"])
    status, output = await run_consumer_suite(project, USERS_TESTING_DATABASE_URL=database_url)
    assert status == 0, output
    connection = await asyncpg.connect(database_url)
    try:
        names = [r["username"] for r in await connection.fetch("SELECT username FROM users")]
    finally:
        await connection.close()
    assert sorted(names) == ["carol", "dave"]
