"""UpdateUser and DeleteUser."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
from google.protobuf.field_mask_pb2 import FieldMask
from users.v1 import resources_pb2, user_service_pb2

from tests.db_audit import user_rows
from tests.helpers import (
    PASSWORD,
    assert_error,
    assert_invalid,
    create_user,
    failure,
    fullwidth,
)
from tests.race_clients import race_calls

NOT_FOUND = grpc.StatusCode.NOT_FOUND
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS


def update(user_id: int, *paths: str, **values: str) -> user_service_pb2.UpdateUserRequest:
    user = resources_pb2.User(id=user_id)
    for name, value in values.items():
        setattr(user, name, value)
    return user_service_pb2.UpdateUserRequest(user=user, update_mask=FieldMask(paths=list(paths)))


async def get(stub, user_id: int):
    return await stub.GetUser(user_service_pb2.GetUserRequest(id=user_id))


async def lookup(stub, **identifier: Any):
    return await stub.LookupUser(user_service_pb2.LookupUserRequest(**identifier))


def without_update_time(user: resources_pb2.User) -> resources_pb2.User:
    copy = resources_pb2.User()
    copy.CopyFrom(user)
    copy.ClearField("update_time")
    return copy


# --- UpdateUser: the mutable fields ------------------------------------------------


async def test_update_username_changes_only_the_username(stub):
    user = await create_user(stub, "oldname", display_name="Old")
    updated = await stub.UpdateUser(update(user.id, "username", username="NewName"))

    assert updated.username == "NewName"
    assert (updated.email, updated.display_name) == (user.email, user.display_name)
    assert await get(stub, user.id) == updated
    assert await lookup(stub, username="newname") == updated
    got = await failure(stub.LookupUser(user_service_pb2.LookupUserRequest(username="oldname")))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")


async def test_updated_username_is_stored_in_nfkc_form(stub):
    user = await create_user(stub, "plain")
    updated = await stub.UpdateUser(update(user.id, "username", username=fullwidth("Wide")))
    assert updated.username == "Wide"


async def test_update_email_changes_only_the_email(stub):
    user = await create_user(stub, "mailer", display_name="Mailer")
    updated = await stub.UpdateUser(update(user.id, "email", email="New.Address@Example.org"))

    assert updated.email == "New.Address@example.org"
    assert (updated.username, updated.display_name) == (user.username, user.display_name)
    assert await get(stub, user.id) == updated
    assert await lookup(stub, email="new.address@example.org") == updated


async def test_update_display_name_changes_only_the_display_name(stub):
    user = await create_user(stub, "shown", display_name="Before")
    updated = await stub.UpdateUser(update(user.id, "display_name", display_name="After  "))

    assert updated.display_name == "After"
    assert (updated.username, updated.email) == (user.username, user.email)
    assert await get(stub, user.id) == updated


async def test_display_name_can_be_cleared_through_the_mask(stub):
    user = await create_user(stub, "clearme", display_name="Something")
    updated = await stub.UpdateUser(update(user.id, "display_name", display_name=""))
    assert updated.display_name == ""


async def test_update_with_several_paths_changes_each_of_them(stub):
    user = await create_user(stub, "several")
    updated = await stub.UpdateUser(
        update(
            user.id,
            "username",
            "email",
            "display_name",
            username="Several2",
            email="several2@example.com",
            display_name="Two",
        )
    )
    assert (updated.username, updated.email, updated.display_name) == (
        "Several2",
        "several2@example.com",
        "Two",
    )
    assert await get(stub, user.id) == updated


async def test_fields_outside_the_mask_are_left_alone(stub):
    user = await create_user(stub, "masked", display_name="Keep")
    updated = await stub.UpdateUser(
        update(user.id, "email", email="masked2@example.com", username="ignored", display_name="")
    )
    assert updated.username == "masked"
    assert updated.display_name == "Keep"
    assert updated.email == "masked2@example.com"


async def test_update_cannot_change_balance_or_timestamps_through_values(stub):
    user = await create_user(stub, "sneaky")
    request = update(user.id, "display_name", display_name="Sneaky")
    request.user.balance = 1_000_000
    request.user.create_time.FromSeconds(0)
    updated = await stub.UpdateUser(request)
    assert updated.balance == 0
    assert updated.create_time == user.create_time


async def test_update_moves_update_time_and_keeps_create_time(stub):
    user = await create_user(stub, "clocked")
    first = await stub.UpdateUser(update(user.id, "display_name", display_name="One"))
    second = await stub.UpdateUser(update(user.id, "display_name", display_name="Two"))

    assert first.create_time == second.create_time == user.create_time
    assert user.update_time.ToDatetime() < first.update_time.ToDatetime()
    assert first.update_time.ToDatetime() < second.update_time.ToDatetime()
    assert without_update_time(await get(stub, user.id)) == without_update_time(second)


async def test_changing_only_the_case_of_ones_own_username_is_allowed(stub):
    user = await create_user(stub, "casey")
    updated = await stub.UpdateUser(update(user.id, "username", username="CASEY"))
    assert updated.username == "CASEY"


async def test_changing_only_the_case_of_ones_own_email_is_allowed(stub):
    user = await create_user(stub, "emailcase", email="emailcase@example.com")
    updated = await stub.UpdateUser(update(user.id, "email", email="EmailCase@example.com"))
    assert updated.email == "EmailCase@example.com"


async def test_a_freed_username_can_be_taken_by_someone_else(stub):
    first = await create_user(stub, "handle")
    await stub.UpdateUser(update(first.id, "username", username="handle2"))
    second = await create_user(stub, "Handle", email="other@example.com")
    assert await lookup(stub, username="HANDLE") == second


# --- UpdateUser: bad requests ------------------------------------------------------


async def test_unknown_path_is_invalid_argument_naming_update_mask(stub, subtests):
    user = await create_user(stub, "unknownpath")
    for path in ["nickname", "password", "password_hash", "user.username", ""]:
        with subtests.test(path=path):
            got = await failure(stub.UpdateUser(update(user.id, path, username="whatever")))
            assert_invalid(got, "update_mask")
    assert await get(stub, user.id) == user


async def test_output_only_path_is_invalid_argument_naming_update_mask(stub, subtests):
    user = await create_user(stub, "outputonly")
    for path in ["id", "balance", "create_time", "update_time", "posts"]:
        with subtests.test(path=path):
            request = update(user.id, path, "display_name", display_name="X")
            assert_invalid(await failure(stub.UpdateUser(request)), "update_mask")
    assert await get(stub, user.id) == user


async def test_omitted_mask_updates_the_populated_fields(stub):
    # aip.dev/134: no mask means every field the request populates.
    user = await create_user(stub, "implicit", display_name="Before")
    request = user_service_pb2.UpdateUserRequest(
        user=resources_pb2.User(id=user.id, display_name="After")
    )
    updated = await stub.UpdateUser(request)
    assert (updated.username, updated.email, updated.display_name) == (
        "implicit",
        user.email,
        "After",
    )


async def test_empty_mask_and_no_values_is_invalid_argument(stub):
    user = await create_user(stub, "nomask")
    got = await failure(stub.UpdateUser(update(user.id)))
    assert_invalid(got, "update_mask")


async def test_invalid_new_value_is_invalid_argument_naming_the_field(stub, subtests):
    user = await create_user(stub, "validated", display_name="Valid")
    cases = [
        ("username", "x"),
        ("username", "_leading"),
        ("username", ""),
        ("email", "not-an-email"),
        ("email", ""),
        ("display_name", "bad\x00name"),
        ("display_name", "y" * 129),
    ]
    for path, value in cases:
        with subtests.test(path=path, value=value[:20]):
            got = await failure(stub.UpdateUser(update(user.id, path, **{path: value})))
            assert_invalid(got, f"user.{path}")
    assert await get(stub, user.id) == user


async def test_every_invalid_new_value_is_named(stub):
    user = await create_user(stub, "allbad")
    got = await failure(
        stub.UpdateUser(
            update(
                user.id,
                "username",
                "email",
                "display_name",
                username="!",
                email="@",
                display_name="\x07",
            )
        )
    )
    assert_invalid(got, "user.username", "user.email", "user.display_name")


async def test_update_with_non_positive_id_is_invalid_argument(stub, subtests):
    for user_id in (0, -3):
        with subtests.test(id=user_id):
            request = update(user_id, "display_name", display_name="X")
            assert_invalid(await failure(stub.UpdateUser(request)), "user.id")


async def test_update_of_missing_user_is_not_found(stub):
    user = await create_user(stub, "present")
    got = await failure(stub.UpdateUser(update(user.id + 1, "display_name", display_name="X")))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert str(user.id + 1) in got.message


async def test_taking_another_users_username_is_already_exists(stub, subtests):
    await create_user(stub, "owner")
    other = await create_user(stub, "other")
    for taken in ["owner", "OWNER", fullwidth("Owner")]:
        with subtests.test(taken=taken):
            got = await failure(stub.UpdateUser(update(other.id, "username", username=taken)))
            assert_error(got, ALREADY_EXISTS, "USERNAME_TAKEN")
    assert await get(stub, other.id) == other


async def test_taking_another_users_email_is_already_exists(stub, subtests):
    await create_user(stub, "owner", email="owner@example.com")
    other = await create_user(stub, "other")
    for taken in ["owner@example.com", "OWNER@Example.COM"]:
        with subtests.test(taken=taken):
            got = await failure(stub.UpdateUser(update(other.id, "email", email=taken)))
            assert_error(got, ALREADY_EXISTS, "EMAIL_TAKEN")
    assert await get(stub, other.id) == other


async def test_concurrent_renames_to_one_username_let_exactly_one_win(service, database_url):
    names = ["prize", "Prize", "PRIZE", "pRiZe", "PrIzE", "prizE", "PRIze", "priZE"]
    users = [await create_user(service.stub, f"renamer{i}") for i in range(len(names))]
    outcomes = await race_calls(
        service.address,
        [
            ("UpdateUser", update(u.id, "username", username=name))
            for u, name in zip(users, names, strict=True)
        ],
    )
    assert [o.problem for o in outcomes if o.problem] == []
    renamed = [o.reply for o in outcomes if o.ok]
    assert len(renamed) == 1, outcomes
    assert {(o.code, o.reason) for o in outcomes if not o.ok} == {
        (ALREADY_EXISTS, "USERNAME_TAKEN")
    }
    stored = {row["id"]: row["username"] for row in await user_rows(database_url)}
    # The winner holds the name; every loser still has its own.
    assert stored == {
        u.id: (renamed[0].username if u.id == renamed[0].id else u.username) for u in users
    }
    assert (await lookup(service.stub, username="prize")).id == renamed[0].id


# --- DeleteUser --------------------------------------------------------------------


async def test_deleted_user_is_gone_from_every_read(stub):
    keep = await create_user(stub, "keeper")
    gone = await create_user(stub, "goner")
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=gone.id))

    assert_error(
        await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=gone.id))),
        NOT_FOUND,
        "USER_NOT_FOUND",
    )
    assert_error(
        await failure(stub.LookupUser(user_service_pb2.LookupUserRequest(username="goner"))),
        NOT_FOUND,
        "USER_NOT_FOUND",
    )
    assert_error(
        await failure(
            stub.BatchGetUsers(user_service_pb2.BatchGetUsersRequest(ids=[keep.id, gone.id]))
        ),
        NOT_FOUND,
        "USER_NOT_FOUND",
    )
    listed = await stub.ListUsers(user_service_pb2.ListUsersRequest())
    assert list(listed.users) == [keep]
    assert listed.total_size == 1


async def test_deleted_user_cannot_authenticate(stub):
    user = await create_user(stub, "loginless")
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id))
    got = await failure(
        stub.AuthenticateUser(
            user_service_pb2.AuthenticateUserRequest(username="loginless", password=PASSWORD)
        )
    )
    assert_error(got, grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")


async def test_delete_of_missing_user_is_not_found(stub):
    user = await create_user(stub)
    got = await failure(stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id + 1)))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert await get(stub, user.id) == user


async def test_deleting_twice_is_not_found_the_second_time(stub):
    user = await create_user(stub)
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id))
    got = await failure(stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id)))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")


async def test_delete_with_non_positive_id_is_invalid_argument(stub, subtests):
    for user_id in (0, -1):
        with subtests.test(id=user_id):
            got = await failure(stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user_id)))
            assert_invalid(got, "id")


async def test_username_and_email_of_a_deleted_user_can_be_reused_once_purged(service, stub):
    from datetime import UTC, datetime, timedelta

    from service.domain.users import purge_deleted_users

    old = await create_user(stub, "Phoenix", email="phoenix@example.com")
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=old.id))
    with service.server.database.activate():
        assert await purge_deleted_users(datetime.now(UTC) + timedelta(days=31)) == 1
    new = await create_user(stub, "phoenix", email="PHOENIX@example.com")
    assert new.id != old.id
    assert await lookup(stub, username="PHOENIX") == new


async def test_user_with_a_balance_is_not_deleted(service, stub):
    from service.db.models import UserRow

    user = await create_user(stub, "wealthy")
    with service.server.database.activate():
        await UserRow.filter(id=user.id).update(balance=250)
    got = await failure(stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id)))
    assert_error(got, grpc.StatusCode.FAILED_PRECONDITION, "BALANCE_NOT_ZERO")
    assert (await get(stub, user.id)).balance == 250
