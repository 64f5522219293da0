"""PostgreSQL restarted or crashed under load: UNAVAILABLE meanwhile, nothing lost, back by itself.

PostgreSQL only, by nature: the tests stop and restart a database server, and
SQLite has none. They never touch the shared server of USERS_TEST_POSTGRES_URL:
each starts a throwaway cluster of its own (``tests/pg_cluster.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from service.testing import running_service
from tests.bank_load import UNAVAILABLE, BankLoad, audit
from tests.ops_helpers import SERVICE_NAME, SERVING, eventually, health_status
from tests.pg_cluster import ClusterUnavailable, PostgresCluster, find_binaries, throwaway_cluster

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Seconds of load before the first fault, between faults and after the last.
LOAD_PHASE = 1.5
# How long the crashed cluster stays down: long enough that calls meet it.
OUTAGE = 1.0
# "Recovers by itself within seconds": the first call after the cluster is back.
RECOVERY_LIMIT = 10.0


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[PostgresCluster]:
    try:
        find_binaries()
    except ClusterUnavailable as error:
        pytest.skip(f"needs a private PostgreSQL cluster: {error}")
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


async def _is_serving(address: str) -> bool:
    """Both health names are SERVING."""
    return all([await health_status(address, name) == SERVING for name in ("", SERVICE_NAME)])
