"""CreateUser: what a new account looks like, every rule it enforces, and uniqueness."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import Descriptor
from passlib.hash import bcrypt
from users.v1 import resources_pb2, user_service_pb2

from tests.db_audit import user_rows
from tests.helpers import (
    PASSWORD,
    assert_error,
    assert_invalid,
    create_user,
    email_of_length,
    failure,
    fullwidth,
)
from tests.race_clients import race_calls

ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
# bcrypt at cost 4 of PASSWORD: an importable hash that is cheap to check.
IMPORTED_HASH = bcrypt.using(rounds=4).hash(PASSWORD)


def request(**fields: str) -> user_service_pb2.CreateUserRequest:
    values: dict[str, Any] = {
        "username": "alice",
        "password": PASSWORD,
        "email": "alice@example.com",
        "display_name": "Alice Liddell",
    }
    values.update(fields)
    return user_service_pb2.CreateUserRequest(**values)


async def count_users(stub) -> int:
    page = await stub.ListUsers(user_service_pb2.ListUsersRequest())
    return int(page.total_size)


# --- the OK path -----------------------------------------------------------------


async def test_created_user_has_the_given_fields_and_server_set_ones(stub):
    user = await stub.CreateUser(request(username="Alice", email="Alice@Example.com"))

    assert user.id > 0
    assert user.username == "Alice"
    # The local part keeps its case; email-validator lowercases the domain.
    assert user.email == "Alice@example.com"
    assert user.display_name == "Alice Liddell"
    assert user.balance == 0
    assert user.HasField("create_time")
    assert user.HasField("update_time")
    created, updated = user.create_time.ToDatetime(), user.update_time.ToDatetime()
    assert timedelta(0) <= updated - created < timedelta(seconds=1)
    assert list(user.posts) == []
    assert await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id)) == user


async def test_each_created_user_gets_its_own_id(stub):
    first = await create_user(stub)
    second = await create_user(stub)
    assert first.id != second.id


async def test_username_is_stored_in_its_nfkc_form(stub):
    user = await create_user(stub, fullwidth("fullwidth"), email="fw@example.com")
    assert user.username == "fullwidth"


async def test_display_name_is_optional_and_trimmed(stub):
    empty = await create_user(stub, "nodisplay")
    trimmed = await create_user(stub, "trimmed", display_name="  Bob  ")
    assert empty.display_name == ""
    assert trimmed.display_name == "Bob"


async def test_usernames_at_the_edges_of_the_rules_are_accepted(stub, subtests):
    edges = ["abc", "a" * 32, "0start", "a.b_c-d", "z--", "Ωμέγα", "名前です"]
    for i, username in enumerate(edges):
        with subtests.test(username=username):
            user = await create_user(stub, username, email=f"edge{i}@example.com")
            assert user.username == username


async def test_email_of_254_characters_is_accepted(stub):
    address = email_of_length(254)
    user = await create_user(stub, "longmail", email=address)
    assert user.email == address


async def test_passwords_at_the_length_limits_are_accepted(stub):
    for length in (8, 256):
        password = "p" * length
        await create_user(stub, f"limits{length}", password=password)
        login = user_service_pb2.AuthenticateUserRequest(
            username=f"limits{length}", password=password
        )
        assert (await stub.AuthenticateUser(login)).user.username == f"limits{length}"


def test_user_message_has_no_field_for_a_password_or_hash():
    def names(descriptor: Descriptor, seen: set[str]) -> Iterator[str]:
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            yield field.name
            if field.message_type is not None:
                yield from names(field.message_type, seen)

    for message in (resources_pb2.User, user_service_pb2.AuthenticateUserResponse):
        fields = list(names(message.DESCRIPTOR, set()))
        assert "username" in fields or "user" in fields
        assert not [f for f in fields if "password" in f or "hash" in f or "secret" in f]


async def test_response_bytes_contain_neither_the_password_nor_a_hash(stub):
    password = "Unmistakable-Secret-42"
    user = await create_user(stub, "hashless", password=password)
    authenticated = await stub.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(username="hashless", password=password)
    )
    fetched = await stub.GetUser(
        user_service_pb2.GetUserRequest(id=user.id, view=resources_pb2.USER_VIEW_FULL)
    )
    for message in (user, authenticated, fetched):
        raw = message.SerializeToString()
        assert password.encode() not in raw
        assert b"$argon2" not in raw
        assert b"$2b$" not in raw


# --- INVALID_ARGUMENT --------------------------------------------------------------


BAD_USERNAMES = [
    "", "ab", "a" * 33, fullwidth("ab"), "bad name", "bad!name", "bad/name", "_alice", ".alice",
    "-alice", "al@ice", "@alice", "emoji😀", "tab\tname",
]  # fmt: skip
BAD_EMAILS = [
    "", "not-an-email", "@example.com", "alice@", "alice@@example.com", "al ice@example.com",
    "alice@example", "alice@exa mple.com", email_of_length(255), email_of_length(400),
]  # fmt: skip
BAD_PASSWORDS = ["", "1234567", "p" * 257, "p" * 10_000]
BAD_DISPLAY_NAMES = [
    "Bob\x00Smith", "Bob\nSmith", "Bob\x1b[31mRed", "Bob\x7fSmith", "Bob\u2028Smith",
    "Bob\x85Smith", "x" * 129,
]  # fmt: skip


async def test_bad_username_is_invalid_argument_naming_username(stub, subtests):
    """Too short or long (after NFKC), bad characters, leading punctuation, an @."""
    for username in BAD_USERNAMES:
        with subtests.test(username=username):
            got = await failure(stub.CreateUser(request(username=username)))
            assert_invalid(got, "username")
    assert await count_users(stub) == 0


async def test_bad_email_is_invalid_argument_naming_email(stub, subtests):
    for email in BAD_EMAILS:
        with subtests.test(email=email[:40], length=len(email)):
            got = await failure(stub.CreateUser(request(email=email)))
            assert_invalid(got, "email")
            # Our own sentence, not the validator's, which may echo the input.
            assert not email or email not in got.message
    assert await count_users(stub) == 0


async def test_bad_password_length_is_invalid_argument_naming_password(stub, subtests):
    for password in BAD_PASSWORDS:
        with subtests.test(length=len(password)):
            got = await failure(stub.CreateUser(request(password=password)))
            assert_invalid(got, "password")
    assert await count_users(stub) == 0


async def test_display_name_with_control_chars_or_too_long_is_invalid_argument(stub, subtests):
    for display_name in BAD_DISPLAY_NAMES:
        with subtests.test(display_name=display_name[:20]):
            got = await failure(stub.CreateUser(request(display_name=display_name)))
            assert_invalid(got, "display_name")
    assert await count_users(stub) == 0


async def test_every_bad_field_is_named_in_one_reply(stub):
    got = await failure(
        stub.CreateUser(
            request(username="x", email="nope", password="short", display_name="a\x00b")
        )
    )
    assert_invalid(got, "username", "email", "password", "display_name")


async def test_two_bad_fields_are_named_and_the_good_ones_are_not(stub):
    got = await failure(stub.CreateUser(request(username="_bad", password="1234")))
    assert_invalid(got, "username", "password")


# --- ALREADY_EXISTS ----------------------------------------------------------------


async def test_equivalent_username_is_already_exists_username_taken(stub, subtests):
    pairs = [
        ("alice", "alice"),
        ("Bob", "bOB"),
        ("carol", fullwidth("carol")),
        (fullwidth("DAVE"), "dave"),
        ("bigbird", "ᴮᴵᴳᴮᴵᴿᴰ"),
        ("ǅemal", "džemal"),
        ("Straße", "STRASSE"),
    ]
    for i, (first, _) in enumerate(pairs):
        await create_user(stub, first, email=f"first{i}@example.com")
    for first, second in pairs:
        with subtests.test(first=first, second=second):
            got = await failure(
                stub.CreateUser(request(username=second, email="second@example.com"))
            )
            assert_error(got, ALREADY_EXISTS, "USERNAME_TAKEN")
            assert got.metadata == {"field": "username"}
    assert await count_users(stub) == len(pairs)


async def test_email_differing_only_in_case_is_already_exists_email_taken(stub, subtests):
    pairs = [
        ("erin@example.com", "erin@example.com"),
        ("Frank@Example.com", "frank@EXAMPLE.COM"),
        ("grace@example.com", "GRACE@example.com"),
    ]
    for i, (first, _) in enumerate(pairs):
        await create_user(stub, f"mailowner{i}", email=first)
    for first, second in pairs:
        with subtests.test(first=first, second=second):
            got = await failure(stub.CreateUser(request(username="newcomer", email=second)))
            assert_error(got, ALREADY_EXISTS, "EMAIL_TAKEN")
            assert got.metadata == {"field": "email"}
    assert await count_users(stub) == len(pairs)


async def test_already_exists_message_leaks_no_database_detail(stub):
    await create_user(stub, "leaky", email="leaky@example.com")
    taken_name = await failure(stub.CreateUser(request(username="LEAKY", email="x@example.com")))
    taken_mail = await failure(
        stub.CreateUser(request(username="other", email="Leaky@Example.com"))
    )
    for got in (taken_name, taken_mail):
        text = got.message.lower()
        for word in ("unique", "constraint", "insert", "users.", "_key", "sql", "duplicate"):
            assert word not in text, got.message


def case_variants(word: str, count: int) -> list[str]:
    variants = (
        "".join(c.upper() if upper else c for c, upper in zip(word, mask, strict=True))
        for mask in itertools.product([False, True], repeat=len(word))
    )
    return list(itertools.islice(variants, count))


def imported(**fields: str) -> user_service_pb2.CreateUserRequest:
    """A sign-up with an imported hash: no hashing thread to queue on, so inserts truly race.

    Sign-ups with a password wait for the hashing threads (one on a 2-core
    machine), which would space their inserts out; these reach the database at once.
    """
    return request(password="", password_hash=IMPORTED_HASH, **fields)


async def test_concurrent_creates_of_one_username_let_exactly_one_win(service, database_url):
    names = case_variants("racecar", 20)
    assert len({n.lower() for n in names}) == 1
    assert len(set(names)) == 20

    outcomes = await race_calls(
        service.address,
        [
            ("CreateUser", imported(username=name, email=f"racer{i}@example.com"))
            for i, name in enumerate(names)
        ],
    )

    assert [o.problem for o in outcomes if o.problem] == []
    created = [o.reply for o in outcomes if o.ok]
    assert len(created) == 1, outcomes
    refused = {(o.code, o.reason) for o in outcomes if not o.ok}
    assert refused == {(ALREADY_EXISTS, "USERNAME_TAKEN")}
    stored = await user_rows(database_url)
    assert [(r["id"], r["username"]) for r in stored] == [(created[0].id, created[0].username)]
    looked_up = await service.stub.LookupUser(
        user_service_pb2.LookupUserRequest(username="RACECAR")
    )
    assert looked_up == created[0]


async def test_concurrent_creates_of_one_email_let_exactly_one_win(service, database_url):
    outcomes = await race_calls(
        service.address,
        [
            ("CreateUser", imported(username=f"mailracer{i}", email=f"{local}@Example.com"))
            for i, local in enumerate(case_variants("same", 10))
        ],
    )
    assert [o.problem for o in outcomes if o.problem] == []
    created = [o.reply for o in outcomes if o.ok]
    assert len(created) == 1, outcomes
    assert {(o.code, o.reason) for o in outcomes if not o.ok} == {(ALREADY_EXISTS, "EMAIL_TAKEN")}
    stored = await user_rows(database_url)
    assert [(r["id"], r["email"]) for r in stored] == [(created[0].id, created[0].email)]


async def _raise(error: BaseException) -> None:
    raise error
