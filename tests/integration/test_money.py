"""Deposit, TransferFunds, ListTransfers, and DeleteUser's balance guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import grpc.aio
import pytest
from users.v1 import user_service_pb2

from tests.helpers import assert_error, assert_invalid, create_user, failure
from tests.integration.money_helpers import (
    INT64_MAX,
    all_transfers,
    balance_of,
    deposit,
    funded_user,
    list_posts,
    list_transfers,
    new_request_id,
    transfer,
)

NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT


def delete(user_id: int) -> user_service_pb2.DeleteUserRequest:
    return user_service_pb2.DeleteUserRequest(id=user_id)


def assert_reused(got) -> None:
    assert_error(got, INVALID_ARGUMENT, "REQUEST_ID_REUSED")
    assert set(got.violations) == {"request_id"}, got


async def assert_nothing_moved(stub, balances: dict[int, int]) -> None:
    """Every user still has its balance and no transfer names any of them."""
    for user_id, expected in balances.items():
        assert await balance_of(stub, user_id) == expected, user_id
        assert list((await list_transfers(stub, user_id)).transfers) == [], user_id


# --- Deposit -------------------------------------------------------------------------


async def test_deposit_returns_the_user_with_the_new_balance(stub):
    user = await create_user(stub)

    first = await deposit(stub, user.id, 500, new_request_id())
    second = await deposit(stub, user.id, 250, new_request_id())

    assert first.balance == 500
    assert second.balance == 750
    assert (second.id, second.username, second.email) == (user.id, user.username, user.email)
    stored = await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
    assert stored.balance == 750
    assert stored == second


async def test_deposit_of_zero_or_a_negative_amount_is_invalid_argument_naming_amount(stub):
    user = await create_user(stub)
    for amount in (0, -1, -(2**63)):
        got = await failure(deposit(stub, user.id, amount, new_request_id()))
        assert_invalid(got, "amount")
    assert await balance_of(stub, user.id) == 0


async def test_deposit_for_a_missing_user_is_not_found(stub):
    user = await create_user(stub)
    got = await failure(deposit(stub, user.id + 1000, 100, new_request_id()))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert str(user.id + 1000) in got.message


async def test_deposit_with_a_non_positive_user_id_is_invalid_argument(stub):
    for user_id in (0, -1):
        assert_invalid(await failure(deposit(stub, user_id, 100, new_request_id())), "user_id")


async def test_deposit_replayed_with_its_request_id_returns_the_user_and_adds_nothing(stub):
    user = await create_user(stub)
    request_id = new_request_id()

    first = await deposit(stub, user.id, 100, request_id)
    replay = await deposit(stub, user.id, 100, request_id)

    assert first.balance == 100
    assert replay.id == user.id
    assert replay.balance == 100
    assert await balance_of(stub, user.id) == 100


async def test_deposits_without_a_request_id_are_not_deduplicated(stub):
    user = await create_user(stub)
    await deposit(stub, user.id, 100)
    again = await deposit(stub, user.id, 100)
    assert again.balance == 200


async def test_deposit_request_id_reused_with_another_amount_is_request_id_reused(stub):
    user = await create_user(stub)
    request_id = new_request_id()
    await deposit(stub, user.id, 100, request_id)

    got = await failure(deposit(stub, user.id, 101, request_id))

    assert_reused(got)
    assert await balance_of(stub, user.id) == 100


async def test_deposit_request_id_reused_for_another_user_is_request_id_reused(stub):
    user = await create_user(stub)
    other = await create_user(stub)
    request_id = new_request_id()
    await deposit(stub, user.id, 100, request_id)

    assert_reused(await failure(deposit(stub, other.id, 100, request_id)))
    assert await balance_of(stub, other.id) == 0
    assert await balance_of(stub, user.id) == 100


async def test_deposit_request_id_with_bad_characters_or_length_is_invalid_argument(stub):
    user = await create_user(stub)
    for request_id in ("with space", "semi;colon", "slash/", "ünïcode", "x" * 65, "a\nb", "%"):
        got = await failure(deposit(stub, user.id, 100, request_id))
        assert_invalid(got, "request_id")
    assert await balance_of(stub, user.id) == 0


async def test_deposit_request_id_of_every_allowed_character_up_to_64_is_accepted(stub):
    user = await create_user(stub)
    allowed = ["x" * 64, "Az09._:-", "urn:order:2024-01-01.0001_a", "1"]
    for request_id in allowed:
        await deposit(stub, user.id, 1, request_id)
    assert await balance_of(stub, user.id) == len(allowed)


async def test_deposit_names_every_bad_field_in_one_reply(stub):
    user = await create_user(stub)
    got = await failure(deposit(stub, user.id, 0, "bad id"))
    assert_invalid(got, "amount", "request_id")


async def test_deposit_that_would_overflow_the_balance_is_invalid_argument(stub):
    user = await create_user(stub)
    full = await deposit(stub, user.id, INT64_MAX, new_request_id())
    assert full.balance == INT64_MAX

    got = await failure(deposit(stub, user.id, 1, new_request_id()))

    assert got.code == INVALID_ARGUMENT, got
    assert got.domain == "users.v1", got
    assert "amount" in got.violations, got
    assert await balance_of(stub, user.id) == INT64_MAX


# --- TransferFunds -------------------------------------------------------------------


async def test_transfer_moves_the_amount_and_returns_the_transfer(stub):
    alice = await funded_user(stub, 1000)
    bob = await funded_user(stub, 50)
    request_id = new_request_id()
    before = datetime.now(UTC)

    moved = await transfer(stub, alice.id, bob.id, 300, request_id)

    after = datetime.now(UTC)
    assert moved.id > 0
    assert moved.from_user_id == alice.id
    assert moved.to_user_id == bob.id
    assert moved.amount == 300
    assert moved.request_id == request_id
    assert moved.HasField("create_time")
    created = moved.create_time.ToDatetime(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= created <= after + timedelta(seconds=1)
    assert await balance_of(stub, alice.id) == 700
    assert await balance_of(stub, bob.id) == 350
    assert list((await list_transfers(stub, alice.id)).transfers) == [moved]


async def test_transfer_of_the_whole_balance_leaves_zero(stub):
    alice = await funded_user(stub, 100)
    bob = await create_user(stub)
    await transfer(stub, alice.id, bob.id, 100, new_request_id())
    assert await balance_of(stub, alice.id) == 0
    assert await balance_of(stub, bob.id) == 100


async def test_transfer_without_a_request_id_gets_one(stub):
    alice = await funded_user(stub, 100)
    bob = await create_user(stub)
    first = await transfer(stub, alice.id, bob.id, 10)
    second = await transfer(stub, alice.id, bob.id, 10)
    assert first.request_id
    assert second.request_id
    assert first.request_id != second.request_id
    assert await balance_of(stub, bob.id) == 20


async def test_transfer_of_zero_or_a_negative_amount_is_invalid_argument(stub):
    alice = await funded_user(stub, 100)
    bob = await create_user(stub)
    for amount in (0, -1, -(2**63)):
        got = await failure(transfer(stub, alice.id, bob.id, amount, new_request_id()))
        assert_invalid(got, "amount")
    await assert_nothing_moved(stub, {alice.id: 100, bob.id: 0})


async def test_transfer_to_oneself_is_invalid_argument(stub):
    alice = await funded_user(stub, 100)
    got = await failure(transfer(stub, alice.id, alice.id, 10, new_request_id()))
    assert_invalid(got, "to_user_id")
    await assert_nothing_moved(stub, {alice.id: 100})


async def test_transfer_with_non_positive_user_ids_is_invalid_argument_naming_both(stub):
    got = await failure(transfer(stub, 0, -1, 10, new_request_id()))
    assert_invalid(got, "from_user_id", "to_user_id")


async def test_transfer_with_a_bad_request_id_is_invalid_argument(stub):
    alice = await funded_user(stub, 100)
    bob = await create_user(stub)
    got = await failure(transfer(stub, alice.id, bob.id, 10, "not a valid id"))
    assert_invalid(got, "request_id")
    await assert_nothing_moved(stub, {alice.id: 100, bob.id: 0})


async def test_transfer_from_a_missing_user_is_not_found(stub):
    bob = await create_user(stub)
    got = await failure(transfer(stub, bob.id + 1000, bob.id, 10, new_request_id()))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    await assert_nothing_moved(stub, {bob.id: 0})


async def test_transfer_to_a_missing_user_is_not_found_and_moves_nothing(stub):
    alice = await funded_user(stub, 100)
    missing = alice.id + 1000
    got = await failure(transfer(stub, alice.id, missing, 10, new_request_id()))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert str(missing) in got.message
    await assert_nothing_moved(stub, {alice.id: 100})


async def test_transfer_beyond_the_balance_is_insufficient_funds_and_moves_nothing(stub):
    alice = await funded_user(stub, 100)
    bob = await funded_user(stub, 5)
    got = await failure(transfer(stub, alice.id, bob.id, 101, new_request_id()))
    assert_error(got, FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    await assert_nothing_moved(stub, {alice.id: 100, bob.id: 5})


async def test_transfer_from_an_empty_balance_is_insufficient_funds(stub):
    alice = await create_user(stub)
    bob = await create_user(stub)
    got = await failure(transfer(stub, alice.id, bob.id, 1, new_request_id()))
    assert_error(got, FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    await assert_nothing_moved(stub, {alice.id: 0, bob.id: 0})


async def test_transfer_that_would_overflow_the_receiver_is_invalid_argument(stub):
    alice = await funded_user(stub, 10)
    bob = await funded_user(stub, INT64_MAX)

    got = await failure(transfer(stub, alice.id, bob.id, 1, new_request_id()))

    assert got.code == INVALID_ARGUMENT, got
    assert got.domain == "users.v1", got
    assert got.violations, got
    await assert_nothing_moved(stub, {alice.id: 10, bob.id: INT64_MAX})


async def test_failed_transfer_does_not_use_up_its_request_id(stub):
    alice = await funded_user(stub, 100)
    bob = await create_user(stub)
    request_id = new_request_id()
    await failure(transfer(stub, alice.id, bob.id, 150, request_id))
    await deposit(stub, alice.id, 50, new_request_id())

    moved = await transfer(stub, alice.id, bob.id, 150, request_id)

    assert moved.request_id == request_id
    assert await balance_of(stub, bob.id) == 150


async def test_transfer_replayed_with_its_request_id_returns_the_first_transfer(stub):
    alice = await funded_user(stub, 1000)
    bob = await create_user(stub)
    request_id = new_request_id()

    first = await transfer(stub, alice.id, bob.id, 300, request_id)
    replay = await transfer(stub, alice.id, bob.id, 300, request_id)

    assert replay == first
    assert await balance_of(stub, alice.id) == 700
    assert await balance_of(stub, bob.id) == 300
    assert list((await list_transfers(stub, alice.id)).transfers) == [first]


async def test_transfer_replayed_after_the_balance_ran_out_still_returns_the_transfer(stub):
    alice = await funded_user(stub, 300)
    bob = await create_user(stub)
    request_id = new_request_id()
    first = await transfer(stub, alice.id, bob.id, 300, request_id)

    assert await transfer(stub, alice.id, bob.id, 300, request_id) == first
    assert await balance_of(stub, alice.id) == 0


@pytest.mark.parametrize("changed", ["amount", "receiver", "direction"])
async def test_transfer_request_id_reused_with_other_fields_is_request_id_reused(stub, changed):
    alice = await funded_user(stub, 1000)
    bob = await funded_user(stub, 1000)
    carol = await create_user(stub)
    request_id = new_request_id()
    await transfer(stub, alice.id, bob.id, 300, request_id)

    other = {
        "amount": (alice.id, bob.id, 301),
        "receiver": (alice.id, carol.id, 300),
        "direction": (bob.id, alice.id, 300),
    }[changed]
    got = await failure(transfer(stub, *other, request_id))

    assert_reused(got)
    assert await balance_of(stub, alice.id) == 700
    assert await balance_of(stub, bob.id) == 1300
    assert await balance_of(stub, carol.id) == 0


async def test_request_id_of_a_deposit_reused_for_a_transfer_is_request_id_reused(stub):
    alice = await create_user(stub)
    bob = await create_user(stub)
    request_id = new_request_id()
    await deposit(stub, alice.id, 100, request_id)

    got = await failure(transfer(stub, alice.id, bob.id, 100, request_id))

    assert_reused(got)
    await assert_nothing_moved(stub, {alice.id: 100, bob.id: 0})


async def test_request_id_of_a_transfer_reused_for_a_deposit_is_request_id_reused(stub):
    alice = await funded_user(stub, 100)
    bob = await create_user(stub)
    request_id = new_request_id()
    await transfer(stub, alice.id, bob.id, 100, request_id)

    assert_reused(await failure(deposit(stub, bob.id, 100, request_id)))
    assert await balance_of(stub, bob.id) == 100


# --- ListTransfers -------------------------------------------------------------------


async def test_list_transfers_shows_sent_and_received_newest_first_without_deposits(stub):
    alice = await funded_user(stub, 1000)
    bob = await funded_user(stub, 1000)
    carol = await funded_user(stub, 1000)
    first = await transfer(stub, alice.id, bob.id, 10, new_request_id())
    second = await transfer(stub, bob.id, alice.id, 5, new_request_id())
    await transfer(stub, bob.id, carol.id, 7, new_request_id())
    await deposit(stub, alice.id, 99, new_request_id())
    third = await transfer(stub, carol.id, alice.id, 3, new_request_id())

    page = await list_transfers(stub, alice.id)

    assert list(page.transfers) == [third, second, first]
    assert page.next_page_token == ""


async def test_list_transfers_of_a_user_with_only_deposits_is_empty(stub):
    alice = await funded_user(stub, 1000)
    await deposit(stub, alice.id, 5, new_request_id())
    page = await list_transfers(stub, alice.id)
    assert list(page.transfers) == []
    assert page.next_page_token == ""


async def test_list_transfers_pages_cover_every_transfer_once_in_order(stub):
    alice = await funded_user(stub, 1000)
    bob = await funded_user(stub, 1000)
    made = []
    for i in range(5):
        source, target = (alice, bob) if i % 2 else (bob, alice)
        made.append(await transfer(stub, source.id, target.id, i + 1, new_request_id()))
        await deposit(stub, alice.id, 1, new_request_id())

    listed, pages = await all_transfers(stub, alice.id, page_size=2)

    assert pages == 3
    assert [t.id for t in listed] == [t.id for t in reversed(made)]
    assert listed == made[::-1]


async def test_list_transfers_with_a_bad_or_foreign_token_is_invalid_argument(stub):
    alice = await funded_user(stub, 1000)
    bob = await create_user(stub)
    for _ in range(3):
        await transfer(stub, alice.id, bob.id, 1, new_request_id())
    token = (await list_transfers(stub, alice.id, page_size=1)).next_page_token
    assert token

    assert_invalid(await failure(list_transfers(stub, alice.id, 1, "garbage")), "page_token")
    assert_invalid(await failure(list_transfers(stub, bob.id, 1, token)), "page_token")


async def test_list_transfers_with_a_negative_page_size_is_invalid_argument(stub):
    alice = await create_user(stub)
    assert_invalid(await failure(list_transfers(stub, alice.id, page_size=-1)), "page_size")


async def test_list_transfers_of_a_missing_user_is_not_found(stub):
    alice = await create_user(stub)
    got = await failure(list_transfers(stub, alice.id + 1000))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")


async def test_ledger_keeps_the_transfers_of_a_deleted_user(stub):
    alice = await funded_user(stub, 100)
    bob = await create_user(stub)
    moved = await transfer(stub, alice.id, bob.id, 100, new_request_id())
    assert await balance_of(stub, alice.id) == 0

    await stub.DeleteUser(delete(alice.id))

    assert_error(await failure(list_transfers(stub, alice.id)), NOT_FOUND, "USER_NOT_FOUND")
    assert list((await list_transfers(stub, bob.id)).transfers) == [moved]
    # A new transfer from the deleted user is refused; the recorded one stays.
    got = await failure(transfer(stub, alice.id, bob.id, 100, new_request_id()))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert list((await list_transfers(stub, bob.id)).transfers) == [moved]
    assert await balance_of(stub, bob.id) == 100


async def test_a_user_created_after_a_deletion_does_not_inherit_its_transfers(stub):
    bob = await create_user(stub)
    alice = await funded_user(stub, 100)
    await transfer(stub, alice.id, bob.id, 100, new_request_id())
    await stub.DeleteUser(delete(alice.id))

    carol = await create_user(stub)

    assert carol.id != alice.id
    assert carol.balance == 0
    assert list((await list_transfers(stub, carol.id)).transfers) == []


# --- DeleteUser and balances ---------------------------------------------------------


async def test_deleting_a_user_with_a_balance_is_failed_precondition(stub):
    alice = await funded_user(stub, 1)

    got = await failure(stub.DeleteUser(delete(alice.id)))

    assert_error(got, FAILED_PRECONDITION, "BALANCE_NOT_ZERO")
    still = await stub.GetUser(user_service_pb2.GetUserRequest(id=alice.id))
    assert still == alice
    assert list((await list_posts(stub, alice.id)).posts) == []


async def test_a_user_whose_balance_was_moved_away_can_be_deleted(stub):
    alice = await funded_user(stub, 40)
    bob = await create_user(stub)
    assert_error(
        await failure(stub.DeleteUser(delete(alice.id))), FAILED_PRECONDITION, "BALANCE_NOT_ZERO"
    )
    await transfer(stub, alice.id, bob.id, 40, new_request_id())

    await stub.DeleteUser(delete(alice.id))

    got = await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=alice.id)))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert_error(
        await failure(deposit(stub, alice.id, 1, new_request_id())), NOT_FOUND, "USER_NOT_FOUND"
    )
