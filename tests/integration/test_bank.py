"""The bank test (after Jepsen's): concurrent transfers never create or destroy money.

Twenty users are funded by deposits; 32 concurrent clients, each on its own
channel, send 2,000 random transfers between them, in both directions, and
resend some with the same request_id. Afterwards the books must balance.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import defaultdict

import grpc
import grpc.aio
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.db.models import LedgerRow
from tests.helpers import create_user, failure
from tests.integration.money_helpers import ledger_sums
from tests.requirements import not_applicable

USERS = 20
CLIENTS = 32
TRANSFERS = 2000
OPENING_DEPOSIT = 1_000


async def _open_accounts(stub, count: int, amount: int) -> list[int]:
    ids = []
    for _ in range(count):
        user = await create_user(stub)
        await stub.Deposit(
            user_service_pb2.DepositRequest(
                user_id=user.id, amount=amount, request_id=str(uuid.uuid4())
            )
        )
        ids.append(user.id)
    return ids


async def _balances(stub, ids: list[int]) -> dict[int, int]:
    reply = await stub.BatchGetUsers(user_service_pb2.BatchGetUsersRequest(ids=ids))
    return {user.id: user.balance for user in reply.users}


async def test_concurrent_transfers_keep_the_books_balanced(service):
    ids = await _open_accounts(service.stub, USERS, OPENING_DEPOSIT)
    rng = random.Random(20261125)
    plan = []
    for _ in range(TRANSFERS):
        source, target = rng.sample(ids, 2)
        plan.append((source, target, rng.randint(1, 400), str(uuid.uuid4())))
    # Every outcome of every request_id, to check that replays agree.
    outcomes: dict[str, set[object]] = defaultdict(set)
    codes: dict[grpc.StatusCode, int] = defaultdict(int)

    async def client(share: list[tuple[int, int, int, str]], seed: int) -> None:
        local = random.Random(seed)
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            for source, target, amount, request_id in share:
                request = user_service_pb2.TransferFundsRequest(
                    from_user_id=source, to_user_id=target, amount=amount, request_id=request_id
                )
                # One call in ten is resent, as a client would after a lost reply.
                for _ in range(2 if local.random() < 0.1 else 1):
                    try:
                        transfer = await stub.TransferFunds(request)
                    except grpc.aio.AioRpcError as error:
                        codes[error.code()] += 1
                        outcomes[request_id].add(error.code())
                    else:
                        codes[grpc.StatusCode.OK] += 1
                        outcomes[request_id].add(transfer.id)

    await asyncio.gather(*(client(plan[i::CLIENTS], i) for i in range(CLIENTS)))

    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}, codes
    assert codes[grpc.StatusCode.OK] > TRANSFERS // 2, "too few transfers succeeded to mean much"
    assert codes[grpc.StatusCode.FAILED_PRECONDITION] > 0, "no transfer ever ran out of funds"

    balances = await _balances(service.stub, ids)
    assert sum(balances.values()) == USERS * OPENING_DEPOSIT
    assert min(balances.values()) >= 0

    with service.server.database.activate():
        ledger = await LedgerRow.all()
    moved = ledger_sums((row.from_user_id, row.to_user_id, row.amount) for row in ledger)
    assert moved == balances, "a balance differs from the sum of its ledger rows"

    transfers = {row.request_id: row.id for row in ledger if row.kind == "transfer"}
    succeeded = {rid for rid, seen in outcomes.items() if any(isinstance(o, int) for o in seen)}
    assert set(transfers) == succeeded, "ledger and successful calls disagree"
    for request_id, seen in outcomes.items():
        ids_seen = {o for o in seen if isinstance(o, int)}
        # A replay returns the first transfer; it never makes a second one.
        assert len(ids_seen) <= 1, (request_id, seen)
        if ids_seen:
            assert ids_seen == {transfers[request_id]}


async def test_opposite_transfers_at_once_never_deadlock(service, backend, caplog):
    if backend != "postgres":
        not_applicable("row locks exist only on PostgreSQL; SQLite serialises writers")
    a, b = await _open_accounts(service.stub, 2, 10_000)

    async def move(source: int, target: int) -> int:
        transfer = await service.stub.TransferFunds(
            user_service_pb2.TransferFundsRequest(
                from_user_id=source, to_user_id=target, amount=1, request_id=str(uuid.uuid4())
            )
        )
        return int(transfer.id)

    with caplog.at_level(logging.INFO, logger="service.money"):
        done = await asyncio.gather(
            *[move(a, b) for _ in range(500)], *[move(b, a) for _ in range(500)]
        )

    assert len(set(done)) == 1000
    assert await _balances(service.stub, [a, b]) == {a: 10_000, b: 10_000}
    # Retries would hide deadlocks; with ordered locking there are none to retry.
    assert not [r for r in caplog.records if "conflicted" in r.getMessage()]


async def test_transfer_that_would_overdraw_moves_nothing(service):
    a, b = await _open_accounts(service.stub, 2, 100)
    got = await failure(
        service.stub.TransferFunds(
            user_service_pb2.TransferFundsRequest(from_user_id=a, to_user_id=b, amount=101)
        )
    )
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert got.reason == "INSUFFICIENT_FUNDS"
    assert await _balances(service.stub, [a, b]) == {a: 100, b: 100}
