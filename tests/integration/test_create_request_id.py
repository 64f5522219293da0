"""CreateUser with request_id (aip.dev/155): a retry returns the first call's user."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from passlib import hash as schemes
from users.v1 import resources_pb2, user_service_pb2

from tests.db_audit import rows, user_row, user_rows
from tests.helpers import PASSWORD, assert_error, assert_invalid, failure
from tests.race_clients import race_calls

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def request(request_id: str, **fields: str) -> user_service_pb2.CreateUserRequest:
    values: dict[str, Any] = {
        "username": "alice",
        "password": PASSWORD,
        "email": "alice@example.com",
        "display_name": "Alice",
        "request_id": request_id,
    }
    values.update(fields)
    return user_service_pb2.CreateUserRequest(**values)


async def user_count(stub) -> int:
    page = await stub.ListUsers(user_service_pb2.ListUsersRequest(show_deleted=True))
    return int(page.total_size)


def assert_reused(got) -> None:
    assert_error(got, INVALID, "REQUEST_ID_REUSED")
    assert set(got.violations) == {"request_id"}


async def test_a_retry_returns_the_user_the_first_call_created(stub):
    key = str(uuid.uuid4())
    first = await stub.CreateUser(request(key))
    again = await stub.CreateUser(request(key))
    assert again == first
    assert await user_count(stub) == 1


async def test_a_retry_returns_the_user_as_it_is_now(stub):
    key = str(uuid.uuid4())
    first = await stub.CreateUser(request(key))
    updated = await stub.UpdateUser(
        user_service_pb2.UpdateUserRequest(
            user=resources_pb2.User(id=first.id, display_name="Renamed"),
            update_mask=FieldMask(paths=["display_name"]),
        )
    )
    again = await stub.CreateUser(request(key))
    assert again == updated
    assert again.display_name == "Renamed"


async def test_a_retry_of_a_since_deleted_user_returns_it_deleted(stub):
    key = str(uuid.uuid4())
    first = await stub.CreateUser(request(key))
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=first.id))
    again = await stub.CreateUser(request(key))
    assert again.id == first.id
    assert again.state == resources_pb2.DELETED


async def test_the_same_request_id_with_other_fields_is_request_id_reused(stub):
    key = str(uuid.uuid4())
    await stub.CreateUser(request(key))
    for changed in (
        {"email": "other@example.com"},
        {"username": "Alice"},
        {"display_name": "Someone else"},
    ):
        assert_reused(await failure(stub.CreateUser(request(key, **changed))))
    assert await user_count(stub) == 1


async def test_a_retry_is_no_password_oracle_and_the_first_password_stands(stub):
    key = str(uuid.uuid4())
    first = await stub.CreateUser(request(key))
    for guess in ("wrong guess 1", "wrong guess 2", PASSWORD):
        again = await stub.CreateUser(request(key, password=guess))
        assert again.id == first.id
    login = user_service_pb2.AuthenticateUserRequest
    await stub.AuthenticateUser(login(username=first.username, password=PASSWORD))
    got = await failure(
        stub.AuthenticateUser(login(username=first.username, password="wrong guess 1"))
    )
    assert got.code == grpc.StatusCode.UNAUTHENTICATED


async def test_the_same_request_id_with_an_imported_hash_instead_is_request_id_reused(stub):
    key = str(uuid.uuid4())
    await stub.CreateUser(request(key))
    imported = schemes.bcrypt.using(rounds=4).hash(PASSWORD)
    got = await failure(stub.CreateUser(request(key, password="", password_hash=imported)))
    assert_reused(got)


async def test_an_imported_hash_create_is_idempotent_on_the_same_hash_only(stub):
    key = str(uuid.uuid4())
    imported = schemes.bcrypt.using(rounds=4).hash(PASSWORD)
    first = await stub.CreateUser(request(key, password="", password_hash=imported))
    again = await stub.CreateUser(request(key, password="", password_hash=imported))
    assert again == first
    other = schemes.bcrypt.using(rounds=4).hash(PASSWORD)  # same password, new salt
    assert_reused(await failure(stub.CreateUser(request(key, password="", password_hash=other))))


async def test_another_request_id_for_the_same_user_is_already_exists(stub):
    await stub.CreateUser(request(str(uuid.uuid4())))
    got = await failure(stub.CreateUser(request(str(uuid.uuid4()), email="a2@example.com")))
    assert_error(got, grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN")


async def test_a_request_id_does_not_protect_against_another_users_name(stub):
    await stub.CreateUser(request("", username="bob", email="bob@example.com"))
    got = await failure(stub.CreateUser(request(str(uuid.uuid4()), username="BOB")))
    assert_error(got, grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN")


async def _created_by(database_url: str, request_id: str) -> list[tuple[int, int]]:
    """The users the database holds, and which user each row of ``request_id`` names."""
    users = [row["id"] for row in await user_rows(database_url)]
    keys = await rows(
        database_url, "SELECT user_id FROM user_create_requests WHERE request_id = $1", request_id
    )
    return [(user, key["user_id"]) for user in users for key in keys]


# Races sign up with an imported hash: with a password they would queue for the
# hashing threads (one on a 2-core machine) and reach the database one by one.
IMPORTED_HASH = schemes.bcrypt.using(rounds=4).hash(PASSWORD)


async def test_concurrent_calls_with_one_request_id_create_one_user(service, database_url):
    key = str(uuid.uuid4())
    sign_up = request(key, password="", password_hash=IMPORTED_HASH)
    outcomes = await race_calls(service.address, [("CreateUser", sign_up)] * 6)
    assert [(o.code, o.problem) for o in outcomes] == [(grpc.StatusCode.OK, None)] * 6, outcomes
    (user_id,) = {o.reply.id for o in outcomes}
    assert await _created_by(database_url, key) == [(user_id, user_id)]


async def test_concurrent_calls_with_one_request_id_and_different_fields_create_one_user(
    service, database_url
):
    key = str(uuid.uuid4())
    outcomes = await race_calls(
        service.address,
        [
            (
                "CreateUser",
                request(
                    key,
                    username=f"racer{i}",
                    email=f"racer{i}@example.com",
                    password="",
                    password_hash=IMPORTED_HASH,
                ),
            )
            for i in range(4)
        ],
    )
    assert [o.problem for o in outcomes if o.problem] == []
    created = [o.reply for o in outcomes if o.ok]
    assert len(created) == 1, outcomes
    assert {(o.code, o.reason) for o in outcomes if not o.ok} == {(INVALID, "REQUEST_ID_REUSED")}
    assert await _created_by(database_url, key) == [(created[0].id, created[0].id)]
    assert (await user_row(database_url, created[0].id) or {})["username"] == created[0].username


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "semi;colon", "é"])
async def test_a_malformed_request_id_is_invalid(stub, bad):
    got = await failure(stub.CreateUser(request(bad)))
    assert_invalid(got, "request_id")
    assert await user_count(stub) == 0


async def test_a_malformed_request_id_is_named_together_with_other_bad_fields(stub):
    got = await failure(stub.CreateUser(request("has space", email="nope")))
    assert_invalid(got, "request_id", "email")


async def test_request_ids_of_creates_and_deposits_are_separate(stub):
    key = str(uuid.uuid4())
    user = await stub.CreateUser(request(key))
    deposited = await stub.Deposit(
        user_service_pb2.DepositRequest(user_id=user.id, amount=5, request_id=key)
    )
    assert deposited.balance == 5


async def test_purging_the_user_frees_its_request_id(service, stub):
    from service.db.models import CreateRequestRow
    from service.domain.users import purge_deleted_users

    key = str(uuid.uuid4())
    first = await stub.CreateUser(request(key))
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=first.id))
    with service.server.database.activate():
        assert await CreateRequestRow.filter(request_id=key).count() == 1
        assert await purge_deleted_users(datetime.now(UTC) + timedelta(days=31)) == 1
        assert await CreateRequestRow.filter(request_id=key).count() == 0

    # The purged user's name is free again, and the request id now creates anew.
    again = await stub.CreateUser(request(key))
    assert again.id != first.id
    assert again.state == resources_pb2.ACTIVE
