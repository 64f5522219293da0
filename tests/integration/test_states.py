"""User states (aip.dev/216): the full transition table, and what each state allows."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from users.v1 import resources_pb2, user_service_pb2

from tests.db_audit import bank_violations, ledger_rows, user_row
from tests.helpers import PASSWORD, assert_error, create_user, failure
from tests.integration.lifecycle_helpers import (
    ACTIVE,
    DELETED,
    DISABLED,
    LOCKED,
    STATE_METHODS,
    call,
    get,
    put_in_state,
)
from tests.integration.money_helpers import new_request_id
from tests.race_clients import race_calls, race_pair

NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
REFUSED = "refused"  # FAILED_PRECONDITION, reason INVALID_STATE_TRANSITION
GONE = "gone"  # NOT_FOUND, reason USER_NOT_FOUND

# (state before, method) -> state after, or how the call fails. The README
# documents this same table.
TRANSITIONS = {
    ACTIVE: {
        "DisableUser": DISABLED,
        "EnableUser": REFUSED,
        "LockUser": LOCKED,
        "UnlockUser": REFUSED,
        "DeleteUser": DELETED,
        "UndeleteUser": REFUSED,
    },
    DISABLED: {
        "DisableUser": REFUSED,
        "EnableUser": ACTIVE,
        "LockUser": REFUSED,
        "UnlockUser": REFUSED,
        "DeleteUser": DELETED,
        "UndeleteUser": REFUSED,
    },
    LOCKED: {
        "DisableUser": DISABLED,
        "EnableUser": REFUSED,
        "LockUser": REFUSED,
        "UnlockUser": ACTIVE,
        "DeleteUser": DELETED,
        "UndeleteUser": REFUSED,
    },
    DELETED: {
        "DisableUser": GONE,
        "EnableUser": GONE,
        "LockUser": GONE,
        "UnlockUser": GONE,
        "DeleteUser": GONE,
        # Undelete restores the state before deletion: ACTIVE for this user.
        "UndeleteUser": ACTIVE,
    },
}
CASES = [(before, method) for before in TRANSITIONS for method in STATE_METHODS]


def _name(state: int) -> str:
    return resources_pb2.State.Name(resources_pb2.State.ValueType(state))


async def test_a_new_user_is_active_and_not_deleted(stub):
    user = await create_user(stub)
    assert user.state == ACTIVE
    assert user.etag
    assert not user.HasField("delete_time")
    assert not user.HasField("purge_time")


@pytest.mark.parametrize(("before", "method"), CASES, ids=[f"{_name(b)}-{m}" for b, m in CASES])
async def test_state_transition_table(stub, before, method):
    user = await create_user(stub)
    await put_in_state(stub, user.id, before)
    expected = TRANSITIONS[before][method]

    if expected == REFUSED:
        got = await failure(call(stub, method, user.id))
        assert_error(got, FAILED_PRECONDITION, "INVALID_STATE_TRANSITION")
        assert got.metadata == {"user_id": str(user.id), "state": _name(before)}
        assert _name(before) in got.message
        assert method in got.message
        assert (await get(stub, user.id)).state == before
    elif expected == GONE:
        got = await failure(call(stub, method, user.id))
        assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
        assert (await get(stub, user.id)).state == before
    else:
        returned = await call(stub, method, user.id)
        stored = await get(stub, user.id)
        assert stored.state == expected
        if returned is not None:
            assert returned.state == expected
            assert returned.etag == stored.etag


@pytest.mark.parametrize("before", [DISABLED, LOCKED])
async def test_undelete_restores_the_state_the_user_had(stub, before):
    user = await create_user(stub)
    await put_in_state(stub, user.id, before)
    await call(stub, "DeleteUser", user.id)

    restored = await call(stub, "UndeleteUser", user.id)

    assert restored is not None
    assert restored.state == before
    assert not restored.HasField("delete_time")
    assert not restored.HasField("purge_time")


async def test_state_methods_check_the_id(stub):
    for method in STATE_METHODS:
        got = await failure(call(stub, method, 0))
        assert got.code == grpc.StatusCode.INVALID_ARGUMENT, method
        assert set(got.violations) == {"id"}, method
        assert_error(await failure(call(stub, method, 987654)), NOT_FOUND, "USER_NOT_FOUND")


# --- What each state allows --------------------------------------------------------


async def _authenticate(stub, username: str, password: str = PASSWORD):
    return await stub.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(username=username, password=password)
    )


@pytest.mark.parametrize("state", [DISABLED, LOCKED, DELETED])
async def test_a_user_that_is_not_active_cannot_authenticate_and_gets_the_wrong_password_answer(
    stub, state
):
    user = await create_user(stub)
    wrong = await failure(_authenticate(stub, user.username, "not the password"))
    await put_in_state(stub, user.id, state)

    by_name = await failure(_authenticate(stub, user.username))
    by_email = await failure(_authenticate(stub, user.email))

    for got in (by_name, by_email):
        assert_error(got, UNAUTHENTICATED, "INVALID_CREDENTIALS")
        assert (got.code, got.reason, got.message, got.metadata) == (
            wrong.code,
            wrong.reason,
            wrong.message,
            wrong.metadata,
        )


@pytest.mark.parametrize(("state", "undo"), [(DISABLED, "EnableUser"), (LOCKED, "UnlockUser")])
async def test_authentication_works_again_once_the_user_is_active(stub, state, undo):
    user = await create_user(stub)
    await put_in_state(stub, user.id, state)
    await call(stub, undo, user.id)

    response = await _authenticate(stub, user.username)

    assert response.user.id == user.id
    assert response.user.state == ACTIVE


@pytest.mark.parametrize("state", [DISABLED, LOCKED])
async def test_change_password_needs_an_active_user(stub, state):
    user = await create_user(stub)
    await put_in_state(stub, user.id, state)
    request = user_service_pb2.ChangePasswordRequest(
        id=user.id, current_password=PASSWORD, new_password="a brand new secret"
    )

    assert_error(
        await failure(stub.ChangePassword(request)), UNAUTHENTICATED, "INVALID_CREDENTIALS"
    )

    await call(stub, "EnableUser" if state == DISABLED else "UnlockUser", user.id)
    # The refused call changed nothing: the old password still holds.
    assert (await _authenticate(stub, user.username)).user.id == user.id


async def test_change_password_of_a_deleted_user_is_not_found(stub):
    user = await create_user(stub)
    await call(stub, "DeleteUser", user.id)
    request = user_service_pb2.ChangePasswordRequest(
        id=user.id, current_password=PASSWORD, new_password="a brand new secret"
    )
    assert_error(await failure(stub.ChangePassword(request)), NOT_FOUND, "USER_NOT_FOUND")


@pytest.mark.parametrize("state", [DISABLED, LOCKED])
async def test_disabled_and_locked_users_can_still_be_read_and_updated(stub, state):
    user = await create_user(stub)
    await put_in_state(stub, user.id, state)

    got = await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
    listed = await stub.ListUsers(user_service_pb2.ListUsersRequest())
    updated = await stub.UpdateUser(
        user_service_pb2.UpdateUserRequest(
            user=resources_pb2.User(id=user.id, display_name="Still here"),
        )
    )

    assert got.state == state
    assert [u.id for u in listed.users] == [user.id]
    assert updated.display_name == "Still here"
    assert updated.state == state


# --- Concurrency ---------------------------------------------------------------------


async def test_concurrent_state_changes_apply_exactly_once(service, database_url):
    user = await create_user(service.stub)
    before = await user_row(database_url, user.id)
    assert before is not None

    outcomes = await race_calls(
        service.address, [("DisableUser", user_service_pb2.DisableUserRequest(id=user.id))] * 8
    )

    assert [o.problem for o in outcomes if o.problem] == []
    won = [o.reply for o in outcomes if o.ok]
    assert len(won) == 1, outcomes
    refused = {(o.code, o.reason) for o in outcomes if not o.ok}
    assert refused == {(FAILED_PRECONDITION, "INVALID_STATE_TRANSITION")}
    stored = await user_row(database_url, user.id)
    assert stored is not None
    assert (stored["state"], stored["version"]) == (resources_pb2.DISABLED, before["version"] + 1)
    assert (await get(service.stub, user.id)).etag == won[0].etag


async def test_a_deposit_racing_a_delete_never_leaves_money_on_a_deleted_user(
    service, database_url
):
    seen = set()
    for index in range(6):
        user = await create_user(service.stub)
        request_id = new_request_id()
        deposited, deleted = await race_pair(
            service.address,
            (
                "Deposit",
                user_service_pb2.DepositRequest(user_id=user.id, amount=5, request_id=request_id),
            ),
            ("DeleteUser", user_service_pb2.DeleteUserRequest(id=user.id)),
            index,
        )
        assert (deposited.problem, deleted.problem) == (None, None)
        stored = await user_row(database_url, user.id)
        ledger = await ledger_rows(database_url, "request_id = $1", request_id)
        assert stored is not None
        if not deleted.ok:
            # The deposit came first: the delete was refused for the balance.
            seen.add("deposit first")
            assert (deleted.code, deleted.reason) == (FAILED_PRECONDITION, "BALANCE_NOT_ZERO")
            assert deposited.ok, deposited
            assert (stored["balance"], stored["delete_time"]) == (5, None)
            assert len(ledger) == 1
        else:
            # The delete came first: the deposit found no user and moved nothing.
            seen.add("delete first")
            assert (deposited.code, deposited.reason) == (NOT_FOUND, "USER_NOT_FOUND")
            assert stored["balance"] == 0
            assert stored["delete_time"] is not None
            assert ledger == []
        assert await bank_violations(database_url) == []
    assert seen == {"deposit first", "delete first"}
