"""Money under races: replays, overdrafts, opposite transfers, a transfer against a deletion.

The racing calls come from another process, each on its own connection
(``tests/race_clients.py``), and what they left is read with raw SQL
(``tests/db_audit.py``): balances, ledger rows, and the invariants of the
books (the sum of balances is the sum of deposits, each balance is its
ledger sum, no balance below zero, each request_id applied once).
"""

from __future__ import annotations

import grpc
from users.v1 import user_service_pb2

from tests.db_audit import balances, bank_violations, ledger_rows, user_row
from tests.helpers import create_user
from tests.integration.money_helpers import funded_user, list_transfers, new_request_id
from tests.race_clients import race_calls, race_pair

OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def deposit(
    user_id: int, amount: int, request_id: str
) -> tuple[str, user_service_pb2.DepositRequest]:
    return "Deposit", user_service_pb2.DepositRequest(
        user_id=user_id, amount=amount, request_id=request_id
    )


def transfer(
    source: int, target: int, amount: int, request_id: str
) -> tuple[str, user_service_pb2.TransferFundsRequest]:
    return "TransferFunds", user_service_pb2.TransferFundsRequest(
        from_user_id=source, to_user_id=target, amount=amount, request_id=request_id
    )


async def test_concurrent_replays_of_one_deposit_add_the_amount_once(service, database_url):
    user = await create_user(service.stub)
    request_id = new_request_id()

    outcomes = await race_calls(service.address, [deposit(user.id, 70, request_id)] * 10)

    assert [(o.code, o.problem) for o in outcomes] == [(OK, None)] * 10, outcomes
    assert {(o.reply.id, o.reply.balance) for o in outcomes} == {(user.id, 70)}
    stored = await ledger_rows(database_url, "request_id = $1", request_id)
    assert [(r["kind"], r["to_user_id"], r["amount"]) for r in stored] == [("deposit", user.id, 70)]
    assert await balances(database_url, user.id) == [70]
    assert await bank_violations(database_url) == []


async def test_concurrent_identical_transfers_move_money_once_and_agree_on_the_transfer(
    service, database_url
):
    alice = await funded_user(service.stub, 1000)
    bob = await create_user(service.stub)
    request_id = new_request_id()

    outcomes = await race_calls(service.address, [transfer(alice.id, bob.id, 300, request_id)] * 10)

    assert [(o.code, o.problem) for o in outcomes] == [(OK, None)] * 10, outcomes
    assert all(o.reply == outcomes[0].reply for o in outcomes)
    stored = await ledger_rows(database_url, "request_id = $1", request_id)
    assert [r["id"] for r in stored] == [outcomes[0].reply.id]
    assert await balances(database_url, alice.id, bob.id) == [700, 300]
    assert await bank_violations(database_url) == []
    listed = (await list_transfers(service.stub, alice.id)).transfers
    assert [t.id for t in listed] == [outcomes[0].reply.id]


async def test_concurrent_transfers_draining_one_balance_never_overdraw_it(service, database_url):
    alice = await funded_user(service.stub, 500)
    bob = await create_user(service.stub)

    outcomes = await race_calls(
        service.address, [transfer(alice.id, bob.id, 100, new_request_id()) for _ in range(10)]
    )

    assert [o.problem for o in outcomes if o.problem] == []
    done = [o.reply.id for o in outcomes if o.ok]
    assert len(done) == 5, outcomes
    refused = {(o.code, o.reason) for o in outcomes if not o.ok}
    assert refused == {(FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")}
    moved = await ledger_rows(database_url, "kind = 'transfer'")
    assert sorted(r["id"] for r in moved) == sorted(done)
    assert await balances(database_url, alice.id, bob.id) == [0, 500]
    assert await bank_violations(database_url) == []


async def test_concurrent_opposite_transfers_conserve_the_total(service, database_url):
    alice = await funded_user(service.stub, 1000)
    bob = await funded_user(service.stub, 1000)
    calls = []
    for i in range(20):
        source, target = (alice, bob) if i % 2 else (bob, alice)
        calls.append(transfer(source.id, target.id, 10 + i, new_request_id()))

    outcomes = await race_calls(service.address, calls)

    assert [(o.code, o.problem) for o in outcomes] == [(OK, None)] * 20, outcomes
    sent_by_alice = sum(10 + i for i in range(20) if i % 2)
    sent_by_bob = sum(10 + i for i in range(20) if not i % 2)
    assert await balances(database_url, alice.id, bob.id) == [
        1000 - sent_by_alice + sent_by_bob,
        1000 - sent_by_bob + sent_by_alice,
    ]
    assert len(await ledger_rows(database_url, "kind = 'transfer'")) == 20
    assert await bank_violations(database_url) == []


async def test_transfers_racing_the_deletion_of_their_receiver_never_lose_money(
    service, database_url
):
    alice = await funded_user(service.stub, 1000)
    seen = set()
    for index in range(6):
        bob = await create_user(service.stub)
        request_id = new_request_id()
        moved, deleted = await race_pair(
            service.address,
            transfer(alice.id, bob.id, 10, request_id),
            ("DeleteUser", user_service_pb2.DeleteUserRequest(id=bob.id)),
            index,
        )
        assert (moved.problem, deleted.problem) == (None, None)
        stored = await user_row(database_url, bob.id)
        ledger = await ledger_rows(database_url, "request_id = $1", request_id)
        assert stored is not None
        if not deleted.ok:
            # The transfer came first: bob has the money and could not be deleted.
            seen.add("transfer first")
            assert (deleted.code, deleted.reason) == (FAILED_PRECONDITION, "BALANCE_NOT_ZERO")
            assert moved.ok, moved
            assert (stored["balance"], stored["delete_time"]) == (10, None)
            assert [r["id"] for r in ledger] == [moved.reply.id]
        else:
            # The deletion came first: the transfer found no receiver and moved nothing.
            seen.add("delete first")
            assert (moved.code, moved.reason) == (NOT_FOUND, "USER_NOT_FOUND"), moved
            assert stored["balance"] == 0
            assert stored["delete_time"] is not None
            assert ledger == []
        assert await bank_violations(database_url) == []
    assert seen == {"transfer first", "delete first"}
