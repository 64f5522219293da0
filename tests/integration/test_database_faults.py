"""PostgreSQL restarted, crashed or not yet up: UNAVAILABLE meanwhile, nothing lost, back by itself.

PostgreSQL only, by nature: the tests stop and restart a database server, and
SQLite has none. They never touch the shared server of USERS_TEST_POSTGRES_URL:
each starts a throwaway cluster of its own (``tests/pg_cluster.py``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.db.database import DatabaseUnreachable
from service.db.migrate import MigrationsPending
from service.testing import running_service
from tests.bank_load import UNAVAILABLE, BankLoad, audit, check_failure
from tests.helpers import create_user
from tests.ops_helpers import (
    NOT_SERVING,
    SERVICE_NAME,
    SERVING,
    eventually,
    free_port,
    health_status,
    service_process,
)
from tests.pg_cluster import (
    ClusterUnavailable,
    PostgresCluster,
    check_available,
    throwaway_cluster,
)
from tests.requirements import require

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

# Seconds of load before the first fault, between faults and after the last.
LOAD_PHASE = 1.5
# How long the crashed cluster stays down: long enough that calls meet it.
OUTAGE = 1.0
# "Recovers by itself within seconds": the first call after the cluster is back.
RECOVERY_LIMIT = 10.0


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[PostgresCluster]:
    try:
        check_available()
    except ClusterUnavailable as error:
        require("a private PostgreSQL cluster", str(error))
    async with throwaway_cluster() as cluster:
        yield cluster


async def test_restarts_under_load_fail_calls_only_with_unavailable_and_lose_nothing(
    cluster, caplog
):
    caplog.set_level(logging.WARNING, logger="service")
    url = await cluster.create_database("users")
    async with running_service(
        url, hash_threads=1, access_log=False, health_probe_interval=0.2
    ) as running:
        load = BankLoad(running.address, clients=8)
        stop = asyncio.Event()
        clients = asyncio.create_task(load.run(stop))
        await asyncio.sleep(LOAD_PHASE)

        # A clean restart: PostgreSQL ends every session and comes back.
        await cluster.restart("fast")
        back_after_restart = time.monotonic()
        await asyncio.sleep(LOAD_PHASE)
        # A crash, and a server that stays down a while: calls must meet it.
        await cluster.stop("immediate")
        await asyncio.sleep(OUTAGE)
        await cluster.start()
        back_after_crash = time.monotonic()
        await asyncio.sleep(LOAD_PHASE)
        stop.set()
        await clients

        assert load.bad == [], load.bad[:10]
        assert load.codes[UNAVAILABLE.name] > 0, f"no call met the outage: {load.codes}"
        assert load.codes["OK"] > 100, load.codes
        for back in (back_after_restart, back_after_crash):
            first_ok = load.first_ok_after(back)
            assert first_ok is not None, "no call succeeded after the database came back"
            assert first_ok - back < RECOVERY_LIMIT

        found = await audit(url, load.calls)
        assert found.lost == [], found.lost[:10]
        assert found.violations == [], found.violations[:10]

        # Clients retry what failed, with the same request_id: applied exactly once.
        assert await load.retry_unavailable() > 0
        assert load.bad == [], load.bad[:10]
        found = await audit(url, load.calls, converged=True)
        assert found.lost == [], found.lost[:10]
        assert found.violations == [], found.violations[:10]

        await eventually(
            lambda: _is_serving(running.address), within=10, what="health SERVING again"
        )
    unexpected = [r for r in caplog.records if r.exc_info and r.name.startswith("service")]
    assert not unexpected, [r.getMessage() for r in unexpected]


async def _health_is(address: str, status: int) -> bool:
    """Both health names report ``status``."""
    return all([await health_status(address, name) == status for name in ("", SERVICE_NAME)])


async def _is_serving(address: str) -> bool:
    return await _health_is(address, SERVING)


async def _assert_unavailable(stub: UserServiceAsyncStub) -> None:
    """A UserService call fails with UNAVAILABLE, reason DATABASE_UNAVAILABLE and a RetryInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create_user(stub)
    assert raised.value.code() == UNAVAILABLE, raised.value
    reason, problem = check_failure(raised.value)
    assert problem is None, problem
    assert reason == "DATABASE_UNAVAILABLE"


# -- the database is down when the service starts ------------------------------


async def test_a_service_started_before_its_database_is_not_serving_until_it_answers(cluster):
    url = await cluster.create_database("users")
    await cluster.stop()
    async with running_service(
        url, database_wait=60, hash_threads=1, health_probe_interval=0.2
    ) as running:
        assert await _health_is(running.address, NOT_SERVING)
        await _assert_unavailable(running.stub)
        await asyncio.sleep(1.5)  # a few failed attempts: still waiting, still answering
        assert await _health_is(running.address, NOT_SERVING)
        await _assert_unavailable(running.stub)

        await cluster.start()
        # The first retries come within seconds; the schema is created meanwhile.
        await eventually(lambda: _is_serving(running.address), within=15, what="SERVING")
        await running.server.ready()
        user = await create_user(running.stub)
        fetched = await running.stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
        assert fetched.username == user.username


async def test_a_schema_found_behind_after_the_wait_stops_start_up_when_migrating_is_off(cluster):
    url = await cluster.create_database("users")
    await cluster.stop()
    async with running_service(url, database_wait=60, migrate_on_start=False) as running:
        await cluster.start()
        with pytest.raises(MigrationsPending):
            await asyncio.wait_for(running.server.ready(), 30)
        assert await _health_is(running.address, NOT_SERVING)
        await _assert_unavailable(running.stub)


async def test_the_wait_for_the_database_gives_up_after_database_wait(cluster):
    url = await cluster.create_database("users")
    await cluster.stop()
    async with running_service(url, database_wait=1) as running:
        started = time.monotonic()
        with pytest.raises(DatabaseUnreachable, match="within 1s"):
            await asyncio.wait_for(running.server.ready(), 30)
        assert time.monotonic() - started < 15
        assert await _health_is(running.address, NOT_SERVING)


async def test_running_service_fails_fast_on_an_unreachable_database_by_default(cluster):
    url = await cluster.create_database("users")
    await cluster.stop()
    started = time.monotonic()
    with pytest.raises(DatabaseUnreachable, match="cannot reach the database"):
        async with running_service(url):
            pytest.fail("running_service started without its database")
    assert time.monotonic() - started < 15


async def test_the_cli_logs_one_line_per_retry_serves_health_and_starts_serving_when_it_can(
    cluster, tmp_path: Path
):
    url = (await cluster.create_database("users")).replace("postgres@", "postgres:s3cret-pw@")
    await cluster.stop()
    address = f"127.0.0.1:{free_port()}"
    async with service_process(
        "--database-url", url, "--hash-threads", "1", listen=address, cwd=tmp_path
    ) as running:
        redacted = url.replace("s3cret-pw", "***")

        async def retrying() -> bool:
            return any("retrying in" in line for line in running.lines)

        await eventually(retrying, within=60, what="a line saying the database is retried")
        (line, *_) = [line for line in running.lines if "retrying in" in line]
        assert f"cannot reach the postgres database at {redacted}: " in line, line
        assert "ConnectionRefusedError" in line or "Connection refused" in line, line
        assert await _health_is(address, NOT_SERVING)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            await _assert_unavailable(stub)
            await cluster.start()
            await running.wait_serving(within=30)
            assert await _health_is(address, SERVING)
            await create_user(stub)
        running.signal(signal.SIGTERM)
        assert await running.wait_exit() == 0, running.stderr
    assert "s3cret-pw" not in running.stderr
    assert "Traceback" not in running.stderr


async def test_a_hung_database_gives_unavailable_after_the_command_timeout_not_at_the_deadline(
    cluster,
):
    url = await cluster.create_database("users")
    async with running_service(url, db_command_timeout=1.0, health_probe_interval=0.5) as running:
        user = await create_user(running.stub)
        request = user_service_pb2.GetUserRequest(id=user.id)
        cluster.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as hung:
                await running.stub.GetUser(request, timeout=20)
            waited = time.monotonic() - started
        finally:
            cluster.thaw()
        assert hung.value.code() == UNAVAILABLE, hung.value
        _, problem = check_failure(hung.value)
        assert problem is None, problem
        # The command timeout, not the caller's 20 s deadline, ended the call.
        assert waited < 10, waited
        seen = set()

        async def answers() -> bool:
            try:
                return (await running.stub.GetUser(request, timeout=5)).id == user.id
            except grpc.aio.AioRpcError as error:
                seen.add(error.code())
                return False

        await eventually(answers, within=RECOVERY_LIMIT, what="GetUser answers after the thaw")
        assert seen <= {UNAVAILABLE}, seen
