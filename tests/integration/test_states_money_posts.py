"""What money and post methods do with DISABLED, LOCKED and DELETED users.

DISABLED and LOCKED users keep receiving money (refunds, payouts) but cannot
send it or write posts (FAILED_PRECONDITION, reason USER_NOT_ACTIVE); their
posts and transfers can still be listed. A DELETED user is NOT_FOUND for all
of them, on either side of a transfer.
"""

from __future__ import annotations

import grpc
import pytest

from tests.helpers import assert_error, create_user, failure
from tests.integration.lifecycle_helpers import DELETED, DISABLED, LOCKED, get, put_in_state
from tests.integration.money_helpers import (
    balance_of,
    create_post,
    deposit,
    funded_user,
    list_posts,
    list_transfers,
    new_request_id,
    transfer,
)

NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("state", [DISABLED, LOCKED])
async def test_disabled_and_locked_users_can_receive_money(stub, state):
    payer = await funded_user(stub, 500)
    user = await create_user(stub)
    await put_in_state(stub, user.id, state)

    credited = await deposit(stub, user.id, 100, new_request_id())
    await transfer(stub, payer.id, user.id, 50, new_request_id())

    assert credited.balance == 100
    assert credited.state == state
    assert (await get(stub, user.id)).balance == 150
    assert len((await list_transfers(stub, user.id)).transfers) == 1


@pytest.mark.parametrize("state", [DISABLED, LOCKED])
async def test_disabled_and_locked_users_cannot_send_money(stub, state):
    user = await funded_user(stub, 500)
    payee = await create_user(stub)
    await put_in_state(stub, user.id, state)

    got = await failure(transfer(stub, user.id, payee.id, 100, new_request_id()))

    assert_error(got, FAILED_PRECONDITION, "USER_NOT_ACTIVE")
    name = "DISABLED" if state == DISABLED else "LOCKED"
    assert got.metadata == {"user_id": str(user.id), "state": name}
    assert (await get(stub, user.id)).balance == 500
    assert await balance_of(stub, payee.id) == 0
    assert (await list_transfers(stub, user.id)).transfers == []


async def test_a_transfer_retried_after_the_sender_was_disabled_returns_the_first_result(stub):
    user = await funded_user(stub, 500)
    payee = await create_user(stub)
    key = new_request_id()
    first = await transfer(stub, user.id, payee.id, 100, key)
    await put_in_state(stub, user.id, DISABLED)

    again = await transfer(stub, user.id, payee.id, 100, key)

    assert again.id == first.id
    assert await balance_of(stub, user.id) == 400


async def test_a_deleted_user_neither_receives_nor_sends_money(stub):
    payer = await funded_user(stub, 500)
    user = await create_user(stub)
    await put_in_state(stub, user.id, DELETED)

    assert_error(
        await failure(deposit(stub, user.id, 100, new_request_id())), NOT_FOUND, "USER_NOT_FOUND"
    )
    into = await failure(transfer(stub, payer.id, user.id, 100, new_request_id()))
    out_of = await failure(transfer(stub, user.id, payer.id, 100, new_request_id()))

    for got in (into, out_of):
        assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
        assert got.metadata == {"user_ids": str(user.id)}
    assert await balance_of(stub, payer.id) == 500
    assert (await get(stub, user.id)).balance == 0
    assert_error(await failure(list_transfers(stub, user.id)), NOT_FOUND, "USER_NOT_FOUND")


@pytest.mark.parametrize("state", [DISABLED, LOCKED])
async def test_disabled_and_locked_users_cannot_write_posts_but_keep_them(stub, state):
    user = await create_user(stub)
    kept = await create_post(stub, user.id, title="before")
    await put_in_state(stub, user.id, state)

    got = await failure(create_post(stub, user.id, title="after"))

    assert_error(got, FAILED_PRECONDITION, "USER_NOT_ACTIVE")
    assert [p.id for p in (await list_posts(stub, user.id)).posts] == [kept.id]


async def test_a_deleted_user_has_no_posts_to_write_or_list(stub):
    user = await create_user(stub)
    await create_post(stub, user.id)
    await put_in_state(stub, user.id, DELETED)

    assert_error(await failure(create_post(stub, user.id)), NOT_FOUND, "USER_NOT_FOUND")
    assert_error(await failure(list_posts(stub, user.id)), NOT_FOUND, "USER_NOT_FOUND")
