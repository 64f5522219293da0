"""Graceful shutdown of ``python -m service`` on SIGTERM, with calls in flight."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from users.v1 import user_service_pb2, user_service_pb2_grpc

from tests.helpers import create_user
from tests.ops_helpers import (
    NOT_SERVING,
    SERVING,
    eventually,
    free_port,
    lock_waiters,
    require_postgres,
    service_process,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from users.v1 import resources_pb2
    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

    from tests.ops_helpers import ServiceProcess

GRACE = 10.0


@dataclass
class Scene:
    """A served database with a funded payer whose row an outsider has locked."""

    running: ServiceProcess
    channel: grpc.aio.Channel
    stub: UserServiceAsyncStub
    payer: resources_pb2.User
    payee: resources_pb2.User
    locker: asyncpg.Connection
    transaction: asyncpg.transaction.Transaction


@contextlib.asynccontextmanager
async def blocked_transfer_scene(
    database_url: str, tmp_path: Path, grace: float = GRACE
) -> AsyncIterator[Scene]:
    address = f"127.0.0.1:{free_port()}"
    async with service_process(
        "--database-url", database_url, "--grace-period", str(grace), "--hash-threads", "1",
        listen=address, cwd=tmp_path,
    ) as running:  # fmt: skip
        await running.wait_serving()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            payer, payee = await create_user(stub), await create_user(stub)
            await stub.Deposit(user_service_pb2.DepositRequest(user_id=payer.id, amount=100))
            locker = await asyncpg.connect(database_url)
            try:
                transaction = locker.transaction()
                await transaction.start()
                await locker.execute("SELECT id FROM users WHERE id = $1 FOR UPDATE", payer.id)
                yield Scene(running, channel, stub, payer, payee, locker, transaction)
            finally:
                await locker.close()


async def start_blocked_transfer(scene: Scene) -> asyncio.Task[resources_pb2.Transfer]:
    async def call() -> resources_pb2.Transfer:
        return await scene.stub.TransferFunds(
            user_service_pb2.TransferFundsRequest(
                from_user_id=scene.payer.id,
                to_user_id=scene.payee.id,
                amount=30,
                request_id="in-flight-1",
            ),
            timeout=60,
        )

    transfer = asyncio.create_task(call())

    async def waiting() -> bool:
        return await lock_waiters(scene.locker) == 1

    await eventually(waiting, within=10, what="the transfer waits on the row lock")
    return transfer


async def new_call_status(address: str) -> grpc.StatusCode:
    """The status of a fresh call on a fresh connection."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        try:
            await stub.GetUser(user_service_pb2.GetUserRequest(id=1), timeout=5)
        except grpc.aio.AioRpcError as error:
            code: grpc.StatusCode = error.code()
            return code
        return grpc.StatusCode.OK


async def test_sigterm_drains_in_flight_calls_refuses_new_ones_and_exits_0(database_url, tmp_path):
    require_postgres(database_url)
    async with blocked_transfer_scene(database_url, tmp_path) as scene:
        address = scene.running.address
        transfer = await start_blocked_transfer(scene)
        health = health_pb2_grpc.HealthStub(scene.channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await asyncio.wait_for(watch.read(), 10)
        assert first.status == SERVING

        scene.running.signal(signal.SIGTERM)
        update = await asyncio.wait_for(watch.read(), 10)
        assert update.status == NOT_SERVING
        # Stop watching: an open Watch would hold the server for its whole grace period.
        watch.cancel()

        # New calls are refused while the transfer is still held by the lock.
        codes = []
        for _ in range(50):
            codes.append(await new_call_status(address))
            if codes[-1] == grpc.StatusCode.UNAVAILABLE:
                break
            await asyncio.sleep(0.1)
        assert codes[-1] == grpc.StatusCode.UNAVAILABLE, codes
        assert set(codes) <= {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE}
        assert not transfer.done()

        await asyncio.sleep(1.0)
        assert not transfer.done(), "the transfer waits for the lock during the drain"
        await scene.transaction.rollback()
        done = await asyncio.wait_for(transfer, 15)
        assert done.amount == 30
        status = await scene.running.wait_exit(within=GRACE + 20)
        assert status == 0, scene.running.stderr
    # The transfer was committed, not cut off: the ledger has it.
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT id, balance FROM users ORDER BY id")
        balances = {row["id"]: row["balance"] for row in rows}
        moved = await connection.fetchval(
            "SELECT count(*) FROM ledger WHERE request_id = 'in-flight-1'"
        )
    finally:
        await connection.close()
    assert balances == {scene.payer.id: 70, scene.payee.id: 30}
    assert moved == 1


async def test_an_open_health_watch_does_not_hold_shutdown_for_the_whole_grace_period(
    database_url, tmp_path
):
    require_postgres(database_url)
    grace = 6.0
    async with blocked_transfer_scene(database_url, tmp_path, grace) as scene:
        transfer = await start_blocked_transfer(scene)
        watch = health_pb2_grpc.HealthStub(scene.channel).Watch(
            health_pb2.HealthCheckRequest(service="")
        )
        assert (await asyncio.wait_for(watch.read(), 10)).status == SERVING
        scene.running.signal(signal.SIGTERM)
        assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
        await scene.transaction.rollback()
        await asyncio.wait_for(transfer, 15)
        drained = time.monotonic()
        assert await scene.running.wait_exit(within=grace + 20) == 0
        took = time.monotonic() - drained
        # The watcher is still reading; the in-flight work is done.
        assert took < grace / 2, f"exited {took:.1f}s after the last call finished"
