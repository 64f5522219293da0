"""Who may call what, over real mutual TLS with certificates from deploy/certs.py.

The server runs the example policy of deploy/authz-policy.json; every test
that touches the database runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from users.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc

from service.testing import running_service
from tests.authz_helpers import (
    ADMIN,
    FRONTEND,
    INTERN,
    SVC,
    TD,
    Pki,
    make_pki,
    secure_channel,
    write_policy,
)
from tests.helpers import PASSWORD, failure

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from service.testing import RunningService

USER_SERVICE = user_service_pb2.DESCRIPTOR.services_by_name["UserService"]
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
# What the frontend may call under the example policy; every other method is denied to it.
FRONTEND_MAY = {
    "CreateUser", "LookupUser", "AuthenticateUser", "ChangePassword", "CreatePost", "ListPosts",
    "GetUser", "BatchGetUsers",
}  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def authorized(database_url: str, pki: Pki, tmp_path: Path) -> AsyncIterator[RunningService]:
    policy = write_policy(tmp_path / "policy.json")
    async with running_service(database_url, **pki.tls_settings(authz_policy=str(policy))) as svc:
        yield svc


def stub(running: RunningService, pki: Pki, cert: tuple[bytes, bytes] | None, **kw: Any):
    channel = secure_channel(running.address, pki.credentials(cert))
    return channel, user_service_pb2_grpc.UserServiceStub(channel)


async def as_principal(running: RunningService, pki: Pki, stem: str) -> Any:
    _, users = stub(running, pki, pki.client(stem))
    return users


async def sign_up(users: Any, name: str) -> Any:
    return await users.CreateUser(
        user_service_pb2.CreateUserRequest(
            username=name, password=PASSWORD, email=f"{name}@example.com"
        )
    )


# -- allowed and denied -------------------------------------------------------


async def test_each_principal_gets_through_to_what_the_policy_allows_it(authorized, pki):
    admin = await as_principal(authorized, pki, "admin")
    frontend = await as_principal(authorized, pki, "frontend")
    billing = await as_principal(authorized, pki, "billing")
    created = await sign_up(frontend, "alice")
    assert (await admin.GetUser(user_service_pb2.GetUserRequest(id=created.id))).id == created.id
    deposited = await billing.Deposit(
        user_service_pb2.DepositRequest(user_id=created.id, amount=500, request_id="r1")
    )
    assert deposited.balance == 500
    # Allowed, so the handler ran and answered for itself.
    missing = await failure(frontend.GetUser(user_service_pb2.GetUserRequest(id=999_999)))
    assert missing.code == grpc.StatusCode.NOT_FOUND


async def test_a_principal_the_policy_does_not_allow_is_denied_with_method_and_principal(
    authorized, pki
):
    frontend = await as_principal(authorized, pki, "frontend")
    got = await failure(frontend.DeleteUser(user_service_pb2.DeleteUserRequest(id=1)))
    assert got.code == DENIED
    assert (got.domain, got.reason) == ("users.v1", "CALLER_NOT_ALLOWED")
    assert got.metadata == {"method": f"{SVC}/DeleteUser", "principal": FRONTEND}
    assert FRONTEND in got.message
    assert "DeleteUser" in got.message


async def test_a_deny_rule_beats_the_allow_rule_that_also_matches(authorized, pki):
    admin = await as_principal(authorized, pki, "admin")
    intern = await as_principal(authorized, pki, "intern")
    user = await sign_up(admin, "bob")
    assert (await intern.GetUser(user_service_pb2.GetUserRequest(id=user.id))).id == user.id
    got = await failure(intern.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id)))
    assert (got.code, got.reason) == (DENIED, "CALLER_NOT_ALLOWED")
    assert got.metadata["principal"] == INTERN


async def test_denied_writes_leave_the_database_untouched(authorized, pki):
    admin = await as_principal(authorized, pki, "admin")
    frontend = await as_principal(authorized, pki, "frontend")
    billing = await as_principal(authorized, pki, "billing")
    user = await sign_up(frontend, "carol")
    denied = [
        frontend.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id)),
        frontend.Deposit(
            user_service_pb2.DepositRequest(user_id=user.id, amount=7, request_id="d1")
        ),
        frontend.DisableUser(user_service_pb2.DisableUserRequest(id=user.id)),
        billing.CreateUser(
            user_service_pb2.CreateUserRequest(
                username="mallory", password=PASSWORD, email="mallory@example.com"
            )
        ),
        billing.UpdateUser(
            user_service_pb2.UpdateUserRequest(
                user=resources_pb2.User(id=user.id, display_name="pwned"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        ),
    ]
    for call in denied:
        assert (await failure(call)).code == DENIED
    after = await admin.GetUser(user_service_pb2.GetUserRequest(id=user.id))
    assert (after.state, after.balance, after.display_name, after.etag) == (
        user.state,
        user.balance,
        user.display_name,
        user.etag,
    )
    listed = await admin.ListUsers(user_service_pb2.ListUsersRequest())
    assert [u.username for u in listed.users] == ["carol"]


# -- every method of the service ------------------------------------------------


async def call_raw(channel: grpc.aio.Channel, method: Any) -> grpc.StatusCode:
    """Call ``method`` with an empty request whatever its kind; the status it ends with."""
    path = f"{SVC}/{method.name}"
    request = b""  # every field at its default: a valid empty message
    identity = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    try:
        if method.client_streaming:
            pytest.fail(f"{path}: client streaming is not used by this service")
        if method.server_streaming:
            call = channel.unary_stream(path, **identity)(request, timeout=10)
            async for _ in call:
                break
            call.cancel()
            return grpc.StatusCode.OK
        await channel.unary_unary(path, **identity)(request, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_every_method_of_the_service_is_denied_unless_a_rule_allows_it(authorized, pki):
    """A new method nobody wrote a rule for (streaming ones included) is denied."""
    names = {method.name for method in USER_SERVICE.methods}
    assert names >= FRONTEND_MAY
    channel = secure_channel(authorized.address, pki.credentials(pki.client("frontend")))
    billing = secure_channel(authorized.address, pki.credentials(pki.client("billing")))
    async with channel, billing:
        for method in USER_SERVICE.methods:
            code = await call_raw(channel, method)
            if method.name in FRONTEND_MAY:
                assert code != DENIED, method.name
            else:
                assert code == DENIED, method.name
        # Billing is allowed only money and reads: the rest is denied the same way.
        for method in USER_SERVICE.methods:
            allowed = method.name in {"Deposit", "TransferFunds", "ListTransfers", "GetUser",
                                      "BatchGetUsers"}  # fmt: skip
            code = await call_raw(billing, method)
            assert (code != DENIED) is allowed, method.name


# -- identities that are not principals ------------------------------------------


def leaf(pki: Pki, **names: Any) -> tuple[bytes, bytes]:
    cert, key = pki.ca.issue("client", **names)
    return cert, key


@pytest.mark.parametrize(
    "names",
    [
        pytest.param({}, id="only-as-cn"),
        pytest.param({"dns": [ADMIN.removeprefix("spiffe://").replace("/", ".")]}, id="dns-san"),
        pytest.param({"dns": ["users.example"]}, id="plain-dns-san"),
        pytest.param({"uris": [ADMIN, FRONTEND]}, id="two-uri-sans"),
        pytest.param({"uris": ["https://users.example/ns/ops/sa/admin"]}, id="not-spiffe"),
    ],
)
async def test_a_certificate_without_exactly_one_spiffe_uri_san_has_no_principal(
    sqlite_authorized, pki, names
):
    cert = pki.ca.issue(ADMIN, **names)  # the allowed name as the CN every time
    channel, users = stub(sqlite_authorized, pki, cert)
    async with channel:
        got = await failure(users.GetUser(user_service_pb2.GetUserRequest(id=1)))
    assert (got.code, got.reason) == (UNAUTHENTICATED, "CALLER_UNAUTHENTICATED")


@pytest.fixture
async def sqlite_authorized(pki: Pki, tmp_path: Path) -> AsyncIterator[RunningService]:
    """Identity checks never reach the database: one backend is enough."""
    policy = write_policy(tmp_path / "policy.json")
    settings = pki.tls_settings(authz_policy=str(policy))
    async with running_service(f"sqlite://{tmp_path / 'u.sqlite3'}", **settings) as running:
        yield running


async def test_a_certificate_from_an_untrusted_ca_or_none_at_all_cannot_call(
    sqlite_authorized, pki
):
    stranger = pki.stranger_ca.issue("admin", uris=[ADMIN])
    for cert in (stranger, None):
        channel, users = stub(sqlite_authorized, pki, cert)
        async with channel:
            got = await failure(users.GetUser(user_service_pb2.GetUserRequest(id=1), timeout=10))
        assert got.code == grpc.StatusCode.UNAVAILABLE  # refused in the TLS handshake


async def test_identity_looking_metadata_from_the_client_is_ignored(sqlite_authorized, pki):
    spoof = (
        ("x-spiffe-id", ADMIN),
        ("x-forwarded-client-cert", f"URI={ADMIN}"),
        ("principal", ADMIN),
        ("authorization", "Bearer not-checked-without-jwks"),
    )
    no_principal = pki.ca.issue("nobody")
    channel, users = stub(sqlite_authorized, pki, no_principal)
    async with channel:
        got = await failure(users.GetUser(user_service_pb2.GetUserRequest(id=1), metadata=spoof))
    assert got.reason == "CALLER_UNAUTHENTICATED"
    channel, users = stub(sqlite_authorized, pki, pki.client("frontend"))
    async with channel:
        request = user_service_pb2.DeleteUserRequest(id=1)
        got = await failure(users.DeleteUser(request, metadata=spoof))
    assert (got.code, got.metadata["principal"]) == (DENIED, FRONTEND)


async def test_a_prefix_rule_does_not_match_a_longer_sibling_or_the_bare_prefix(
    sqlite_authorized, pki
):
    for principal in (
        f"{TD}/ns/opsx/sa/admin",
        f"{TD}/ns/ops",
        "spiffe://other.example/ns/ops/sa/admin",
    ):
        channel, users = stub(sqlite_authorized, pki, pki.ca.issue("x", uris=[principal]))
        async with channel:
            got = await failure(users.DeleteUser(user_service_pb2.DeleteUserRequest(id=1)))
        assert (got.code, got.metadata.get("principal")) == (DENIED, principal)


# -- health and reflection -------------------------------------------------------


async def test_health_stays_open_to_a_caller_without_a_principal(sqlite_authorized, pki):
    channel = secure_channel(sqlite_authorized.address, pki.credentials(pki.ca.issue("probe")))
    async with channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def list_services(channel: grpc.aio.Channel) -> list[str]:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    call = reflection.ServerReflectionInfo(iter([request]), timeout=10)
    async for response in call:
        return [s.name for s in response.list_services_response.service]
    return []


async def test_reflection_follows_the_policy(sqlite_authorized, pki):
    for stem, allowed in (("admin", True), ("frontend", False)):
        channel = secure_channel(sqlite_authorized.address, pki.credentials(pki.client(stem)))
        async with channel:
            if allowed:
                assert "users.v1.UserService" in await list_services(channel)
            else:
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await list_services(channel)
                assert denied.value.code() == DENIED


async def test_the_access_log_names_the_caller(sqlite_authorized, pki, caplog):
    import json
    import logging

    caplog.set_level(logging.INFO, logger="service.access")
    channel, users = stub(sqlite_authorized, pki, pki.client("frontend"))
    async with channel:
        await failure(users.GetUser(user_service_pb2.GetUserRequest(id=5)))
        await failure(users.DeleteUser(user_service_pb2.DeleteUserRequest(id=5)))
    from tests.ops_helpers import eventually

    def entries() -> list[dict[str, Any]]:
        return [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"]

    async def two() -> bool:
        return len(entries()) >= 2

    await eventually(two, within=10, interval=0.05, what="two access-log lines")
    assert [(e["method"], e["code"], e["caller"]) for e in entries()] == [
        (f"{SVC}/GetUser", "NOT_FOUND", FRONTEND),
        (f"{SVC}/DeleteUser", "PERMISSION_DENIED", FRONTEND),
    ]


# -- the README's grpcurl examples ------------------------------------------------


async def run_grpcurl(running: RunningService, pki: Pki, stem: str, *args: str) -> tuple[int, str]:
    from tests.integration.test_grpcurl import grpcurl_path

    directory = pki.directory
    command = [
        grpcurl_path(), "-cacert", str(pki.ca_file),
        "-cert", str(directory / f"{stem}.pem"), "-key", str(directory / f"{stem}-key.pem"),
        *args[:-1], f"localhost:{running.server.port}", args[-1],
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_grpcurl_with_a_client_certificate_lists_and_calls_as_the_policy_says(
    sqlite_authorized, pki
):
    status, output = await run_grpcurl(sqlite_authorized, pki, "admin", "list")
    assert status == 0, output
    assert "users.v1.UserService" in output.split()
    status, output = await run_grpcurl(sqlite_authorized, pki, "frontend", "list")
    assert status != 0
    assert "PermissionDenied" in output or "permission denied" in output.lower(), output
    delete = ("-d", '{"id": 1}', "users.v1.UserService/DeleteUser")
    status, output = await run_grpcurl(sqlite_authorized, pki, "frontend", *delete)
    assert status != 0
    assert "PermissionDenied" in output, output
    assert FRONTEND in output, output
    status, output = await run_grpcurl(sqlite_authorized, pki, "admin", *delete)
    assert "NotFound" in output, output  # allowed: the handler answered
