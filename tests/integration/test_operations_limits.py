"""Limits: message size, concurrent calls, and deadlines that stop database work."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import grpc.aio
import pytest
from users.v1 import user_service_pb2

from service.testing import running_service
from tests.helpers import PASSWORD, create_user, failure, unique_name
from tests.ops_helpers import eventually, lock_waiters, require_postgres, stub_of


async def test_a_request_over_the_message_limit_is_resource_exhausted(database_url):
    async with running_service(database_url, max_message_bytes=64 * 1024) as running:
        got = await failure(
            stub_of(running).CreateUser(
                user_service_pb2.CreateUserRequest(
                    username="big",
                    password=PASSWORD,
                    email="big@example.com",
                    display_name="x" * (100 * 1024),
                )
            )
        )
        assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED, got
        # The server is fine, and a request under the limit still works.
        user = await create_user(stub_of(running), "small", display_name="x" * 100)
        assert user.display_name == "x" * 100
        listed = await stub_of(running).ListUsers(user_service_pb2.ListUsersRequest())
        assert [u.username for u in listed.users] == ["small"]


async def test_calls_over_the_concurrency_limit_are_refused_and_the_rest_succeed(database_url):
    async with running_service(database_url, max_concurrent_rpcs=2, hash_threads=1) as running:
        stub = stub_of(running)
        names = [unique_name("burst") for _ in range(20)]
        results = await asyncio.gather(
            *(create_user(stub, name) for name in names), return_exceptions=True
        )
        ok = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        for error in refused:
            assert isinstance(error, grpc.aio.AioRpcError), error
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert ok, "some calls got through"
        assert refused, "some calls were over the limit of 2"
        # Exactly the accepted sign-ups exist: refused ones did nothing.
        listed = await stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=100))
        assert sorted(u.username for u in listed.users) == sorted(u.username for u in ok)
        # Once the burst is over, calls are accepted again.
        await create_user(stub)


async def test_a_call_past_its_deadline_stops_waiting_in_the_database_and_moves_no_money(
    database_url,
):
    require_postgres(database_url)
    async with running_service(database_url) as running:
        stub = stub_of(running)
        payer, payee = await create_user(stub), await create_user(stub)
        await stub.Deposit(user_service_pb2.DepositRequest(user_id=payer.id, amount=100))
        locker = await asyncpg.connect(database_url)
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("SELECT id FROM users WHERE id = $1 FOR UPDATE", payer.id)
            call = asyncio.ensure_future(
                stub.TransferFunds(
                    user_service_pb2.TransferFundsRequest(
                        from_user_id=payer.id,
                        to_user_id=payee.id,
                        amount=60,
                        request_id="deadline-1",
                    ),
                    timeout=1.0,
                )
            )

            async def waiting() -> bool:
                return await lock_waiters(locker) == 1

            # The transfer is blocked on the row lock (proof that the rest means something).
            await eventually(waiting, within=5, interval=0.02, what="the transfer waits")
            got = await failure(call)
            assert got.code == grpc.StatusCode.DEADLINE_EXCEEDED, got

            async def released() -> bool:
                return await lock_waiters(locker) == 0

            # The server cancelled its query instead of leaving it queued for the lock.
            await eventually(released, within=3, interval=0.05, what="the server's query ends")
            await transaction.rollback()
        finally:
            await locker.close()

        # Had the query been left waiting, it would now take the lock and move the money.
        await asyncio.sleep(1.0)
        after_payer = await stub.GetUser(user_service_pb2.GetUserRequest(id=payer.id))
        after_payee = await stub.GetUser(user_service_pb2.GetUserRequest(id=payee.id))
        assert (after_payer.balance, after_payee.balance) == (100, 0)
        transfers = await stub.ListTransfers(
            user_service_pb2.ListTransfersRequest(user_id=payer.id)
        )
        assert list(transfers.transfers) == []
        # The same request id now goes through, once.
        done = await stub.TransferFunds(
            user_service_pb2.TransferFundsRequest(
                from_user_id=payer.id, to_user_id=payee.id, amount=60, request_id="deadline-1"
            )
        )
        assert done.amount == 60
        final = await stub.GetUser(user_service_pb2.GetUserRequest(id=payer.id))
        assert final.balance == 40


async def test_a_call_the_client_cancels_stops_waiting_in_the_database(database_url):
    require_postgres(database_url)
    async with running_service(database_url) as running:
        stub = stub_of(running)
        payer, payee = await create_user(stub), await create_user(stub)
        await stub.Deposit(user_service_pb2.DepositRequest(user_id=payer.id, amount=100))
        locker = await asyncpg.connect(database_url)
        try:
            async with locker.transaction():
                await locker.execute("SELECT id FROM users WHERE id = $1 FOR UPDATE", payer.id)
                call = stub.TransferFunds(
                    user_service_pb2.TransferFundsRequest(
                        from_user_id=payer.id, to_user_id=payee.id, amount=60
                    ),
                    timeout=30,
                )

                async def waiting() -> bool:
                    return await lock_waiters(locker) == 1

                task = asyncio.ensure_future(call)
                await eventually(waiting, within=5, interval=0.02, what="the transfer waits")
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

                async def released() -> bool:
                    return await lock_waiters(locker) == 0

                await eventually(released, within=3, interval=0.05, what="the server's query ends")
                # Leaving the block rolls the lock holder back.
        finally:
            await locker.close()
        await asyncio.sleep(1.0)
        after = await stub.GetUser(user_service_pb2.GetUserRequest(id=payer.id))
        assert after.balance == 100
