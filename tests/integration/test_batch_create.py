"""BatchCreateUsers: all or nothing, imported password hashes, errors that name the entry."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from passlib import hash as schemes
from users.v1 import resources_pb2, user_service_pb2

from tests.helpers import (
    PASSWORD,
    assert_error,
    assert_invalid,
    create_user,
    failure,
    unique_name,
)

ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
OWN_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"
LEGACY_PASSWORD = "legacy-password"

# Cheap hashes of several importable schemes, as another system would hold them.
LEGACY = {
    "bcrypt": schemes.bcrypt.using(rounds=4),
    "sha512_crypt": schemes.sha512_crypt.using(rounds=5000),
    "pbkdf2_sha256": schemes.pbkdf2_sha256.using(rounds=1000),
    "argon2_other_parameters": schemes.argon2.using(
        type="ID", memory_cost=8192, rounds=1, parallelism=1
    ),
}


def entry(username: str | None = None, **fields: Any) -> user_service_pb2.CreateUserRequest:
    username = username or unique_name("batch")
    values: dict[str, Any] = {"username": username, "email": f"{username}@example.com"}
    values.update(fields)
    if "password" not in values and "password_hash" not in values:
        values["password"] = PASSWORD
    return user_service_pb2.CreateUserRequest(**values)


def batch(*entries: user_service_pb2.CreateUserRequest) -> user_service_pb2.BatchCreateUsersRequest:
    return user_service_pb2.BatchCreateUsersRequest(requests=list(entries))


async def user_count(stub) -> int:
    page = await stub.ListUsers(user_service_pb2.ListUsersRequest(show_deleted=True))
    return int(page.total_size)


async def stored_hash(service, user_id: int) -> str:
    from service.db.models import UserRow

    with service.server.database.activate():
        row = await UserRow.get(id=user_id)
    return str(row.password_hash)


async def authenticate(stub, username: str, password: str) -> resources_pb2.User:
    response: user_service_pb2.AuthenticateUserResponse = await stub.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(username=username, password=password)
    )
    return response.user


# --- the OK path -----------------------------------------------------------------


async def test_a_batch_creates_every_user_in_request_order(stub):
    entries = [entry(display_name=f"User {i}") for i in range(5)]
    response = await stub.BatchCreateUsers(batch(*entries))

    assert [u.username for u in response.users] == [e.username for e in entries]
    assert [u.display_name for u in response.users] == [f"User {i}" for i in range(5)]
    assert len({u.id for u in response.users}) == 5
    for user in response.users:
        assert user.state == resources_pb2.ACTIVE
        assert user.etag
        assert user.HasField("create_time")
        assert await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id)) == user


async def test_entries_are_normalised_like_create_user(stub):
    response = await stub.BatchCreateUsers(
        batch(entry("Mixed.Case", email="Mixed@EXAMPLE.com", display_name="  Spaced  "))
    )
    (user,) = response.users
    assert (user.username, user.email, user.display_name) == (
        "Mixed.Case",
        "Mixed@example.com",
        "Spaced",
    )


async def test_plaintext_entries_are_hashed_with_argon2id_and_authenticate(service, stub):
    response = await stub.BatchCreateUsers(batch(entry(), entry()))
    for user in response.users:
        assert (await stored_hash(service, user.id)).startswith(OWN_PREFIX)
        assert (await authenticate(stub, user.username, PASSWORD)).id == user.id


@pytest.mark.parametrize("scheme", sorted(LEGACY))
async def test_an_imported_hash_authenticates_and_is_upgraded_to_argon2id(service, stub, scheme):
    imported = LEGACY[scheme].hash(LEGACY_PASSWORD)
    (user,) = (await stub.BatchCreateUsers(batch(entry(password_hash=imported)))).users
    assert await stored_hash(service, user.id) == imported

    assert (await authenticate(stub, user.username, LEGACY_PASSWORD)).id == user.id

    upgraded = await stored_hash(service, user.id)
    assert upgraded.startswith(OWN_PREFIX)
    # The upgraded hash still takes the same password; the old one is gone.
    assert (await authenticate(stub, user.username, LEGACY_PASSWORD)).id == user.id
    assert await stored_hash(service, user.id) == upgraded


async def test_a_wrong_password_against_an_imported_hash_is_unauthenticated(service, stub):
    imported = LEGACY["bcrypt"].hash(LEGACY_PASSWORD)
    (user,) = (await stub.BatchCreateUsers(batch(entry(password_hash=imported)))).users
    got = await failure(authenticate(stub, user.username, "not-the-password"))
    assert_error(got, grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert await stored_hash(service, user.id) == imported


async def test_plaintext_and_imported_entries_mix_in_one_batch(stub):
    imported = LEGACY["pbkdf2_sha256"].hash(LEGACY_PASSWORD)
    plain, legacy = (
        await stub.BatchCreateUsers(batch(entry(), entry(password_hash=imported)))
    ).users
    assert (await authenticate(stub, plain.username, PASSWORD)).id == plain.id
    assert (await authenticate(stub, legacy.username, LEGACY_PASSWORD)).id == legacy.id


async def test_a_thousand_imported_users_are_created_in_one_call(stub):
    imported = LEGACY["bcrypt"].hash(LEGACY_PASSWORD)
    entries = [entry(f"bulk{i:04d}", password_hash=imported) for i in range(1000)]
    response = await stub.BatchCreateUsers(batch(*entries))

    assert [u.username for u in response.users] == [f"bulk{i:04d}" for i in range(1000)]
    assert len({u.id for u in response.users}) == 1000
    assert await user_count(stub) == 1000
    last = response.users[-1]
    assert await stub.GetUser(user_service_pb2.GetUserRequest(id=last.id)) == last


# --- INVALID_ARGUMENT --------------------------------------------------------------


async def test_an_empty_batch_is_invalid(stub):
    assert_invalid(await failure(stub.BatchCreateUsers(batch())), "requests")


async def test_more_than_a_thousand_entries_are_invalid(stub):
    entries = [entry(f"many{i}", password_hash="x") for i in range(1001)]
    assert_invalid(await failure(stub.BatchCreateUsers(batch(*entries))), "requests")
    assert await user_count(stub) == 0


async def test_every_bad_field_of_every_entry_is_named_and_nothing_is_created(stub):
    got = await failure(
        stub.BatchCreateUsers(
            batch(
                entry(),
                entry(email="not an address"),
                entry(password_hash="5f4dcc3b5aa765d61d8327deb882cf99"),
                entry(password="short", display_name="x" * 200),
            )
        )
    )
    assert_invalid(
        got,
        "requests[1].email",
        "requests[2].password_hash",
        "requests[3].password",
        "requests[3].display_name",
    )
    assert got.metadata == {"index": "1", "invalid_entries": "3"}
    assert await user_count(stub) == 0


async def test_a_thousand_bad_entries_get_a_bounded_error_listing_the_first_fields(stub):
    # Listing all 2,000 violations would overflow the clients' trailer limit.
    entries = [entry(f"bad{i:04d}", email="nope", password="short") for i in range(1000)]
    got = await failure(stub.BatchCreateUsers(batch(*entries)))
    assert_invalid(got, *[f"requests[{i}].{f}" for i in range(5) for f in ("email", "password")])
    assert got.metadata == {"index": "0", "invalid_entries": "1000"}
    assert "2000 fields of 1000 entries" in got.message


async def test_one_bad_field_is_named_in_the_message(stub):
    got = await failure(stub.BatchCreateUsers(batch(entry(), entry(), entry(username="-bad"))))
    assert_invalid(got, "requests[2].username")
    assert got.message.startswith("requests[2].username: ")
    assert got.metadata["index"] == "2"


async def test_an_entry_needs_exactly_one_of_password_and_password_hash(stub):
    imported = LEGACY["bcrypt"].hash(LEGACY_PASSWORD)
    neither = user_service_pb2.CreateUserRequest(username="neither", email="neither@example.com")
    got = await failure(
        stub.BatchCreateUsers(batch(entry(password=PASSWORD, password_hash=imported), neither))
    )
    assert_invalid(got, "requests[0].password_hash", "requests[1].password")


@pytest.mark.parametrize(
    "stored",
    [
        "$1$hW8kgRw.$tXg0GYFIBHCd3NXgxApu61",  # md5_crypt: not accepted
        "$2b$12$short",  # malformed bcrypt
        "$6$rounds=5000$saltsalt$",  # settings without a checksum
        "$2b$31$" + "." * 53,  # too costly to verify
    ],
)
async def test_an_unusable_password_hash_is_invalid(stub, stored):
    got = await failure(stub.BatchCreateUsers(batch(entry(password_hash=stored))))
    assert_invalid(got, "requests[0].password_hash")


async def test_request_id_and_validate_only_are_refused_inside_a_batch(stub):
    got = await failure(
        stub.BatchCreateUsers(batch(entry(request_id="r-1"), entry(validate_only=True)))
    )
    assert_invalid(got, "requests[0].request_id", "requests[1].validate_only")


# --- ALREADY_EXISTS ----------------------------------------------------------------


async def test_a_username_repeated_inside_the_batch_names_both_entries(stub):
    got = await failure(
        stub.BatchCreateUsers(
            batch(entry("first"), entry("second"), entry("FIRST", email="other@example.com"))
        )
    )
    assert_error(got, ALREADY_EXISTS, "USERNAME_TAKEN")
    assert got.metadata == {"field": "requests[2].username", "index": "2", "duplicate_of": "0"}
    assert "requests[2]" in got.message
    assert "requests[0]" in got.message
    assert await user_count(stub) == 0


async def test_an_email_repeated_inside_the_batch_names_both_entries(stub):
    got = await failure(
        stub.BatchCreateUsers(batch(entry("one"), entry("two", email="ONE@example.com")))
    )
    assert_error(got, ALREADY_EXISTS, "EMAIL_TAKEN")
    assert got.metadata == {"field": "requests[1].email", "index": "1", "duplicate_of": "0"}
    assert await user_count(stub) == 0


@pytest.mark.parametrize("password_kind", ["password", "password_hash"])
async def test_a_clash_with_an_existing_username_names_the_entry_and_creates_nothing(
    stub, password_kind
):
    await create_user(stub, "taken")
    secret = {"password_hash": LEGACY["bcrypt"].hash(LEGACY_PASSWORD)}
    if password_kind == "password":
        secret = {"password": PASSWORD}
    entries = [entry(**secret) for _ in range(3)] + [
        entry("Taken", email="fresh@example.com", **secret)
    ]
    got = await failure(stub.BatchCreateUsers(batch(*entries)))
    assert_error(got, ALREADY_EXISTS, "USERNAME_TAKEN")
    assert got.metadata == {"field": "requests[3].username", "index": "3"}
    assert "requests[3]" in got.message
    assert await user_count(stub) == 1


@pytest.mark.parametrize("password_kind", ["password", "password_hash"])
async def test_a_clash_with_an_existing_email_names_the_entry(stub, password_kind):
    await create_user(stub, "owner", email="owned@example.com")
    secret = {"password_hash": LEGACY["bcrypt"].hash(LEGACY_PASSWORD)}
    if password_kind == "password":
        secret = {"password": PASSWORD}
    got = await failure(
        stub.BatchCreateUsers(batch(entry(**secret), entry(email="Owned@example.com", **secret)))
    )
    assert_error(got, ALREADY_EXISTS, "EMAIL_TAKEN")
    assert got.metadata == {"field": "requests[1].email", "index": "1"}
    assert await user_count(stub) == 1


async def test_a_soft_deleted_users_username_stays_reserved_for_a_batch(stub):
    deleted = await create_user(stub, "gone")
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=deleted.id))
    got = await failure(
        stub.BatchCreateUsers(batch(entry(), entry("gone", email="g2@example.com")))
    )
    assert_error(got, ALREADY_EXISTS, "USERNAME_TAKEN")
    assert got.metadata["index"] == "1"


async def test_after_a_failed_batch_the_same_entries_can_be_created(stub):
    await create_user(stub, "blocker")
    entries = [entry("free1"), entry("blocker", email="b2@example.com")]
    await failure(stub.BatchCreateUsers(batch(*entries)))
    response = await stub.BatchCreateUsers(batch(entries[0], entry("free2")))
    assert [u.username for u in response.users] == ["free1", "free2"]
