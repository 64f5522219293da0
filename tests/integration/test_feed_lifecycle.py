"""The feed around upkeep: a login's re-hash, purge (USER_PURGED, pruning), and the actor."""

from __future__ import annotations

from passlib.context import CryptContext
from users.v1 import events_pb2, user_service_pb2

from service.db import users as users_db
from service.db.models import UserRow
from service.domain.actor import Actor, acting_as
from service.testing import running_service
from tests.helpers import create_user, insert_rows
from tests.integration.test_feed_outbox import all_events, head
from tests.ops_helpers import run_cli, service_environment

E = events_pb2


async def test_a_login_that_rehashes_the_password_appends_no_event(service):
    stub = service.stub
    legacy = CryptContext(schemes=["bcrypt"]).hash("legacy-password")
    await insert_rows(service, ["oldtimer"], password_hash=legacy)
    start = await head(stub)

    await stub.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(username="oldtimer", password="legacy-password")
    )

    with service.server.database.activate():
        stored = (await UserRow.get(username="oldtimer")).password_hash
    assert stored.startswith("$argon2id$")  # it was re-hashed
    assert await all_events(stub, start) == []


async def test_purge_appends_user_purged_without_a_snapshot_and_prunes_old_events(database_url):
    env = service_environment(USERS_DATABASE_URL=database_url)
    async with running_service(database_url, deleted_retention_days=0) as running:
        stub = running.stub
        kept, gone = await create_user(stub), await create_user(stub)
        await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=gone.id))
        before = await all_events(stub)

        status, out, err = await run_cli("purge", env=env)
        assert status == 0, err
        assert "purged 1 deleted users" in out
        assert "pruned 0 events" in out

        (purged,) = await all_events(stub, before[-1].sequence)
        assert purged.type == E.USER_PURGED
        assert purged.user_id == gone.id
        assert purged.WhichOneof("resource") is None
        assert purged.actor == ""

        # With no retention left, everything but the newest event goes.
        status, out, _ = await run_cli("purge", "--events-retention-days", "0.000001", env=env)
        assert status == 0
        assert f"pruned {len(before)} events" in out
        assert [e.sequence for e in await all_events(stub)] == [purged.sequence]
        assert kept.id


async def test_events_carry_the_actor_of_the_call(service):
    stub = service.stub
    user = await create_user(stub)
    start = await head(stub)
    # What the call wrapper does once authorization names the caller.
    with service.server.database.activate(), acting_as(Actor("spiffe://example.org/billing")):
        await users_db.update_user(user.id, {"display_name": "Billed"})
    (event,) = await all_events(stub, start)
    assert event.actor == "spiffe://example.org/billing"
    assert event.user.display_name == "Billed"
