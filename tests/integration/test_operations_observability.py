"""Access log, secrets in logs, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sqlite3
import urllib.request
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import grpc.aio
import pytest
from google.protobuf import field_mask_pb2
from prometheus_client.parser import text_string_to_metric_families
from users.v1 import events_pb2, resources_pb2, user_service_pb2, user_service_pb2_grpc

from service.db.models import UserRow
from service.domain.passwords import default_context
from service.testing import running_service
from tests.helpers import create_user, failure
from tests.ops_helpers import (
    eventually,
    free_port,
    lock_waiters,
    require_postgres,
    service_process,
    stub_of,
)

if TYPE_CHECKING:
    from pathlib import Path

    from service.testing import RunningService

ACCESS_LOGGER = "service.access"
SERVICE = "users.v1.UserService"
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def access_entries(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    entries = []
    for record in caplog.records:
        if record.name != ACCESS_LOGGER:
            continue
        message = record.getMessage()
        assert "\n" not in message, "one line per call"
        entries.append(json.loads(message))
    return entries


async def logged_calls(caplog: pytest.LogCaptureFixture, count: int) -> list[dict[str, Any]]:
    """The access log once it has ``count`` entries (no more).

    A failed call's line is written just after the client has its status, so wait for it.
    """

    async def complete() -> bool:
        return len(access_entries(caplog)) >= count

    await eventually(complete, within=10, interval=0.02, what=f"{count} access-log lines")
    await asyncio.sleep(0.2)  # room for a wrong extra line to show up
    return access_entries(caplog)


# -- access log ---------------------------------------------------------------


async def test_the_access_log_has_one_json_line_per_call_with_method_code_duration_peer_pid(
    service, caplog
):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    stub = service.stub
    created = await create_user(stub)
    await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=created.id + 1000)))
    await stub.GetUser(user_service_pb2.GetUserRequest(id=created.id))
    await failure(stub.CreateUser(user_service_pb2.CreateUserRequest(username="x")))

    entries = await logged_calls(caplog, 4)
    assert [(e["method"], e["code"]) for e in entries] == [
        (f"/{SERVICE}/CreateUser", "OK"),
        (f"/{SERVICE}/GetUser", "NOT_FOUND"),
        (f"/{SERVICE}/GetUser", "OK"),
        (f"/{SERVICE}/CreateUser", "INVALID_ARGUMENT"),
    ]
    for entry in entries:
        assert isinstance(entry["duration_ms"], int | float)
        assert 0 <= entry["duration_ms"] < 60_000
        assert entry["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:[::1]:")), entry
        assert entry["pid"] == os.getpid()
    # Creating a user hashes a password: it takes measurably longer than a lookup.
    assert entries[0]["duration_ms"] > 1


async def test_a_call_rejected_by_validation_is_logged_once_with_its_code(service, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    # A page token that does not verify: rejected with a status, logged once.
    await failure(service.stub.ListUsers(user_service_pb2.ListUsersRequest(page_token="forged")))
    (entry,) = await logged_calls(caplog, 1)
    assert entry["method"] == f"/{SERVICE}/ListUsers"
    assert entry["code"] == "INVALID_ARGUMENT"


async def test_turning_the_access_log_off_logs_no_calls(database_url, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with running_service(database_url, access_log=False) as running:
        await failure(stub_of(running).GetUser(user_service_pb2.GetUserRequest(id=5)))
        await asyncio.sleep(0.3)
    assert access_entries(caplog) == []


# -- secrets ------------------------------------------------------------------


async def stored_hashes(service: RunningService) -> list[str]:
    with service.server.database.activate():
        hashes = await UserRow.all().values_list("password_hash", flat=True)
    return [str(h) for h in hashes]


def key_spellings(key: bytes) -> set[str]:
    """The ways a signing key could show up in a log line."""
    return {
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
        key.hex(),
        repr(key)[2:-1],
    }


def hash_parts(stored: str) -> set[str]:
    """A stored hash, and its salt and digest alone ($argon2id$v=19$m=...$salt$digest)."""
    return {stored, *(part for part in stored.split("$")[-2:] if len(part) >= 16)}


async def test_no_log_record_of_any_rpc_carries_a_password_a_hash_or_a_signing_key(
    database_url, caplog
):
    """Every RPC, succeeding and failing (throttled included), at DEBUG on every logger.

    No record may carry a password (right, wrong, new or refused), a stored
    hash or its salt or digest, the page-token signing key, or a page token.
    The test fails when the service gains an RPC it does not call, so that the
    new one is added here.
    """
    caplog.set_level(logging.DEBUG)
    U = user_service_pb2
    async with running_service(
        database_url, auth_max_failures=2, auth_lockout_base=60, auth_lockout_max=60
    ) as running:
        stub = stub_of(running)
        passwords = ["first secret passphrase", "second secret passphrase"]
        wrong, new_password = "wrong secret guess", "a brand new passphrase"
        refused = ["tiny-pw", "x" * 300 + "-refused-secret"]
        calls: list[str] = []

        async def ok(name: str, request: Any) -> Any:
            calls.append(name)
            return await getattr(stub, name)(request)

        async def fails(name: str, request: Any) -> grpc.StatusCode:
            calls.append(name)
            return (await failure(getattr(stub, name)(request))).code

        alice = await ok(
            "CreateUser", U.CreateUserRequest(
                username="alice", password=passwords[0], email="alice@example.com"
            ),
        )  # fmt: skip
        bob = await ok(
            "CreateUser",
            U.CreateUserRequest(username="bob", password=passwords[1], email="bob@example.com"),
        )
        for password in refused:
            request = U.CreateUserRequest(username="carol", password=password, email="c@e.com")
            assert await fails("CreateUser", request) == grpc.StatusCode.INVALID_ARGUMENT
        taken = U.CreateUserRequest(username="ALICE", password=wrong, email="a2@example.com")
        assert await fails("CreateUser", taken) == grpc.StatusCode.ALREADY_EXISTS

        await ok("GetUser", U.GetUserRequest(id=alice.id, view=resources_pb2.USER_VIEW_FULL))
        assert await fails("GetUser", U.GetUserRequest(id=alice.id + 1000)) == NOT_FOUND
        await ok("LookupUser", U.LookupUserRequest(username="Alice"))
        await ok("LookupUser", U.LookupUserRequest(email="bob@example.com"))
        assert await fails("LookupUser", U.LookupUserRequest(username="nobody")) == NOT_FOUND
        await ok("BatchGetUsers", U.BatchGetUsersRequest(ids=[alice.id, bob.id]))
        assert await fails("BatchGetUsers", U.BatchGetUsersRequest(ids=[999_999])) == NOT_FOUND

        first = await ok("ListUsers", U.ListUsersRequest(page_size=1))
        tokens = [first.next_page_token]
        await ok("ListUsers", U.ListUsersRequest(page_size=1, page_token=tokens[0]))
        forged = tokens[0][:-2] + ("AA" if not tokens[0].endswith("AA") else "BB")
        bad_list = U.ListUsersRequest(page_size=1, page_token=forged)
        assert await fails("ListUsers", bad_list) == INVALID_ARGUMENT

        mask = field_mask_pb2.FieldMask(paths=["display_name"])
        user = resources_pb2.User(id=alice.id, display_name="Alice A.")
        await ok("UpdateUser", U.UpdateUserRequest(user=user, update_mask=mask))
        steal = U.UpdateUserRequest(
            user=resources_pb2.User(id=bob.id, username="alice"),
            update_mask=field_mask_pb2.FieldMask(paths=["username"]),
        )
        assert await fails("UpdateUser", steal) == grpc.StatusCode.ALREADY_EXISTS
        bad_mask = U.UpdateUserRequest(
            user=user, update_mask=field_mask_pb2.FieldMask(paths=["password_hash"])
        )
        assert await fails("UpdateUser", bad_mask) == INVALID_ARGUMENT

        login = U.AuthenticateUserRequest
        await ok("AuthenticateUser", login(username="alice", password=passwords[0]))
        await ok("AuthenticateUser", login(username="bob@example.com", password=passwords[1]))
        assert await fails("AuthenticateUser", login(username="nobody", password=wrong)) == UNAUTH
        codes = [
            await fails("AuthenticateUser", login(username="alice", password=wrong))
            for _ in range(3)
        ]
        assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED, codes
        # Throttled: even the right password is refused now.
        throttled = login(username="alice", password=passwords[0])
        assert await fails("AuthenticateUser", throttled) == grpc.StatusCode.RESOURCE_EXHAUSTED

        change = U.ChangePasswordRequest
        await ok("ChangePassword", change(
            id=bob.id, current_password=passwords[1], new_password=new_password
        ))  # fmt: skip
        bad_new = change(id=bob.id, current_password=new_password, new_password=refused[0])
        assert await fails("ChangePassword", bad_new) == INVALID_ARGUMENT
        guesses = [
            await fails(
                "ChangePassword",
                change(id=bob.id, current_password=wrong, new_password=new_password + "!"),
            )
            for _ in range(3)
        ]
        assert guesses[0] == grpc.StatusCode.UNAUTHENTICATED, guesses
        assert guesses[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED, guesses

        for i in range(3):
            await ok("CreatePost", U.CreatePostRequest(user_id=alice.id, title=f"t{i}", body="b"))
        no_author = U.CreatePostRequest(user_id=999_999, title="t", body="b")
        assert await fails("CreatePost", no_author) == NOT_FOUND
        posts = await ok("ListPosts", U.ListPostsRequest(user_id=alice.id, page_size=1))
        tokens.append(posts.next_page_token)
        await ok("ListPosts", U.ListPostsRequest(user_id=alice.id, page_token=tokens[-1]))
        bad_posts = U.ListPostsRequest(user_id=alice.id, page_token=tokens[0])
        assert await fails("ListPosts", bad_posts) == INVALID_ARGUMENT

        await ok("Deposit", U.DepositRequest(user_id=alice.id, amount=100))
        assert await fails("Deposit", U.DepositRequest(user_id=alice.id, amount=-5)) == (
            INVALID_ARGUMENT
        )
        send = U.TransferFundsRequest
        for i in range(2):
            await ok("TransferFunds", send(
                from_user_id=alice.id, to_user_id=bob.id, amount=10, request_id=f"r{i}"
            ))  # fmt: skip
        too_much = send(from_user_id=bob.id, to_user_id=alice.id, amount=10**9)
        assert await fails("TransferFunds", too_much) == grpc.StatusCode.FAILED_PRECONDITION
        moves = await ok("ListTransfers", U.ListTransfersRequest(user_id=alice.id, page_size=1))
        tokens.append(moves.next_page_token)
        await ok("ListTransfers", U.ListTransfersRequest(user_id=alice.id, page_token=tokens[-1]))
        bad_moves = U.ListTransfersRequest(user_id=alice.id, page_token=forged)
        assert await fails("ListTransfers", bad_moves) == INVALID_ARGUMENT

        rich = await ok("CreateUser", U.CreateUserRequest(
            username="dave", password=passwords[0], email="dave@example.com"
        ))  # fmt: skip
        await ok("DeleteUser", U.DeleteUserRequest(id=rich.id))
        assert await fails("DeleteUser", U.DeleteUserRequest(id=rich.id)) == NOT_FOUND
        with_money = U.DeleteUserRequest(id=alice.id)
        assert await fails("DeleteUser", with_money) == grpc.StatusCode.FAILED_PRECONDITION
        await ok("UndeleteUser", U.UndeleteUserRequest(id=rich.id))
        not_deleted = U.UndeleteUserRequest(id=rich.id)
        assert await fails("UndeleteUser", not_deleted) == grpc.StatusCode.FAILED_PRECONDITION

        # Lifecycle: each transition, a refused one, and a stale etag.
        stale = (await ok("GetUser", U.GetUserRequest(id=rich.id))).etag
        await ok("DisableUser", U.DisableUserRequest(id=rich.id))
        assert await fails("DisableUser", U.DisableUserRequest(id=rich.id)) == PRECONDITION
        disabled_login = login(username="dave", password=passwords[0])
        assert await fails("AuthenticateUser", disabled_login) == UNAUTH
        await ok("EnableUser", U.EnableUserRequest(id=rich.id))
        assert await fails("EnableUser", U.EnableUserRequest(id=rich.id)) == PRECONDITION
        await ok("LockUser", U.LockUserRequest(id=rich.id))
        assert await fails("UnlockUser", U.UnlockUserRequest(id=rich.id, etag=stale)) == (
            grpc.StatusCode.ABORTED
        )
        await ok("UnlockUser", U.UnlockUserRequest(id=rich.id))
        assert await fails("LockUser", U.LockUserRequest(id=999_999)) == NOT_FOUND

        # Idempotent and dry-run sign-ups carry the password too.
        again = U.CreateUserRequest(
            username="erin", password=passwords[1], email="erin@example.com", request_id="req-1"
        )
        await ok("CreateUser", again)
        await ok("CreateUser", again)
        dry = U.CreateUserRequest(
            username="fred", password=passwords[1], email="fred@example.com", validate_only=True
        )
        await ok("CreateUser", dry)

        # Imported hashes are secrets as well, valid or not.
        imported_password = "imported secret phrase"
        imported = default_context().hash(imported_password)
        # Refused: a real-looking bcrypt hash too costly to verify.
        broken = "$2b$31$" + "q" * 21 + "e" + "q" * 31
        batch = [
            U.CreateUserRequest(username="gail", password=passwords[0], email="gail@example.com"),
            U.CreateUserRequest(username="hank", password_hash=imported, email="hank@example.com"),
        ]
        await ok("BatchCreateUsers", U.BatchCreateUsersRequest(requests=batch))
        bad_batch = [U.CreateUserRequest(username="ivan", password_hash=broken, email="i@e.com")]
        assert await fails("BatchCreateUsers", U.BatchCreateUsersRequest(requests=bad_batch)) == (
            INVALID_ARGUMENT
        )
        await ok("AuthenticateUser", login(username="hank", password=imported_password))

        # The change feed carries users too (never a password or hash).
        await ok("ListEvents", events_pb2.ListEventsRequest(page_size=1000))
        bad_events = events_pb2.ListEventsRequest(after_sequence=-1)
        assert await fails("ListEvents", bad_events) == INVALID_ARGUMENT
        # A stream is logged like a call, once it ends (here: cancelled by the client).
        watch = stub.WatchEvents(events_pb2.WatchEventsRequest())
        first_event = await watch.read()
        assert isinstance(first_event, events_pb2.Event)
        assert first_event.type == events_pb2.USER_CREATED
        watch.cancel()
        calls.append("WatchEvents")

        entries = await logged_calls(caplog, len(calls))
        signing_key = await running.server.database.secret("page_token_key")
        hashes = set(await stored_hashes(running))

    every_rpc = set(user_service_pb2.DESCRIPTOR.services_by_name["UserService"].methods_by_name)
    called = set(calls)
    assert called == every_rpc, f"call these RPCs here too: {sorted(every_rpc - called)}"
    assert [e["method"].rsplit("/", 1)[-1] for e in entries] == calls
    assert all(tokens)
    assert hashes

    secrets = {*passwords, wrong, new_password, new_password + "!", *refused, *tokens}
    secrets |= {imported_password, broken} | hash_parts(imported)
    secrets |= key_spellings(signing_key)
    for stored in hashes:
        secrets |= hash_parts(stored)
    assert caplog.records, "DEBUG logging of the service was captured"
    for record in caplog.records:
        texts = [record.getMessage(), repr(record.args), record.exc_text or ""]
        for text in texts:
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{record.name} logged a secret: {text[:300]}"
    assert not [s for s in secrets if s in caplog.text]


async def test_the_service_run_at_debug_level_writes_no_stored_hash_to_stderr(tmp_path):
    database = tmp_path / "debug.sqlite3"
    address = f"127.0.0.1:{free_port()}"
    async with service_process(
        "--database-url", f"sqlite://{database}", "--log-level", "DEBUG",
        listen=address, cwd=tmp_path,
    ) as running:  # fmt: skip
        await running.wait_serving()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            await create_user(stub, "dave", password="dave's long secret")
        running.signal(signal.SIGTERM)
        assert await running.wait_exit() == 0
    hashes = await sqlite_hashes(database)
    assert hashes
    for stored in hashes:
        assert stored not in running.stderr
    assert "dave's long secret" not in running.stderr


async def sqlite_hashes(database: Path) -> list[str]:
    """The password hashes stored in a SQLite database file."""

    def read() -> list[str]:
        with contextlib.closing(sqlite3.connect(database)) as connection:
            return [row[0] for row in connection.execute("SELECT password_hash FROM users")]

    return await asyncio.to_thread(read)


# -- metrics ------------------------------------------------------------------


async def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples of http://127.0.0.1:PORT/metrics by sample name."""

    def fetch() -> str:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
            return body.decode()

    text = await asyncio.to_thread(fetch)
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


async def scrape_when(
    port: int, name: str, expected: float, **labels: str
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Scrape until the sample ``name`` with ``labels`` reaches ``expected``.

    A failed call is counted just after the client has its status.
    """
    samples = await scrape(port)
    for _ in range(100):
        if value(samples, name, **labels) == expected:
            return samples
        await asyncio.sleep(0.05)
        samples = await scrape(port)
    pytest.fail(f"{name}{labels} is {value(samples, name, **labels)}, not {expected}")


def value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float | None:
    """The value of the one sample of ``name`` whose labels include ``labels``."""
    found = [v for got, v in samples.get(name, []) if labels.items() <= got.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


async def test_metrics_count_calls_by_method_and_code_and_time_them(database_url):
    async with running_service(database_url, metrics_listen="127.0.0.1:0") as running:
        port = running.server.metrics_port
        assert port
        stub = stub_of(running)
        user = await create_user(stub)
        for missing in (10_001, 10_002, 10_003):
            await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=missing)))
        await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
        samples = await scrape_when(
            port, "grpc_server_handling_seconds_count", 4, grpc_method="GetUser"
        )

    labels = {"grpc_service": SERVICE, "grpc_method": "GetUser"}
    handled = "grpc_server_handled_total"
    assert value(samples, handled, **labels, grpc_code="NOT_FOUND") == 3
    assert value(samples, handled, **labels, grpc_code="OK") == 1
    assert value(samples, handled, grpc_method="CreateUser", grpc_code="OK") == 1
    assert value(samples, "grpc_server_started_total", **labels) == 4
    assert value(samples, "grpc_server_handling_seconds_count", **labels) == 4
    assert value(samples, "grpc_server_handling_seconds_bucket", **labels, le="+Inf") == 4
    fast = value(samples, "grpc_server_handling_seconds_bucket", **labels, le="10.0")
    assert fast == 4
    total = value(samples, "grpc_server_handling_seconds_sum", **labels)
    assert total is not None
    assert 0 < total < 40
    assert value(samples, "grpc_server_in_flight_calls") == 0
    assert value(samples, "users_database_up") == 1


async def test_the_metrics_endpoint_reports_pool_connections_on_postgres_only(database_url):
    async with running_service(
        database_url, metrics_listen="127.0.0.1:0", db_pool_size=3
    ) as running:
        await create_user(stub_of(running))
        assert running.server.metrics_port
        samples = await scrape(running.server.metrics_port)
    pool = "users_db_pool_connections"
    if not database_url.startswith("postgres"):
        assert pool not in samples, "SQLite has no pool to report"
        return
    assert value(samples, pool, state="max") == 3
    in_use = value(samples, pool, state="in_use")
    idle = value(samples, pool, state="idle")
    assert in_use is not None
    assert idle is not None
    assert 0 <= in_use <= 3
    assert 1 <= in_use + idle <= 3


async def test_a_call_blocked_in_the_database_shows_as_in_flight_and_in_use(database_url):
    require_postgres(database_url)
    async with running_service(database_url, metrics_listen="127.0.0.1:0") as running:
        stub, port = stub_of(running), running.server.metrics_port
        assert port
        payer, payee = await create_user(stub), await create_user(stub)
        await stub.Deposit(user_service_pb2.DepositRequest(user_id=payer.id, amount=100))
        locker = await asyncpg.connect(database_url)
        try:
            async with locker.transaction():
                await locker.execute("SELECT id FROM users WHERE id = $1 FOR UPDATE", payer.id)
                call = asyncio.ensure_future(
                    stub.TransferFunds(
                        user_service_pb2.TransferFundsRequest(
                            from_user_id=payer.id, to_user_id=payee.id, amount=10
                        ),
                        timeout=30,
                    )
                )

                async def blocked() -> bool:
                    return await lock_waiters(locker) == 1

                await eventually(blocked, within=10, what="the transfer waits on the row lock")
                samples = await scrape(port)
                assert value(samples, "grpc_server_in_flight_calls") == 1
                assert (value(samples, "users_db_pool_connections", state="in_use") or 0) >= 1
        finally:
            await locker.close()
        await call
        samples = await scrape_when(
            port, "grpc_server_handled_total", 1, grpc_method="TransferFunds", grpc_code="OK"
        )
        assert value(samples, "grpc_server_in_flight_calls") == 0


async def test_metrics_are_off_unless_asked_for(database_url):
    async with running_service(database_url) as running:
        assert running.server.metrics_port is None


async def test_a_failed_call_is_counted_under_its_status_code(database_url):
    async with running_service(database_url, metrics_listen="127.0.0.1:0") as running:
        got = await failure(stub_of(running).CreateUser(user_service_pb2.CreateUserRequest()))
        assert got.code == grpc.StatusCode.INVALID_ARGUMENT
        assert running.server.metrics_port
        samples = await scrape_when(
            running.server.metrics_port,
            "grpc_server_handled_total",
            1,
            grpc_method="CreateUser",
            grpc_code="INVALID_ARGUMENT",
        )
    assert value(samples, "grpc_server_handled_total", grpc_method="CreateUser") == 1
    assert value(samples, "grpc_server_in_flight_calls") == 0
