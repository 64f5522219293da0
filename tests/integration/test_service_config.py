"""The client service config shipped with users-api: what it retries, and that gRPC obeys it."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import field_mask_pb2
from users.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc

from service.server import USER_SERVICE
from service.testing import running_service
from tests.ops_helpers import free_port

SERVICE = "users.v1.UserService"
# Named by the contract for the change feed; listed in the config ahead of
# their protos so that the watch stream never gets a default deadline.
FEED_METHODS = {"ListEvents", "WatchEvents"}
READ_PREFIXES = ("Get", "Lookup", "BatchGet", "List")


def shipped_config() -> dict[str, Any]:
    config = resources.files("users.v1") / "user_service_grpc_service_config.json"
    loaded: dict[str, Any] = json.loads(config.read_text(encoding="utf-8"))
    return loaded


def entries_by_method() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for entry in shipped_config()["methodConfig"]:
        for name in entry["name"]:
            assert name["service"] == SERVICE, name
            assert name["method"] not in entries, f"{name['method']} is named twice"
            entries[name["method"]] = entry
    return entries


def safe_to_retry(method: str) -> bool:
    """Reads (a login changes no account), and writes that carry an idempotency key."""
    descriptor = USER_SERVICE.methods_by_name[method]
    if method.startswith(READ_PREFIXES) or method == "AuthenticateUser":
        return True
    return "request_id" in descriptor.input_type.fields_by_name


def test_every_method_is_named_in_the_config_and_only_safe_ones_are_retried():
    entries = entries_by_method()
    methods = {m.name for m in USER_SERVICE.methods}
    assert methods <= entries.keys(), f"not in the service config: {methods - entries.keys()}"
    assert entries.keys() - methods <= FEED_METHODS, entries.keys() - methods
    retried = {m for m in methods if "retryPolicy" in entries[m]}
    assert retried == {m for m in methods if safe_to_retry(m)}
    assert {"CreateUser", "Deposit", "TransferFunds", "GetUser"} <= retried
    assert not {"UpdateUser", "BatchCreateUsers", "CreatePost", "DisableUser"} & retried
    for method in retried:
        policy = entries[method]["retryPolicy"]
        assert policy["retryableStatusCodes"] == ["UNAVAILABLE"], method
    for method in methods:
        streaming = USER_SERVICE.methods_by_name[method].server_streaming
        assert ("timeout" in entries[method]) != streaming, method
    assert "timeout" not in entries["WatchEvents"], "a watch must not end at a default deadline"
    assert shipped_config()["retryThrottling"]["maxTokens"] > 0


async def test_grpc_retries_an_unavailable_read_and_never_an_unkeyed_write(caplog):
    """The server answers UNAVAILABLE while its database is away: count the attempts it sees.

    Backend-independent: what is under test is the client's channel; the
    database is a PostgreSQL address where nothing listens.
    """
    caplog.set_level("INFO", logger="service.access")
    away = f"postgres://postgres@127.0.0.1:{free_port()}/users"
    async with running_service(away, database_wait=600) as service:
        options = [("grpc.service_config", json.dumps(shipped_config()))]
        async with grpc.aio.insecure_channel(service.address, options=options) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            update = user_service_pb2.UpdateUserRequest(
                user=resources_pb2.User(id=1, display_name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
            for call in (
                stub.GetUser(user_service_pb2.GetUserRequest(id=1)),
                stub.UpdateUser(update),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await call
                assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    attempts = [
        json.loads(r.getMessage())["method"].rsplit("/", 1)[1]
        for r in caplog.records
        if r.name == "service.access"
    ]
    assert attempts.count("GetUser") == 4, attempts  # maxAttempts
    assert attempts.count("UpdateUser") == 1, attempts
