"""Etags (aip.dev/154): they change on every write and make writes conditional."""

from __future__ import annotations

import uuid

import grpc
import pytest
from users.v1 import resources_pb2, user_service_pb2

from tests.db_audit import user_row
from tests.helpers import PASSWORD, assert_error, create_user, failure
from tests.integration.lifecycle_helpers import STATE_METHODS, call, get, put_in_state
from tests.integration.money_helpers import deposit, new_request_id, transfer
from tests.race_clients import race_calls

ABORTED = grpc.StatusCode.ABORTED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT

# A state each method applies to, so that only the etag can make it fail.
_APPLIES_TO = {
    "DisableUser": resources_pb2.ACTIVE,
    "EnableUser": resources_pb2.DISABLED,
    "LockUser": resources_pb2.ACTIVE,
    "UnlockUser": resources_pb2.LOCKED,
    "DeleteUser": resources_pb2.ACTIVE,
    "UndeleteUser": resources_pb2.DELETED,
}


def _rename(user_id: int, etag: str, name: str = "Renamed") -> user_service_pb2.UpdateUserRequest:
    return user_service_pb2.UpdateUserRequest(
        user=resources_pb2.User(id=user_id, display_name=name, etag=etag)
    )


async def test_reads_return_the_same_etag_until_a_write(stub):
    user = await create_user(stub)
    await stub.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(username=user.username, password=PASSWORD)
    )
    assert (await get(stub, user.id)).etag == user.etag
    looked_up = await stub.LookupUser(user_service_pb2.LookupUserRequest(username=user.username))
    assert looked_up.etag == user.etag


async def test_every_write_changes_the_etag(stub):
    user = await create_user(stub)
    other = await create_user(stub)
    seen = {user.etag}

    async def changed() -> str:
        etag = (await get(stub, user.id)).etag
        assert etag not in seen
        seen.add(etag)
        return etag

    await stub.UpdateUser(_rename(user.id, ""))
    await changed()
    await deposit(stub, user.id, 100, new_request_id())
    await changed()
    await transfer(stub, user.id, other.id, 100, new_request_id())
    await changed()
    await transfer(stub, other.id, user.id, 100, new_request_id())
    await changed()
    await stub.ChangePassword(
        user_service_pb2.ChangePasswordRequest(
            id=user.id, current_password=PASSWORD, new_password="another good secret"
        )
    )
    await changed()
    await transfer(stub, user.id, other.id, 100, new_request_id())
    await changed()
    for method in ("LockUser", "DisableUser", "EnableUser", "DeleteUser", "UndeleteUser"):
        await call(stub, method, user.id)
        await changed()


async def test_a_write_with_the_current_etag_succeeds_and_returns_the_new_one(stub):
    user = await create_user(stub)

    renamed = await stub.UpdateUser(_rename(user.id, user.etag))
    disabled = await call(stub, "DisableUser", user.id, renamed.etag)

    assert renamed.display_name == "Renamed"
    assert renamed.etag != user.etag
    assert disabled is not None
    assert disabled.etag == (await get(stub, user.id)).etag


async def test_update_with_a_stale_etag_is_aborted_and_changes_nothing(stub):
    user = await create_user(stub)
    await stub.UpdateUser(_rename(user.id, "", "First"))

    got = await failure(stub.UpdateUser(_rename(user.id, user.etag, "Second")))

    assert_error(got, ABORTED, "ETAG_MISMATCH")
    assert got.metadata == {"user_id": str(user.id)}
    # Resending the same request cannot succeed: no RetryInfo invites it.
    assert got.retry_seconds is None
    assert (await get(stub, user.id)).display_name == "First"


@pytest.mark.parametrize("method", STATE_METHODS)
async def test_state_methods_with_a_stale_etag_are_aborted(stub, method):
    user = await create_user(stub)
    await put_in_state(stub, user.id, _APPLIES_TO[method])
    stale = (await get(stub, user.id)).etag
    if method == "UndeleteUser":
        # A deleted user changes only by being undeleted; do that and delete again.
        await call(stub, "UndeleteUser", user.id)
        await call(stub, "DeleteUser", user.id)
    else:
        await stub.UpdateUser(_rename(user.id, ""))
    before = await get(stub, user.id)

    got = await failure(call(stub, method, user.id, stale))

    assert_error(got, ABORTED, "ETAG_MISMATCH")
    after = await get(stub, user.id)
    assert (after.state, after.etag) == (before.state, before.etag)


@pytest.mark.parametrize("method", STATE_METHODS)
async def test_state_methods_with_the_current_etag_succeed(stub, method):
    user = await create_user(stub)
    await put_in_state(stub, user.id, _APPLIES_TO[method])
    current = (await get(stub, user.id)).etag

    await call(stub, method, user.id, current)

    assert (await get(stub, user.id)).state != _APPLIES_TO[method]


@pytest.mark.parametrize(
    "etag", ["garbage", "1", "1-", "0-000000000000", "-1-abcdefabcdef", "1-ABCDEFABCDEF", "W/1"]
)
async def test_an_etag_this_service_did_not_issue_is_invalid_argument(stub, etag):
    user = await create_user(stub)

    for got, field in (
        (await failure(stub.UpdateUser(_rename(user.id, etag))), "user.etag"),
        (await failure(call(stub, "DisableUser", user.id, etag)), "etag"),
        (await failure(call(stub, "DeleteUser", user.id, etag)), "etag"),
    ):
        assert_error(got, INVALID_ARGUMENT, "INVALID_ETAG")
        assert set(got.violations) == {field}
    assert (await get(stub, user.id)).etag == user.etag


async def test_another_users_etag_is_invalid_argument_not_a_match(stub):
    # Both users are at the same version, so a bare version number would pass.
    user = await create_user(stub)
    other = await create_user(stub)

    got = await failure(stub.UpdateUser(_rename(user.id, other.etag)))

    assert_error(got, INVALID_ARGUMENT, "INVALID_ETAG")
    assert (await get(stub, user.id)).display_name == user.display_name


async def test_an_etag_in_http_quotes_is_accepted(stub):
    user = await create_user(stub)
    renamed = await stub.UpdateUser(_rename(user.id, f'"{user.etag}"'))
    assert renamed.display_name == "Renamed"


async def test_concurrent_writes_with_one_etag_let_exactly_one_through(service, database_url):
    user = await create_user(service.stub)
    before = await user_row(database_url, user.id)
    assert before is not None

    outcomes = await race_calls(
        service.address,
        [("UpdateUser", _rename(user.id, user.etag, f"Writer {i}")) for i in range(8)],
    )

    assert [o.problem for o in outcomes if o.problem] == []
    winners = [o.reply for o in outcomes if o.ok]
    assert len(winners) == 1, outcomes
    assert {(o.code, o.reason) for o in outcomes if not o.ok} == {(ABORTED, "ETAG_MISMATCH")}
    stored = await user_row(database_url, user.id)
    assert stored is not None
    # One write and only one: the version moved by exactly one, to the winner's name.
    assert (stored["display_name"], stored["version"]) == (
        winners[0].display_name,
        before["version"] + 1,
    )
    assert (await get(service.stub, user.id)).etag == winners[0].etag


async def test_a_balance_change_moves_update_time_with_the_etag(stub):
    payer = await create_user(stub)
    payee = await create_user(stub)
    funded = await stub.Deposit(
        user_service_pb2.DepositRequest(user_id=payer.id, amount=500, request_id=str(uuid.uuid4()))
    )
    assert funded.etag != payer.etag
    assert funded.update_time.ToDatetime() > payer.update_time.ToDatetime()
    await stub.TransferFunds(
        user_service_pb2.TransferFundsRequest(
            from_user_id=payer.id, to_user_id=payee.id, amount=200, request_id=str(uuid.uuid4())
        )
    )
    for before in (funded, payee):
        after = await stub.GetUser(user_service_pb2.GetUserRequest(id=before.id))
        assert after.etag != before.etag
        assert after.update_time.ToDatetime() > before.update_time.ToDatetime()
