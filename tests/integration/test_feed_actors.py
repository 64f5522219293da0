"""The actor of an event is the verified principal of the call that made the change.

End to end: a server under the example policy over real mutual TLS, callers
with SPIFFE certificates, and the feed read back by an operator. On SQLite and
PostgreSQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from users.v1 import events_pb2, user_service_pb2, user_service_pb2_grpc

from service.testing import running_service
from tests.authz_helpers import ADMIN, BILLING, FRONTEND, make_pki, secure_channel, write_policy
from tests.helpers import PASSWORD, failure
from tests.integration.test_feed_outbox import all_events

if TYPE_CHECKING:
    from pathlib import Path

E = events_pb2


async def test_each_event_names_the_principal_whose_call_wrote_it(database_url, tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    policy = write_policy(tmp_path / "policy.json")
    settings = pki.tls_settings(authz_policy=str(policy))
    async with running_service(database_url, **settings) as running:

        def as_principal(stem: str) -> Any:
            channel = secure_channel(running.address, pki.credentials(pki.client(stem)))
            return user_service_pb2_grpc.UserServiceStub(channel)

        frontend, billing, admin = (
            as_principal("frontend"),
            as_principal("billing"),
            as_principal("admin"),
        )
        alice = await frontend.CreateUser(
            user_service_pb2.CreateUserRequest(
                username="alice", password=PASSWORD, email="alice@example.com"
            )
        )
        await billing.Deposit(
            user_service_pb2.DepositRequest(user_id=alice.id, amount=250, request_id="d-1")
        )
        await admin.LockUser(user_service_pb2.LockUserRequest(id=alice.id))
        # A denied write appends nothing, under anyone's name.
        await failure(frontend.DeleteUser(user_service_pb2.DeleteUserRequest(id=alice.id)))

        events = await all_events(admin)
        assert [(e.type, e.actor) for e in events] == [
            (E.USER_CREATED, FRONTEND),
            (E.DEPOSIT_MADE, BILLING),
            (E.USER_LOCKED, ADMIN),
        ]
        watch = admin.WatchEvents(E.WatchEventsRequest(after_sequence=0))
        streamed = [await watch.read() for _ in events]
        watch.cancel()
        assert [(e.sequence, e.actor) for e in streamed] == [(e.sequence, e.actor) for e in events]
