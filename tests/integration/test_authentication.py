"""AuthenticateUser and ChangePassword: credentials, uniform failures, hash upgrades."""

from __future__ import annotations

import asyncio
import statistics
import time

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from passlib.context import CryptContext
from users.v1 import user_service_pb2

from service.testing import running_service
from tests.helpers import (
    PASSWORD,
    assert_error,
    assert_invalid,
    create_user,
    failure,
    fullwidth,
    insert_rows,
)
from tests.integration.lifecycle_helpers import call

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def login(username: str, password: str = PASSWORD) -> user_service_pb2.AuthenticateUserRequest:
    return user_service_pb2.AuthenticateUserRequest(username=username, password=password)


def change(user_id: int, current: str, new: str) -> user_service_pb2.ChangePasswordRequest:
    return user_service_pb2.ChangePasswordRequest(
        id=user_id, current_password=current, new_password=new
    )


async def stored_hash(service, user_id: int) -> str:
    from service.db.models import UserRow

    with service.server.database.activate():
        row = await UserRow.get(id=user_id)
    return str(row.password_hash)


async def user_id_of(service, username: str) -> int:
    from service.db.models import UserRow

    with service.server.database.activate():
        row = await UserRow.get(username=username)
    return int(row.id)


# --- AuthenticateUser --------------------------------------------------------------


async def test_authenticate_by_username_or_email_in_any_case(stub, subtests):
    user = await create_user(stub, "Walter", email="Walter.White@Example.com")
    await create_user(stub, "walter2", email="walter2@example.com")
    identifiers = ["Walter", "walter", "WALTER", fullwidth("Walter"), "Walter.White@Example.com",
                   "walter.white@example.com", "WALTER.WHITE@EXAMPLE.COM"]  # fmt: skip
    for identifier in identifiers:
        with subtests.test(identifier=identifier):
            response = await stub.AuthenticateUser(login(identifier))
            assert response.user == user


async def test_stored_hash_is_argon2id_with_owasp_parameters(service, stub):
    user = await create_user(stub, "hashed")
    stored = await stored_hash(service, user.id)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in stored


async def test_same_password_hashes_differently_for_two_users(service, stub):
    a = await create_user(stub, "salted1")
    b = await create_user(stub, "salted2")
    assert await stored_hash(service, a.id) != await stored_hash(service, b.id)


async def test_wrong_password_is_unauthenticated_invalid_credentials(stub, subtests):
    await create_user(stub, "jesse")
    wrong = ["correct horse batter", "Correct horse battery", "correct horse battery ",
             "correct horse battery!", ""]  # fmt: skip
    for password in wrong:
        with subtests.test(password=password):
            got = await failure(stub.AuthenticateUser(login("jesse", password)))
            assert_error(got, UNAUTHENTICATED, "INVALID_CREDENTIALS")


async def test_unknown_user_and_wrong_password_get_the_same_answer(stub):
    await create_user(stub, "skyler", email="skyler@example.com")
    attempts = [
        login("skyler", "not the password"),
        login("skyler@example.com", "not the password"),
        login("nobody"),
        login("nobody@example.com"),
        login("x"),  # not even a valid username
        login("bad name!"),
        login(""),
        login("a" * 300),
    ]
    answers = []
    for attempt in attempts:
        got = await failure(stub.AuthenticateUser(attempt))
        answers.append((got.code, got.reason, got.domain, got.message, got.metadata))
    assert answers[0][:2] == (UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert all(answer == answers[0] for answer in answers), answers


async def test_failure_message_reveals_neither_which_part_was_wrong_nor_the_input(stub):
    await create_user(stub, "marie")
    got = await failure(stub.AuthenticateUser(login("marie", "hunter2hunter2")))
    assert "marie" not in got.message
    assert "hunter2" not in got.message


async def test_password_typed_in_full_width_authenticates_with_its_nfkc_form(stub):
    wide = fullwidth("Secret123!")
    assert wide != "Secret123!"
    user = await create_user(stub, "widepass", password=wide)
    assert (await stub.AuthenticateUser(login("widepass", "Secret123!"))).user == user
    assert (await stub.AuthenticateUser(login("widepass", wide))).user == user


async def test_password_with_compatibility_ligature_matches_its_expansion(stub):
    user = await create_user(stub, "ligature", password="\ufb01nal-answer")  # "ﬁ" ligature
    assert (await stub.AuthenticateUser(login("ligature", "final-answer"))).user == user


# --- re-hashing --------------------------------------------------------------------


async def test_bcrypt_hash_verifies_and_is_rehashed_to_argon2id(service, stub):
    legacy = CryptContext(schemes=["bcrypt"]).hash("legacy-password")
    assert legacy.startswith("$2b$")
    await insert_rows(service, ["oldtimer"], password_hash=legacy)
    user_id = await user_id_of(service, "oldtimer")

    response = await stub.AuthenticateUser(login("oldtimer", "legacy-password"))

    assert response.user.id == user_id
    upgraded = await stored_hash(service, user_id)
    assert upgraded.startswith("$argon2id$")
    assert CryptContext(schemes=["argon2"]).verify("legacy-password", upgraded)
    # The upgraded hash keeps working.
    assert (await stub.AuthenticateUser(login("OLDTIMER", "legacy-password"))).user.id == user_id


async def test_failed_login_leaves_a_bcrypt_hash_alone(service, stub):
    legacy = CryptContext(schemes=["bcrypt"]).hash("legacy-password")
    await insert_rows(service, ["untouched"], password_hash=legacy)
    user_id = await user_id_of(service, "untouched")

    got = await failure(stub.AuthenticateUser(login("untouched", "wrong-password")))

    assert_error(got, UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert await stored_hash(service, user_id) == legacy


async def test_password_too_long_for_bcrypt_is_a_plain_failure(service, stub):
    legacy = CryptContext(schemes=["bcrypt"]).hash("legacy-password")
    await insert_rows(service, ["longbcrypt"], password_hash=legacy)
    got = await failure(stub.AuthenticateUser(login("longbcrypt", "legacy-password" + "x" * 100)))
    assert_error(got, UNAUTHENTICATED, "INVALID_CREDENTIALS")


async def test_argon2_hash_with_weak_parameters_is_rehashed(service, stub):
    weak = CryptContext(
        schemes=["argon2"], argon2__memory_cost=1024, argon2__rounds=1, argon2__parallelism=1
    ).hash("weak-params-password")
    assert "m=1024,t=1,p=1" in weak
    await insert_rows(service, ["weakling"], password_hash=weak)
    user_id = await user_id_of(service, "weakling")

    await stub.AuthenticateUser(login("weakling", "weak-params-password"))

    assert (await stored_hash(service, user_id)).startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_corrupt_stored_hash_fails_like_a_wrong_password(service, stub):
    await insert_rows(service, ["corrupt"], password_hash="$argon2id$garbage")
    got = await failure(stub.AuthenticateUser(login("corrupt", PASSWORD)))
    assert_error(got, UNAUTHENTICATED, "INVALID_CREDENTIALS")


# --- timing ------------------------------------------------------------------------


@pytest_asyncio.fixture
async def unthrottled_stub(database_url):
    """A service without brute-force throttling, which would refuse a series of failures."""
    async with running_service(database_url, auth_max_failures=0) as running:
        yield running.stub


async def test_unknown_user_fails_in_about_the_time_of_a_wrong_password(unthrottled_stub):
    """A weak check: medians of interleaved attempts stay within a factor of two."""
    stub = unthrottled_stub
    await create_user(stub, "timed")

    async def seconds(request: user_service_pb2.AuthenticateUserRequest) -> float:
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.AuthenticateUser(request)
        return time.perf_counter() - started

    await seconds(login("timed", "warm-up-attempt"))
    unknown, wrong = [], []
    for i in range(15):
        unknown.append(await seconds(login(f"ghost{i}", "some-password")))
        wrong.append(await seconds(login("timed", f"wrong-password-{i}")))
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 < ratio < 2.0, (unknown, wrong)


# --- ChangePassword ----------------------------------------------------------------


async def test_after_change_the_old_password_fails_and_the_new_one_works(stub):
    user = await create_user(stub, "changer")
    await stub.ChangePassword(change(user.id, PASSWORD, "brand new password"))

    got = await failure(stub.AuthenticateUser(login("changer", PASSWORD)))
    assert_error(got, UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert (await stub.AuthenticateUser(login("changer", "brand new password"))).user.id == user.id


async def test_change_password_with_wrong_current_is_unauthenticated(stub):
    user = await create_user(stub, "guarded")
    got = await failure(stub.ChangePassword(change(user.id, "not the password", "whatever123")))
    assert_error(got, UNAUTHENTICATED, "INVALID_CREDENTIALS")
    # Nothing changed.
    assert (await stub.AuthenticateUser(login("guarded"))).user.id == user.id
    got = await failure(stub.AuthenticateUser(login("guarded", "whatever123")))
    assert_error(got, UNAUTHENTICATED, "INVALID_CREDENTIALS")


async def test_change_to_a_bad_password_is_invalid_argument_naming_new_password(stub, subtests):
    user = await create_user(stub, "ruled")
    for new in ("", "1234567", "p" * 257):
        with subtests.test(length=len(new)):
            got = await failure(stub.ChangePassword(change(user.id, PASSWORD, new)))
            assert_invalid(got, "new_password")
    assert (await stub.AuthenticateUser(login("ruled"))).user.id == user.id


async def test_change_password_of_missing_user_is_not_found(stub):
    user = await create_user(stub, "exists")
    got = await failure(stub.ChangePassword(change(user.id + 1, PASSWORD, "another password")))
    assert_error(got, grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_change_password_with_non_positive_id_is_invalid_argument(stub, subtests):
    for user_id in (0, -1):
        with subtests.test(id=user_id):
            got = await failure(stub.ChangePassword(change(user_id, PASSWORD, "another password")))
            assert_invalid(got, "id")


async def test_concurrent_changes_from_one_current_password_let_exactly_one_win(stub):
    user = await create_user(stub, "contested")
    candidates = [f"contender-password-{i}" for i in range(5)]
    results = await asyncio.gather(
        *(stub.ChangePassword(change(user.id, PASSWORD, new)) for new in candidates),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 4, results
    assert {e.code() for e in refused} == {UNAUTHENTICATED}
    winner = candidates[next(i for i, r in enumerate(results) if r not in refused)]
    assert (await stub.AuthenticateUser(login("contested", winner))).user.id == user.id
    for loser in (c for c in [*candidates, PASSWORD] if c != winner):
        got = await failure(stub.AuthenticateUser(login("contested", loser)))
        assert_error(got, UNAUTHENTICATED, "INVALID_CREDENTIALS")


async def test_new_password_is_nfkc_normalised_like_at_sign_up(stub):
    user = await create_user(stub, "rewide")
    await stub.ChangePassword(change(user.id, fullwidth(PASSWORD), fullwidth("NewPass99")))
    assert (await stub.AuthenticateUser(login("rewide", "NewPass99"))).user.id == user.id


async def test_change_password_replaces_a_bcrypt_hash_with_argon2id(service, stub):
    legacy = CryptContext(schemes=["bcrypt"]).hash("legacy-password")
    await insert_rows(service, ["legacychange"], password_hash=legacy)
    user_id = await user_id_of(service, "legacychange")

    await stub.ChangePassword(change(user_id, "legacy-password", "modern-password"))

    assert (await stored_hash(service, user_id)).startswith("$argon2id$")
    assert (await stub.AuthenticateUser(login("legacychange", "modern-password"))).user.id


@pytest.mark.parametrize(
    ("method", "code"), [("DeleteUser", "NOT_FOUND"), ("DisableUser", "UNAUTHENTICATED")]
)
async def test_a_user_deleted_or_disabled_while_its_new_password_hashes_keeps_the_old(
    stub, method, code
):
    user = await create_user(stub)
    changing = asyncio.ensure_future(stub.ChangePassword(change(user.id, PASSWORD, "brand new pw")))
    # Sign-ups queue their hashing ahead of the new password's, which leaves
    # the user time to change after ChangePassword has checked it.
    sign_ups = [asyncio.ensure_future(create_user(stub)) for _ in range(6)]
    await asyncio.sleep(0.05)
    await call(stub, method, user.id)
    got = await failure(changing)
    await asyncio.gather(*sign_ups)
    assert got.code.name == code
    if method == "DisableUser":
        await call(stub, "EnableUser", user.id)
        await stub.AuthenticateUser(login(user.username, PASSWORD))
