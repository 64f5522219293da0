"""The HA deployment through a switchover, a failover, an orphaned primary and two rejoins.

A short form of ``make ha-soak`` (seconds between faults instead of tens):
``deploy/ha/cluster.py`` runs etcd, two Patroni nodes with a synchronous
standby, PgBouncer and two service replicas; bank clients call both replicas
while the primary moves. PostgreSQL only, by nature, and only where Debian's
patroni, etcd-server and pgbouncer are installed (``make ha``; CI installs
them): elsewhere it is skipped, saying which is missing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

import asyncpg
import grpc
import grpc.aio
import pytest
from users.v1 import user_service_pb2, user_service_pb2_grpc

from tests.bank_load import UNAVAILABLE, check_failure
from tests.ha_cluster import HaCluster, HaUnavailable, check_ha_available, ha_cluster
from tests.ha_soak import FAULTS, report, run_soak
from tests.helpers import create_user
from tests.requirements import require

# Seconds of load before the first fault and after each one.
PHASE = 3.0


async def test_a_moving_primary_loses_no_acknowledged_write_and_replicas_recover_by_themselves():
    try:
        check_ha_available()
    except HaUnavailable as error:
        require("the HA engines", str(error))
    outcome = await run_soak(PHASE, clients=4, replicas=2)
    report(outcome)  # shown by pytest when an assertion below fails

    assert [fault.name for fault in outcome.faults] == list(FAULTS)
    # Calls met the faults, and each ended OK or UNAVAILABLE with our details.
    codes = {call.code.name for call in outcome.calls}
    assert "UNAVAILABLE" in codes, codes
    assert outcome.bad == [], outcome.bad[:10]
    for fault in outcome.faults:
        assert fault.first_ok is not None, f"no OK call after {fault.name}"
    # Nothing acknowledged is missing, before and after the resends settle it.
    assert outcome.before.lost == [], outcome.before.lost[:10]
    assert outcome.after.lost == [], outcome.after.lost[:10]
    assert outcome.before.violations == [], outcome.before.violations[:10]
    assert outcome.after.violations == [], outcome.after.violations[:10]
    # The same replica processes served throughout, and logged no traceback.
    assert all(outcome.replicas_alive), outcome.replicas_alive
    assert outcome.tracebacks == [], outcome.tracebacks[:5]
    # Each replica's feed listener found the new primary by itself (--events-direct-url).
    assert outcome.listeners_on_primary == 2


async def test_a_commit_held_by_synchronous_replication_is_unavailable_and_its_retry_settles_it():
    """The standby stops confirming: the commit's outcome is unknown, so UNAVAILABLE, never OK.

    The replicas run with --db-command-timeout 5: asyncpg gives up on the
    COMMIT and cancels it, and PostgreSQL keeps the commit it had already
    written locally (synchronous replication does not undo it). The resend with
    the same request_id must then find it, not apply it twice.
    """
    try:
        check_ha_available()
    except HaUnavailable as error:
        require("the HA engines", str(error))
    async with ha_cluster(replicas=1) as cluster:
        standby = cluster.directory / cluster.up["standby"] / "data" / "postmaster.pid"
        frozen = [int(standby.read_text().split()[0])]
        frozen += _children(frozen[0])
        async with grpc.aio.insecure_channel(cluster.addresses[0]) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            user = await create_user(stub)
            deposit = user_service_pb2.DepositRequest(
                user_id=user.id, amount=700, request_id=str(uuid.uuid4())
            )
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.Deposit(deposit, timeout=30)
                held = await _ledger_rows(cluster, deposit.request_id)
            finally:
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
            assert raised.value.code() == UNAVAILABLE, raised.value
            reason, problem = check_failure(raised.value)
            assert (reason, problem) == ("DATABASE_UNAVAILABLE", None)
            # Committed on the primary although never confirmed by the standby.
            assert held == 1

            settled = await stub.Deposit(deposit, timeout=30)
            assert settled.balance == 700
            assert await _ledger_rows(cluster, deposit.request_id) == 1


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


async def _ledger_rows(cluster: HaCluster, request_id: str) -> int:
    connection = await asyncpg.connect(await cluster.primary_url())
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM ledger WHERE request_id = $1", request_id
        )
    finally:
        await connection.close()
    return count
