"""Brute-force throttling of AuthenticateUser and ChangePassword, on both backends.

Each test starts its own server with a lockout policy suited to it (short
delays where it waits them out, long ones where a lockout must hold), over
the parametrized database.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
from users.v1 import user_service_pb2

from service.testing import running_service
from tests.db_audit import rows
from tests.helpers import PASSWORD, assert_error, create_user, failure, fullwidth
from tests.race_clients import race_calls

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from service.testing import RunningService

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
WRONG = "not the password"


def login(username: str, password: str = WRONG) -> user_service_pb2.AuthenticateUserRequest:
    return user_service_pb2.AuthenticateUserRequest(username=username, password=password)


def change(user_id: int, current: str = WRONG) -> user_service_pb2.ChangePasswordRequest:
    return user_service_pb2.ChangePasswordRequest(
        id=user_id, current_password=current, new_password="a brand new password"
    )


THROTTLE = "SELECT failures FROM auth_throttle"


def serve(database_url: str, **policy: Any) -> AbstractAsyncContextManager[RunningService]:
    return running_service(database_url, **policy)


async def fail_times(stub: Any, request: Any, times: int, method: str = "AuthenticateUser") -> None:
    for _ in range(times):
        got = await failure(getattr(stub, method)(request))
        assert got.code == UNAUTHENTICATED, got


async def test_sixth_attempt_is_refused_even_with_the_right_password(database_url):
    async with serve(database_url, auth_lockout_base=30) as service:
        await create_user(service.stub, "target")
        await fail_times(service.stub, login("target"), 5)
        got = await failure(service.stub.AuthenticateUser(login("target", PASSWORD)))
        assert_error(got, EXHAUSTED, "TOO_MANY_ATTEMPTS")
        assert got.retry_seconds is not None
        assert 25 < got.retry_seconds <= 30
        assert got.message == "Too many failed attempts; retry in 30 seconds."


async def test_lockouts_double_with_each_further_failure(database_url):
    async with serve(database_url, auth_lockout_base=0.6, auth_lockout_max=60) as service:
        await create_user(service.stub, "doubling")
        await fail_times(service.stub, login("doubling"), 5)
        delays = []
        for _ in range(3):
            got = await failure(service.stub.AuthenticateUser(login("doubling")))
            assert_error(got, EXHAUSTED, "TOO_MANY_ATTEMPTS")
            assert got.retry_seconds is not None
            delays.append(got.retry_seconds)
            await asyncio.sleep(got.retry_seconds + 0.05)
            await fail_times(service.stub, login("doubling"), 1)
        # Each delay is read right after the lockout began, so close to its full
        # length: within 0.5 s of it even on a busy machine, and the three
        # ranges do not overlap, so each lockout is longer than the one before.
        for delay, expected in zip(delays, (0.6, 1.2, 2.4), strict=True):
            assert expected - 0.5 < delay <= expected, delays


async def test_lockout_is_capped_at_the_maximum(database_url):
    async with serve(
        database_url, auth_max_failures=1, auth_lockout_base=0.2, auth_lockout_max=0.3
    ) as service:
        await create_user(service.stub, "capped")
        await fail_times(service.stub, login("capped"), 1)
        for _ in range(3):
            got = await failure(service.stub.AuthenticateUser(login("capped")))
            assert got.retry_seconds is not None
            assert got.retry_seconds <= 0.3
            await asyncio.sleep(got.retry_seconds + 0.05)
            await fail_times(service.stub, login("capped"), 1)


async def test_a_success_forgets_earlier_failures(database_url):
    async with serve(database_url, auth_lockout_base=30) as service:
        await create_user(service.stub, "forgetful")
        await fail_times(service.stub, login("forgetful"), 4)
        await service.stub.AuthenticateUser(login("forgetful", PASSWORD))
        await fail_times(service.stub, login("forgetful"), 4)
        reply = await service.stub.AuthenticateUser(login("forgetful", PASSWORD))
        assert reply.user.username == "forgetful"


async def test_fifth_attempt_with_the_right_password_succeeds_and_unlocks(database_url):
    async with serve(database_url, auth_lockout_base=30) as service:
        user = await create_user(service.stub, "lucky")
        await fail_times(service.stub, login("lucky"), 4)
        assert {row["failures"] for row in await rows(database_url, THROTTLE)} == {4}
        fifth = await service.stub.AuthenticateUser(login("lucky", PASSWORD))
        assert fifth.user.id == user.id
        # Unlocked: the count is gone from the database, and a full allowance is back.
        assert await rows(database_url, THROTTLE) == []
        again = await service.stub.AuthenticateUser(login("lucky", PASSWORD))
        assert again.user.id == user.id
        await fail_times(service.stub, login("lucky"), 4)
        reply = await service.stub.AuthenticateUser(login("lucky", PASSWORD))
        assert reply.user.id == user.id


async def test_unknown_names_get_exactly_the_answers_of_existing_ones(database_url, subtests):
    async with serve(database_url, auth_lockout_base=30) as service:
        await create_user(service.stub, "existing")
        answers = {}
        for name in ("existing", "nobody-here", "x"):  # "x" cannot even be a username
            seen = []
            for _ in range(7):
                got = await failure(service.stub.AuthenticateUser(login(name)))
                retry = None if got.retry_seconds is None else round(got.retry_seconds)
                seen.append((got.code, got.reason, got.message, got.metadata, retry))
            answers[name] = seen
        for name in ("nobody-here", "x"):
            with subtests.test(name=name):
                assert answers[name] == answers["existing"]
        assert [code for code, *_ in answers["existing"]] == [UNAUTHENTICATED] * 5 + [EXHAUSTED] * 2


async def test_every_spelling_of_a_name_shares_one_count(database_url):
    async with serve(database_url, auth_lockout_base=30) as service:
        await create_user(service.stub, "Spelling")
        for name in ("Spelling", "SPELLING", "spelling", fullwidth("spelling"), "sPeLlInG"):
            await fail_times(service.stub, login(name), 1)
        got = await failure(service.stub.AuthenticateUser(login("spelling", PASSWORD)))
        assert_error(got, EXHAUSTED, "TOO_MANY_ATTEMPTS")


async def test_email_and_username_are_counted_apart(database_url):
    """Sharing one count would tell a guesser which email belongs to which username."""
    async with serve(database_url, auth_lockout_base=30) as service:
        await create_user(service.stub, "twofaced", email="twofaced@example.com")
        await fail_times(service.stub, login("twofaced"), 5)
        refused = await failure(service.stub.AuthenticateUser(login("twofaced")))
        assert refused.code == EXHAUSTED
        reply = await service.stub.AuthenticateUser(login("TwoFaced@Example.com", PASSWORD))
        assert reply.user.username == "twofaced"


async def test_parallel_guesses_cannot_pass_the_limit(database_url):
    async with serve(database_url, auth_lockout_base=60) as service:
        await create_user(service.stub, "burst")
        outcomes = await race_calls(
            service.address, [("AuthenticateUser", login("burst", f"guess {i}")) for i in range(30)]
        )
        assert [o.problem for o in outcomes if o.problem] == []
        codes = sorted(o.code.name for o in outcomes)
        assert codes == ["RESOURCE_EXHAUSTED"] * 25 + ["UNAUTHENTICATED"] * 5
        # The stored counts agree: five failures counted on each key, no more.
        stored = await rows(database_url, "SELECT failures FROM auth_throttle")
        assert stored
        assert {row["failures"] for row in stored} == {5}, stored


async def test_lockout_holds_across_a_restart_and_across_servers(database_url):
    async with serve(database_url, auth_lockout_base=60) as first:
        await create_user(first.stub, "durable")
        await fail_times(first.stub, login("durable"), 3)
        async with serve(database_url, auth_lockout_base=60) as second:
            # Two servers on one database, as workers or replicas are: one count.
            await fail_times(second.stub, login("durable"), 2)
            got = await failure(first.stub.AuthenticateUser(login("durable", PASSWORD)))
            assert_error(got, EXHAUSTED, "TOO_MANY_ATTEMPTS")
    async with serve(database_url, auth_lockout_base=60) as restarted:
        got = await failure(restarted.stub.AuthenticateUser(login("durable", PASSWORD)))
        assert_error(got, EXHAUSTED, "TOO_MANY_ATTEMPTS")


async def test_failures_are_forgotten_after_a_quiet_window(database_url):
    async with serve(database_url, auth_failure_window=0.5, auth_lockout_base=30) as service:
        await create_user(service.stub, "patient")
        await fail_times(service.stub, login("patient"), 4)
        await asyncio.sleep(0.7)
        await fail_times(service.stub, login("patient"), 4)
        await service.stub.AuthenticateUser(login("patient", PASSWORD))


async def test_change_password_is_throttled_per_account(database_url):
    async with serve(database_url, auth_lockout_base=30) as service:
        user = await create_user(service.stub, "changer")
        await fail_times(service.stub, change(user.id), 5, method="ChangePassword")
        got = await failure(service.stub.ChangePassword(change(user.id, PASSWORD)))
        assert_error(got, EXHAUSTED, "TOO_MANY_ATTEMPTS")
        # Logging in is counted apart, by name, and still works.
        await service.stub.AuthenticateUser(login("changer", PASSWORD))


async def test_change_password_success_forgets_failures(database_url):
    async with serve(database_url, auth_lockout_base=30) as service:
        user = await create_user(service.stub, "rechanger")
        await fail_times(service.stub, change(user.id), 4, method="ChangePassword")
        await service.stub.ChangePassword(change(user.id, PASSWORD))
        await fail_times(service.stub, change(user.id), 4, method="ChangePassword")


async def test_zero_max_failures_turns_throttling_off(database_url):
    async with serve(database_url, auth_max_failures=0) as service:
        await create_user(service.stub, "unguarded")
        await fail_times(service.stub, login("unguarded"), 8)
        await service.stub.AuthenticateUser(login("unguarded", PASSWORD))


async def test_quiet_rows_are_swept_and_live_ones_kept(database_url):
    from service.db import throttle as throttle_db
    from service.db.models import AuthThrottleRow

    async with serve(database_url, auth_lockout_base=30) as service:
        await fail_times(service.stub, login("swept"), 1)
        await fail_times(service.stub, login("locked-out"), 5)
        with service.server.database.activate():
            blocked = [row.blocked_until_ms for row in await AuthThrottleRow.all()]
            assert len(blocked) == 2
            # Just before the lockout ends: the lone failure is older, the lockout still on.
            await throttle_db.sweep(max(blocked) - 1)
            assert await AuthThrottleRow.all().count() == 1
