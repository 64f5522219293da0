"""validate_only on CreateUser and UpdateUser (aip.dev/163): every check, no write."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from passlib import hash as schemes
from users.v1 import resources_pb2, user_service_pb2

from tests.helpers import PASSWORD, assert_error, assert_invalid, create_user, failure

ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS


def create_request(**fields: Any) -> user_service_pb2.CreateUserRequest:
    values: dict[str, Any] = {
        "username": "Preview",
        "password": PASSWORD,
        "email": "Preview@Example.com",
        "display_name": "  Pre View  ",
        "validate_only": True,
    }
    values.update(fields)
    return user_service_pb2.CreateUserRequest(**values)


def update_request(user_id: int, *paths: str, validate_only: bool = True, **fields):
    return user_service_pb2.UpdateUserRequest(
        user=resources_pb2.User(id=user_id, **fields),
        update_mask=FieldMask(paths=list(paths)),
        validate_only=validate_only,
    )


async def user_count(stub) -> int:
    page = await stub.ListUsers(user_service_pb2.ListUsersRequest(show_deleted=True))
    return int(page.total_size)


# --- CreateUser ---------------------------------------------------------------------


async def test_a_valid_create_returns_the_user_it_would_make_and_writes_nothing(stub):
    preview = await stub.CreateUser(create_request())

    assert (preview.username, preview.email, preview.display_name) == (
        "Preview",
        "Preview@example.com",
        "Pre View",
    )
    assert preview.state == resources_pb2.ACTIVE
    assert preview.balance == 0
    # What the server would assign is left unset.
    assert preview.id == 0
    assert preview.etag == ""
    assert not preview.HasField("create_time")
    assert not preview.HasField("update_time")
    assert await user_count(stub) == 0

    created = await stub.CreateUser(create_request(validate_only=False))
    assert created.id > 0
    assert (created.username, created.email, created.display_name) == (
        preview.username,
        preview.email,
        preview.display_name,
    )


async def test_a_create_with_a_taken_username_is_already_exists(stub):
    await create_user(stub, "preview", email="first@example.com")
    got = await failure(stub.CreateUser(create_request()))
    assert_error(got, ALREADY_EXISTS, "USERNAME_TAKEN")
    assert await user_count(stub) == 1


async def test_a_create_with_a_taken_email_is_already_exists(stub):
    await create_user(stub, "first", email="preview@example.com")
    got = await failure(stub.CreateUser(create_request()))
    assert_error(got, ALREADY_EXISTS, "EMAIL_TAKEN")


async def test_a_soft_deleted_users_username_counts_as_taken(stub):
    deleted = await create_user(stub, "preview", email="first@example.com")
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=deleted.id))
    got = await failure(stub.CreateUser(create_request()))
    assert_error(got, ALREADY_EXISTS, "USERNAME_TAKEN")


async def test_a_create_with_bad_fields_names_each(stub):
    got = await failure(
        stub.CreateUser(create_request(username="-x", password="short", email="nope"))
    )
    assert_invalid(got, "username", "password", "email")


async def test_a_create_with_an_unusable_password_hash_is_invalid(stub):
    got = await failure(stub.CreateUser(create_request(password="", password_hash="nonsense")))
    assert_invalid(got, "password_hash")


async def test_a_create_with_an_imported_hash_previews_like_a_password(stub):
    imported = schemes.bcrypt.using(rounds=4).hash(PASSWORD)
    preview = await stub.CreateUser(create_request(password="", password_hash=imported))
    assert preview.username == "Preview"
    assert await user_count(stub) == 0


async def test_a_validate_only_create_does_not_record_its_request_id(stub):
    key = str(uuid.uuid4())
    await stub.CreateUser(create_request(request_id=key))
    # Had the preview claimed the key, other fields would now be REQUEST_ID_REUSED.
    created = await stub.CreateUser(
        create_request(
            request_id=key, username="real", email="real@example.com", validate_only=False
        )
    )
    assert created.username == "real"


async def test_a_validate_only_create_checks_the_request_id_syntax(stub):
    got = await failure(stub.CreateUser(create_request(request_id="not valid")))
    assert_invalid(got, "request_id")


# --- UpdateUser ---------------------------------------------------------------------


async def test_a_valid_update_returns_the_user_it_would_make_and_changes_nothing(stub):
    user = await create_user(stub, "before", display_name="Before")
    preview = await stub.UpdateUser(
        update_request(user.id, "username", "display_name", username="After", display_name="After")
    )
    assert preview.id == user.id
    assert (preview.username, preview.display_name) == ("After", "After")
    assert preview.email == user.email

    assert await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id)) == user


async def test_an_update_to_a_taken_username_is_already_exists(stub):
    await create_user(stub, "holder")
    user = await create_user(stub, "mover")
    got = await failure(stub.UpdateUser(update_request(user.id, "username", username="HOLDER")))
    assert_error(got, ALREADY_EXISTS, "USERNAME_TAKEN")


async def test_an_update_to_a_taken_email_is_already_exists(stub):
    await create_user(stub, "holder", email="held@example.com")
    user = await create_user(stub, "mover")
    got = await failure(stub.UpdateUser(update_request(user.id, "email", email="HELD@example.com")))
    assert_error(got, ALREADY_EXISTS, "EMAIL_TAKEN")


async def test_an_update_keeping_the_users_own_username_is_no_clash(stub):
    user = await create_user(stub, "keeper")
    preview = await stub.UpdateUser(update_request(user.id, "username", username="KEEPER"))
    assert preview.username == "KEEPER"
    assert await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id)) == user


async def test_an_update_with_the_current_etag_passes_and_the_etag_stays(stub):
    user = await create_user(stub)
    preview = await stub.UpdateUser(
        update_request(user.id, "display_name", display_name="New", etag=user.etag)
    )
    assert preview.display_name == "New"
    assert preview.etag == user.etag
    assert (await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))).etag == user.etag


async def test_an_update_with_a_stale_etag_is_aborted(stub):
    user = await create_user(stub)
    changed = await stub.UpdateUser(
        update_request(user.id, "display_name", display_name="Changed", validate_only=False)
    )
    assert changed.etag != user.etag
    got = await failure(
        stub.UpdateUser(update_request(user.id, "display_name", display_name="X", etag=user.etag))
    )
    assert_error(got, grpc.StatusCode.ABORTED, "ETAG_MISMATCH")


async def test_an_update_of_a_missing_user_is_not_found(stub):
    got = await failure(stub.UpdateUser(update_request(999, "display_name", display_name="X")))
    assert_error(got, grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_an_update_of_a_deleted_user_is_not_found(stub):
    user = await create_user(stub)
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id))
    got = await failure(stub.UpdateUser(update_request(user.id, "display_name", display_name="X")))
    assert_error(got, grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_an_update_with_a_bad_mask_or_value_is_invalid(stub):
    user = await create_user(stub)
    assert_invalid(
        await failure(stub.UpdateUser(update_request(user.id, "balance"))), "update_mask"
    )
    assert_invalid(
        await failure(stub.UpdateUser(update_request(user.id, "email", email="nope"))),
        "user.email",
    )
