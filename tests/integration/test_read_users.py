"""GetUser, LookupUser and BatchGetUsers."""

from __future__ import annotations

from typing import Any

import grpc
from users.v1 import user_service_pb2

from tests.helpers import (
    assert_error,
    assert_invalid,
    create_user,
    failure,
    fullwidth,
    insert_rows,
)

NOT_FOUND = grpc.StatusCode.NOT_FOUND


def lookup(**identifier: Any) -> user_service_pb2.LookupUserRequest:
    return user_service_pb2.LookupUserRequest(**identifier)


def batch(*ids: int) -> user_service_pb2.BatchGetUsersRequest:
    return user_service_pb2.BatchGetUsersRequest(ids=ids)


# --- GetUser -----------------------------------------------------------------------


async def test_get_user_returns_the_user_with_that_id(stub):
    first = await create_user(stub, "first")
    second = await create_user(stub, "second")
    assert await stub.GetUser(user_service_pb2.GetUserRequest(id=second.id)) == second
    assert await stub.GetUser(user_service_pb2.GetUserRequest(id=first.id)) == first


async def test_get_missing_user_is_not_found_naming_the_id(stub):
    user = await create_user(stub)
    got = await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=user.id + 1)))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert str(user.id + 1) in got.message
    assert got.metadata == {"user_ids": str(user.id + 1)}


async def test_get_user_with_non_positive_id_is_invalid_argument(stub, subtests):
    for user_id in (0, -1, -(2**63)):
        with subtests.test(id=user_id):
            got = await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=user_id)))
            assert_invalid(got, "id")


# --- LookupUser --------------------------------------------------------------------


async def test_lookup_by_username_ignores_case_and_compatibility_forms(stub, subtests):
    user = await create_user(stub, "MixedCase")
    await create_user(stub, "MixedCase2")
    for username in ["MixedCase", "mixedcase", "MIXEDCASE", "mIxEdCaSe", fullwidth("MixedCase")]:
        with subtests.test(username=username):
            assert await stub.LookupUser(lookup(username=username)) == user


async def test_lookup_by_username_finds_a_name_that_casefolds_longer(stub):
    user = await create_user(stub, "Straße", email="strasse@example.com")
    assert await stub.LookupUser(lookup(username="STRASSE")) == user
    assert await stub.LookupUser(lookup(username="strasse")) == user


async def test_lookup_by_email_ignores_case(stub, subtests):
    user = await create_user(stub, "carol", email="Carol.Smith@Example.com")
    await create_user(stub, "carol2", email="carol.smith2@example.com")
    for email in ["Carol.Smith@Example.com", "carol.smith@example.com", "CAROL.SMITH@EXAMPLE.COM"]:
        with subtests.test(email=email):
            assert await stub.LookupUser(lookup(email=email)) == user


async def test_lookup_does_not_confuse_username_and_email(stub):
    await create_user(stub, "dave", email="someone@example.com")
    got = await failure(stub.LookupUser(lookup(email="dave@example.org")))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")


async def test_lookup_with_neither_username_nor_email_is_invalid_argument(stub):
    await create_user(stub)
    got = await failure(stub.LookupUser(user_service_pb2.LookupUserRequest()))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert got.reason == "INVALID_ARGUMENT"
    assert got.violations
    assert set(got.violations) <= {"username", "email", "identifier"}


async def test_lookup_of_unknown_user_is_not_found(stub, subtests):
    await create_user(stub, "somebody", email="somebody@example.com")
    for identifier in ({"username": "nobody"}, {"email": "nobody@example.com"}):
        with subtests.test(**identifier):
            got = await failure(stub.LookupUser(lookup(**identifier)))
            assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
            assert got.message


# --- BatchGetUsers -----------------------------------------------------------------


async def test_batch_get_returns_users_in_request_order(stub):
    a, b, c = [await create_user(stub) for _ in range(3)]
    got = await stub.BatchGetUsers(batch(c.id, a.id, b.id))
    assert list(got.users) == [c, a, b]


async def test_batch_get_answers_duplicate_ids_each_time(stub):
    a, b = [await create_user(stub) for _ in range(2)]
    got = await stub.BatchGetUsers(batch(a.id, b.id, a.id, a.id))
    assert list(got.users) == [a, b, a, a]


async def test_batch_get_accepts_1000_distinct_ids(service, stub):
    await insert_rows(service, [f"many{i:04d}" for i in range(1000)])
    listed = await stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=1000))
    ids = [u.id for u in listed.users][::-1]
    assert len(set(ids)) == 1000
    got = await stub.BatchGetUsers(batch(*ids))
    assert [u.id for u in got.users] == ids
    assert got.users[0].username == "many0999"


async def test_batch_get_accepts_1000_ids_with_repeats(stub):
    a, b = [await create_user(stub) for _ in range(2)]
    got = await stub.BatchGetUsers(batch(*[a.id, b.id] * 500))
    assert len(got.users) == 1000
    assert [u.id for u in got.users[:4]] == [a.id, b.id, a.id, b.id]


async def test_batch_get_with_one_missing_id_is_not_found_and_returns_nothing(stub):
    a, b = [await create_user(stub) for _ in range(2)]
    missing = b.id + 100
    # A unary call that fails carries no response: the found users are not returned.
    got = await failure(stub.BatchGetUsers(batch(a.id, missing, b.id)))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert got.metadata == {"user_ids": str(missing)}
    assert str(missing) in got.message


async def test_batch_get_not_found_names_every_missing_id(stub):
    a = await create_user(stub)
    got = await failure(stub.BatchGetUsers(batch(a.id + 7, a.id, a.id + 3, a.id + 7)))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert got.metadata["user_ids"].split(", ") == [str(a.id + 3), str(a.id + 7)]


async def test_batch_get_with_no_ids_is_invalid_argument(stub):
    got = await failure(stub.BatchGetUsers(batch()))
    assert_invalid(got, "ids")


async def test_batch_get_with_1001_ids_is_invalid_argument(stub):
    a = await create_user(stub)
    got = await failure(stub.BatchGetUsers(batch(*[a.id] * 1001)))
    assert_invalid(got, "ids")


async def test_batch_get_with_a_negative_id_names_its_index(stub):
    a = await create_user(stub)
    got = await failure(stub.BatchGetUsers(batch(a.id, a.id, -5)))
    assert_invalid(got, "ids[2]")


async def test_batch_get_names_every_non_positive_id(stub):
    a = await create_user(stub)
    got = await failure(stub.BatchGetUsers(batch(0, a.id, -1, a.id)))
    assert_invalid(got, "ids[0]", "ids[2]")


async def test_batch_get_of_a_thousand_missing_ids_is_a_short_not_found(stub):
    """Every id in the details would overflow the client's trailer limit."""
    got = await failure(stub.BatchGetUsers(batch(*range(10_000_000, 10_001_000))))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert got.metadata["missing_count"] == "1000"
    assert got.metadata["user_ids"].split(", ")[:2] == ["10000000", "10000001"]
    assert len(got.metadata["user_ids"].split(", ")) == 100
    assert got.message.endswith("and 990 more do not exist.")
