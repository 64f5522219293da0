"""Access log, secrets in logs, and Prometheus metrics."""

from __future__ import annotations

import asyncio
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
from prometheus_client.parser import text_string_to_metric_families
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.db.models import UserRow
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


async def test_no_log_record_carries_a_password_a_stored_hash_or_a_page_token(service, caplog):
    caplog.set_level(logging.DEBUG)
    stub = service.stub
    passwords = ["first secret passphrase", "second secret passphrase", "wrong secret guess"]
    new_password = "a brand new passphrase"
    alice = await create_user(stub, "alice", password=passwords[0])
    await create_user(stub, "bob", password=passwords[1])
    await create_user(stub, "carol", password=passwords[1])
    await stub.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(username="alice", password=passwords[0])
    )
    await failure(
        stub.AuthenticateUser(
            user_service_pb2.AuthenticateUserRequest(username="alice", password=passwords[2])
        )
    )
    await failure(
        stub.AuthenticateUser(
            user_service_pb2.AuthenticateUserRequest(username="nobody", password=passwords[2])
        )
    )
    hashes_before = await stored_hashes(service)
    await stub.ChangePassword(
        user_service_pb2.ChangePasswordRequest(
            id=alice.id, current_password=passwords[0], new_password=new_password
        )
    )
    await failure(
        stub.ChangePassword(
            user_service_pb2.ChangePasswordRequest(
                id=alice.id, current_password=passwords[2], new_password=new_password + "!"
            )
        )
    )
    first = await stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=1))
    token = first.next_page_token
    assert token
    await stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=1, page_token=token))
    hashes = set(hashes_before) | set(await stored_hashes(service))
    assert len(hashes) == 4

    secrets = {*passwords, new_password, new_password + "!", token, *hashes}
    # The salted digest part of each hash alone must not appear either.
    secrets |= {h.rsplit("$", 1)[-1] for h in hashes}
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
