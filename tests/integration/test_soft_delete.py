"""Soft delete, undelete and purge (aip.dev/164), on both backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from users.v1 import resources_pb2, user_service_pb2

from service.db.models import LedgerRow, PostRow, UserRow
from service.domain.users import purge_deleted_users
from service.testing import running_service
from tests.helpers import assert_error, create_user, failure
from tests.integration.lifecycle_helpers import ACTIVE, DELETED, call, get
from tests.integration.money_helpers import create_post, deposit, new_request_id, transfer
from tests.ops_helpers import run_cli, service_environment
from tests.requirements import not_applicable

NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS


async def test_delete_marks_the_user_deleted_with_delete_and_purge_times(stub):
    user = await create_user(stub)
    before = datetime.now(UTC)
    await call(stub, "DeleteUser", user.id)
    after = datetime.now(UTC)

    deleted = await get(stub, user.id)

    assert deleted.state == DELETED
    deleted_at = deleted.delete_time.ToDatetime(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= deleted_at <= after + timedelta(seconds=1)
    # The default retention is 30 days.
    assert deleted.purge_time.ToDatetime(tzinfo=UTC) - deleted_at == timedelta(days=30)
    assert deleted.update_time == deleted.delete_time
    assert deleted.username == user.username


async def test_deleted_users_are_hidden_from_reads_unless_asked_for(stub):
    user = await create_user(stub)
    other = await create_user(stub)
    await call(stub, "DeleteUser", user.id)

    assert_error(
        await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))),
        NOT_FOUND,
        "USER_NOT_FOUND",
    )
    full = user_service_pb2.GetUserRequest(
        id=user.id, view=resources_pb2.USER_VIEW_FULL, show_deleted=True
    )
    assert (await stub.GetUser(full)).state == DELETED
    for lookup in (
        user_service_pb2.LookupUserRequest(username=user.username),
        user_service_pb2.LookupUserRequest(email=user.email.upper()),
    ):
        assert_error(await failure(stub.LookupUser(lookup)), NOT_FOUND, "USER_NOT_FOUND")
        lookup.show_deleted = True
        assert (await stub.LookupUser(lookup)).id == user.id
    batch = user_service_pb2.BatchGetUsersRequest(ids=[other.id, user.id])
    got = await failure(stub.BatchGetUsers(batch))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert got.metadata == {"user_ids": str(user.id)}

    listed = await stub.ListUsers(user_service_pb2.ListUsersRequest())
    assert [u.id for u in listed.users] == [other.id]
    assert listed.total_size == 1
    everyone = await stub.ListUsers(user_service_pb2.ListUsersRequest(show_deleted=True))
    assert [(u.id, u.state) for u in everyone.users] == [(user.id, DELETED), (other.id, ACTIVE)]
    assert everyone.total_size == 2


async def test_list_page_tokens_are_bound_to_show_deleted(stub):
    for _ in range(3):
        await create_user(stub)
    page = await stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=1))

    got = await failure(
        stub.ListUsers(
            user_service_pb2.ListUsersRequest(
                page_size=1, page_token=page.next_page_token, show_deleted=True
            )
        )
    )

    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(got.violations) == {"page_token"}


async def test_a_deleted_users_username_and_email_stay_reserved(stub):
    user = await create_user(stub, "Reserved")
    await call(stub, "DeleteUser", user.id)

    same_name = await failure(create_user(stub, "reserved", email="new@example.com"))
    same_email = await failure(create_user(stub, "newcomer", email=user.email))

    assert_error(same_name, ALREADY_EXISTS, "USERNAME_TAKEN")
    assert_error(same_email, ALREADY_EXISTS, "EMAIL_TAKEN")


async def test_a_deleted_user_cannot_be_updated(stub):
    user = await create_user(stub)
    await call(stub, "DeleteUser", user.id)
    request = user_service_pb2.UpdateUserRequest(
        user=resources_pb2.User(id=user.id, display_name="Ghost")
    )
    assert_error(await failure(stub.UpdateUser(request)), NOT_FOUND, "USER_NOT_FOUND")
    assert (await get(stub, user.id)).display_name == user.display_name


async def test_delete_keeps_the_balance_rule(stub):
    user = await create_user(stub)
    await deposit(stub, user.id, 10, new_request_id())

    got = await failure(call(stub, "DeleteUser", user.id))

    assert_error(got, FAILED_PRECONDITION, "BALANCE_NOT_ZERO")
    assert (await get(stub, user.id)).state == ACTIVE


async def test_undelete_restores_the_user_everywhere(stub):
    user = await create_user(stub)
    post = await create_post(stub, user.id)
    await call(stub, "DeleteUser", user.id)

    restored = await call(stub, "UndeleteUser", user.id)

    assert restored is not None
    assert restored.state == ACTIVE
    assert not restored.HasField("delete_time")
    assert not restored.HasField("purge_time")
    assert (await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))).id == user.id
    full = await stub.GetUser(
        user_service_pb2.GetUserRequest(id=user.id, view=resources_pb2.USER_VIEW_FULL)
    )
    assert [p.id for p in full.posts] == [post.id]
    looked_up = await stub.LookupUser(user_service_pb2.LookupUserRequest(username=user.username))
    assert looked_up.id == user.id


async def test_undelete_after_the_retention_period_is_refused(database_url):
    async with running_service(database_url, deleted_retention_days=0) as service:
        user = await create_user(service.stub)
        await call(service.stub, "DeleteUser", user.id)
        deleted = await get(service.stub, user.id)
        assert deleted.purge_time == deleted.delete_time

        got = await failure(call(service.stub, "UndeleteUser", user.id))

        assert_error(got, FAILED_PRECONDITION, "RETENTION_EXPIRED")
        assert got.metadata["user_id"] == str(user.id)
        assert got.metadata["purge_time"]
        assert (await get(service.stub, user.id)).state == DELETED


async def _rows(service, model, **filters) -> int:
    with service.server.database.activate():
        return int(await model.filter(**filters).count())


async def test_purge_removes_expired_users_with_their_posts_and_keeps_the_ledger(service, stub):
    payer = await create_user(stub)
    await deposit(stub, payer.id, 100, new_request_id())
    gone = await create_user(stub, "Leaving", email="leaving@example.com")
    await transfer(stub, payer.id, gone.id, 40, new_request_id())
    await transfer(stub, gone.id, payer.id, 40, new_request_id())
    await create_post(stub, gone.id)
    await call(stub, "DeleteUser", gone.id)
    restored = await create_user(stub)
    await call(stub, "DeleteUser", restored.id)
    await call(stub, "UndeleteUser", restored.id)
    kept_post = await create_post(stub, payer.id)
    ledger_rows = await _rows(service, LedgerRow)

    with service.server.database.activate():
        # As if the 30 days had passed.
        purged = await purge_deleted_users(datetime.now(UTC) + timedelta(days=31))

    assert purged == 1
    assert await _rows(service, UserRow, id=gone.id) == 0
    assert await _rows(service, PostRow, user_id=gone.id) == 0
    assert await _rows(service, PostRow, id=kept_post.id) == 1
    assert await _rows(service, LedgerRow) == ledger_rows
    assert_error(await failure(get(stub, gone.id)), NOT_FOUND, "USER_NOT_FOUND")
    assert_error(await failure(call(stub, "UndeleteUser", gone.id)), NOT_FOUND, "USER_NOT_FOUND")
    assert (await get(stub, restored.id)).state == ACTIVE
    # The username and e-mail address are free again.
    again = await create_user(stub, "leaving", email="LEAVING@example.com")
    assert again.id != gone.id


async def test_purge_leaves_users_whose_purge_time_has_not_come(service, stub):
    user = await create_user(stub)
    await call(stub, "DeleteUser", user.id)

    with service.server.database.activate():
        purged = await purge_deleted_users()

    assert purged == 0
    assert (await get(stub, user.id)).state == DELETED


async def test_purge_command_removes_expired_users_and_says_how_many(database_url):
    async with running_service(database_url, deleted_retention_days=0) as service:
        users = [await create_user(service.stub) for _ in range(3)]
        for user in users[:2]:
            await call(service.stub, "DeleteUser", user.id)

        status, out, err = await run_cli(
            "purge", env=service_environment(USERS_DATABASE_URL=database_url)
        )

        assert status == 0, err
        assert "purged 2 deleted users" in out
        for user in users[:2]:
            assert_error(await failure(get(service.stub, user.id)), NOT_FOUND, "USER_NOT_FOUND")
        assert (await get(service.stub, users[2].id)).state == ACTIVE

        status, out, err = await run_cli(
            "purge", env=service_environment(USERS_DATABASE_URL=database_url)
        )
        assert status == 0, err
        assert "purged 0 deleted users" in out


async def test_an_undelete_that_waited_on_a_lock_survives_a_purge_started_meanwhile(
    database_url, backend
):
    if backend != "postgres":
        not_applicable("PostgreSQL only: SQLite has no row locks to hold an undelete on")
    retention = 1.0
    async with running_service(database_url, deleted_retention_days=retention / 86400) as service:
        user = await create_user(service.stub)
        await call(service.stub, "DeleteUser", user.id)
        holder = await asyncpg.connect(database_url)
        try:
            # Any transaction holding the row, as a transfer in flight does.
            locked = holder.transaction()
            await locked.start()
            await holder.execute("SELECT id FROM users WHERE id = $1 FOR UPDATE", user.id)
            undelete = asyncio.ensure_future(call(service.stub, "UndeleteUser", user.id))
            await asyncio.sleep(retention + 0.5)  # purge time passes while it waits
            with service.server.database.activate():
                purge = asyncio.ensure_future(purge_deleted_users())
            await asyncio.sleep(0.5)
            await locked.commit()
        finally:
            await holder.close()
        restored = await undelete
        assert await purge == 0
        assert restored is not None
        assert restored.state == ACTIVE
        assert (await get(service.stub, user.id)).state == ACTIVE
