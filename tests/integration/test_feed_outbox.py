"""The outbox: every write RPC commits its events with the change, and only then."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from users.v1 import events_pb2, resources_pb2, user_service_pb2

from tests.helpers import PASSWORD, assert_error, create_user, failure, unique_name

E = events_pb2


async def all_events(stub, after: int = 0, **filters) -> list[events_pb2.Event]:
    """Every event after ``after``, page by page through the watermark."""
    seen: list[events_pb2.Event] = []
    while True:
        page = await stub.ListEvents(
            E.ListEventsRequest(after_sequence=after, page_size=50, **filters)
        )
        seen.extend(page.events)
        if not page.events:
            return seen
        after = page.watermark


async def head(stub) -> int:
    """The current end of the feed: a watermark past every event so far."""
    after = 0
    while True:
        page = await stub.ListEvents(E.ListEventsRequest(after_sequence=after, page_size=1000))
        if not page.events:
            return int(page.watermark)
        after = page.watermark


def types(events) -> list[int]:
    return [e.type for e in events]


async def test_every_write_rpc_appends_its_events_in_order(stub):
    start = await head(stub)
    user = await create_user(stub)
    other = await create_user(stub)
    request = user_service_pb2
    await stub.UpdateUser(
        request.UpdateUserRequest(
            user=resources_pb2.User(id=user.id, display_name="Ada"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    )
    await stub.Deposit(request.DepositRequest(user_id=user.id, amount=500, request_id="d-1"))
    await stub.TransferFunds(
        request.TransferFundsRequest(
            from_user_id=user.id, to_user_id=other.id, amount=200, request_id="t-1"
        )
    )
    await stub.CreatePost(request.CreatePostRequest(user_id=user.id, title="Hi", body="there"))
    await stub.ChangePassword(
        request.ChangePasswordRequest(
            id=other.id, current_password=PASSWORD, new_password="another password"
        )
    )
    await stub.LockUser(request.LockUserRequest(id=user.id))
    await stub.UnlockUser(request.UnlockUserRequest(id=user.id))
    await stub.DisableUser(request.DisableUserRequest(id=user.id))
    await stub.EnableUser(request.EnableUserRequest(id=user.id))
    await stub.TransferFunds(
        request.TransferFundsRequest(
            from_user_id=user.id, to_user_id=other.id, amount=300, request_id="t-2"
        )
    )
    await stub.DeleteUser(request.DeleteUserRequest(id=user.id))
    await stub.UndeleteUser(request.UndeleteUserRequest(id=user.id))
    batch = await stub.BatchCreateUsers(
        request.BatchCreateUsersRequest(
            requests=[
                request.CreateUserRequest(
                    username=name, email=f"{name}@example.com", password=PASSWORD
                )
                for name in (unique_name(), unique_name())
            ]
        )
    )

    events = await all_events(stub, start)

    assert types(events) == [
        E.USER_CREATED,
        E.USER_CREATED,
        E.USER_UPDATED,
        E.DEPOSIT_MADE,
        E.FUNDS_TRANSFERRED,
        E.POST_CREATED,
        E.PASSWORD_CHANGED,
        E.USER_LOCKED,
        E.USER_UNLOCKED,
        E.USER_DISABLED,
        E.USER_ENABLED,
        E.FUNDS_TRANSFERRED,
        E.USER_DELETED,
        E.USER_UNDELETED,
        E.USER_CREATED,
        E.USER_CREATED,
    ]
    sequences = [e.sequence for e in events]
    assert sequences == sorted(set(sequences))
    assert events[0].user == user
    assert events[2].user.display_name == "Ada"
    assert events[3].user.balance == 500
    transfer = events[4].transfer
    assert (transfer.from_user_id, transfer.to_user_id, transfer.amount) == (user.id, other.id, 200)
    assert events[4].user_id == user.id
    assert events[5].post.title == "Hi"
    assert events[6].user.id == other.id
    assert events[6].user.etag != other.etag
    assert events[7].user.state == resources_pb2.LOCKED
    assert events[12].user.state == resources_pb2.DELETED
    assert [e.user.id for e in events[-2:]] == [u.id for u in batch.users]
    assert all(e.actor == "" for e in events)
    assert all(e.create_time.seconds > 0 for e in events)


async def test_no_event_carries_a_password_or_hash(stub):
    start = await head(stub)
    user = await create_user(stub, password="a very secret password")
    await stub.ChangePassword(
        user_service_pb2.ChangePasswordRequest(
            id=user.id,
            current_password="a very secret password",
            new_password="another secret password",
        )
    )
    raw = b"".join(e.SerializeToString() for e in await all_events(stub, start))
    assert b"secret password" not in raw
    assert b"$argon2" not in raw


async def test_failed_and_replayed_writes_append_nothing(stub):
    user = await create_user(stub)
    deposit = user_service_pb2.DepositRequest(user_id=user.id, amount=5, request_id="once")
    await stub.Deposit(deposit)
    start = await head(stub)

    await stub.Deposit(deposit)  # a replay moves nothing
    await failure(
        stub.CreateUser(
            user_service_pb2.CreateUserRequest(
                username=user.username, email="x@example.com", password=PASSWORD
            )
        )
    )
    await failure(stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id)))  # balance
    await failure(
        stub.TransferFunds(
            user_service_pb2.TransferFundsRequest(
                from_user_id=user.id, to_user_id=user.id + 1000, amount=1, request_id="t"
            )
        )
    )
    await stub.UpdateUser(
        user_service_pb2.UpdateUserRequest(
            user=resources_pb2.User(id=user.id, display_name="preview"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            validate_only=True,
        )
    )
    # A login is not a change, even when it re-hashes the password.
    await stub.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(username=user.username, password=PASSWORD)
    )

    assert await all_events(stub, start) == []


async def test_filters_by_type_and_user(stub):
    start = await head(stub)
    alice = await create_user(stub)
    bob = await create_user(stub)
    carol = await create_user(stub)
    await stub.Deposit(user_service_pb2.DepositRequest(user_id=alice.id, amount=9, request_id="a"))
    await stub.TransferFunds(
        user_service_pb2.TransferFundsRequest(
            from_user_id=alice.id, to_user_id=bob.id, amount=4, request_id="ab"
        )
    )
    await stub.LockUser(user_service_pb2.LockUserRequest(id=carol.id))

    bobs = await all_events(stub, start, user_id=bob.id)
    assert types(bobs) == [E.USER_CREATED, E.FUNDS_TRANSFERRED]  # received transfers count
    money = await all_events(stub, start, types=[E.DEPOSIT_MADE, E.FUNDS_TRANSFERRED])
    assert types(money) == [E.DEPOSIT_MADE, E.FUNDS_TRANSFERRED]
    carols = await all_events(stub, start, user_id=carol.id, types=[E.USER_LOCKED])
    assert [e.user.id for e in carols] == [carol.id]


async def test_the_watermark_covers_what_was_returned(stub):
    start = await head(stub)
    for _ in range(5):
        await create_user(stub)
    page = await stub.ListEvents(E.ListEventsRequest(after_sequence=start, page_size=2))
    assert len(page.events) == 2
    assert page.watermark == page.events[-1].sequence
    rest = await all_events(stub, page.watermark)
    assert len(rest) == 3
    assert rest[0].sequence > page.watermark
    empty = await stub.ListEvents(E.ListEventsRequest(after_sequence=rest[-1].sequence))
    assert list(empty.events) == []
    assert empty.watermark >= rest[-1].sequence


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (E.ListEventsRequest(after_sequence=-1), "after_sequence"),
        (E.ListEventsRequest(page_size=-1), "page_size"),
        (E.ListEventsRequest(user_id=-3), "user_id"),
        (E.ListEventsRequest(types=[E.EVENT_TYPE_UNSPECIFIED]), "types[0]"),
        (E.ListEventsRequest(types=[E.USER_CREATED, 99]), "types[1]"),  # type: ignore[list-item]
        (E.ListEventsRequest(types=[E.BOOKMARK]), "types[0]"),
    ],
)
async def test_bad_list_requests_are_invalid_argument(stub, request_, field):
    got = await failure(stub.ListEvents(request_))
    assert_error(got, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert field in got.violations
