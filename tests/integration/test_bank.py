"""The bank test (after Jepsen's): concurrent transfers never create or destroy money.

Twenty users are funded by deposits; 32 concurrent clients, each on its own
connection in a process apart from the server's (``tests/race_clients.py``),
send 2,000 random transfers between them, in both directions, and resend
some with the same request_id. Afterwards the books, read with raw SQL
(``tests/db_audit.py``), must balance.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import Counter, defaultdict

import grpc
import grpc.aio
from users.v1 import user_service_pb2

from service.testing import running_service
from tests.bank_load import BankLoad, audit
from tests.db_audit import balances, bank_violations, ledger_rows
from tests.helpers import create_user, failure
from tests.ops_helpers import eventually
from tests.race_clients import race
from tests.requirements import not_applicable

USERS = 20
CLIENTS = 32
TRANSFERS = 2000
OPENING_DEPOSIT = 1_000
# Calls of the bank load on a healthy database: sign-ups, deposits, transfers.
CALLS = 60


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


async def test_concurrent_transfers_keep_the_books_balanced(service, database_url):
    ids = await _open_accounts(service.stub, USERS, OPENING_DEPOSIT)
    rng = random.Random(20261125)
    lanes: list[list[tuple[str, user_service_pb2.TransferFundsRequest]]] = [
        [] for _ in range(CLIENTS)
    ]
    for index in range(TRANSFERS):
        source, target = rng.sample(ids, 2)
        request = user_service_pb2.TransferFundsRequest(
            from_user_id=source,
            to_user_id=target,
            amount=rng.randint(1, 400),
            request_id=str(uuid.uuid4()),
        )
        # One call in ten is resent, as a client would after a lost reply.
        lanes[index % CLIENTS] += [("TransferFunds", request)] * (2 if rng.random() < 0.1 else 1)

    outcomes = [o for lane in await race(service.address, lanes) for o in lane]
    requests = [request for lane in lanes for _, request in lane]

    assert [o.problem for o in outcomes if o.problem] == []
    codes = Counter(o.code for o in outcomes)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}, codes
    assert codes[grpc.StatusCode.OK] > TRANSFERS // 2, "too few transfers succeeded to mean much"
    assert codes[grpc.StatusCode.FAILED_PRECONDITION] > 0, "no transfer ever ran out of funds"

    # The books, read from the database itself.
    assert await bank_violations(database_url) == []
    assert sum(await balances(database_url, *ids)) == USERS * OPENING_DEPOSIT
    ledger = await ledger_rows(database_url, "kind = 'transfer'")
    transfers = {row["request_id"]: row["id"] for row in ledger}
    # Every request_id's outcomes: the transfer ids returned, and the refusals.
    outcomes_of: dict[str, set[object]] = defaultdict(set)
    for request, outcome in zip(requests, outcomes, strict=True):
        outcomes_of[request.request_id].add(outcome.reply.id if outcome.ok else outcome.code)
    succeeded = {rid for rid, seen in outcomes_of.items() if any(isinstance(o, int) for o in seen)}
    assert set(transfers) == succeeded, "ledger and successful calls disagree"
    for request_id, seen in outcomes_of.items():
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


async def test_bank_load_audit_finds_every_call_applied_on_either_backend(database_url):
    """The fault tests' load and audit (tests/bank_load.py) on a healthy database, both backends.

    With nothing to fail, every call is OK or INSUFFICIENT_FUNDS and the raw-SQL
    audit finds each one applied exactly once: the auditor that the fault tests
    and the soak rely on is itself checked here on every run.
    """
    async with running_service(database_url, hash_threads=1, access_log=False) as running:
        load = BankLoad(running.address, clients=4)
        stop = asyncio.Event()
        clients = asyncio.create_task(load.run(stop, mix=(0.2, 0.3)))

        # Bounded by calls, not time: a loaded machine is slower, not wrong.
        async def enough() -> bool:
            return len(load.calls) >= CALLS

        await eventually(enough, within=60, what=f"{CALLS} calls of the bank load")
        stop.set()
        await clients

    assert load.bad == [], load.bad[:10]
    assert set(load.codes) <= {"OK", "FAILED_PRECONDITION"}, load.codes
    methods = {call.method for call in load.calls if call.code.name == "OK"}
    assert methods == {"CreateUser", "Deposit", "TransferFunds"}, load.codes
    found = await audit(database_url, load.calls, converged=True)
    assert (found.lost, found.violations) == ([], [])
