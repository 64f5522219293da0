"""Operators' view: the real grpcurl binary, driven through server reflection.

The server runs in this test's event loop, so grpcurl runs as an asyncio
subprocess; a blocking subprocess.run would stop the server from answering.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from users.v1 import user_service_pb2

from tests.helpers import create_user


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def grpcurl_path() -> str:
    beside_python = Path(sys.executable).parent / "grpcurl"
    found = str(beside_python) if beside_python.exists() else shutil.which("grpcurl")
    assert found, "grpcurl is not installed (pip install -e '.[dev]' brings it)"
    return found


@pytest.fixture
def grpcurl(service):
    """Run grpcurl against the test server: grpcurl(*args, data=None) -> Result.

    Arguments starting with "-" are options and go before the address.
    """
    executable = grpcurl_path()

    async def run(*args: str, data: dict[str, object] | None = None) -> Result:
        options = [a for a in args if a.startswith("-")]
        command = [executable, "-plaintext", *options]
        if data is not None:
            command += ["-d", json.dumps(data)]
        command += [service.address, *(a for a in args if not a.startswith("-"))]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return Result(process.returncode, stdout.decode(), stderr.decode())

    return run


async def test_list_shows_the_user_service_and_health(grpcurl):
    result = await grpcurl("list")
    assert result.status == 0, result
    services = result.stdout.split()
    assert "users.v1.UserService" in services
    assert "grpc.health.v1.Health" in services


async def test_describe_shows_the_rpcs_of_the_user_service(grpcurl):
    result = await grpcurl("describe", "users.v1.UserService")
    assert result.status == 0, result
    assert "users.v1.UserService is a service" in result.stdout
    for rpc in ("CreateUser", "GetUser", "ListUsers", "AuthenticateUser", "ChangePassword"):
        assert f"rpc {rpc} (" in result.stdout, rpc


async def test_describe_of_user_shows_no_password_field(grpcurl):
    result = await grpcurl("describe", "users.v1.User")
    assert result.status == 0, result
    assert "username" in result.stdout
    assert "password" not in result.stdout.lower()
    assert "hash" not in result.stdout.lower()


async def test_create_user_with_json_succeeds(grpcurl, stub):
    request = {
        "username": "Operator",
        "password": "typed by hand",
        "email": "operator@example.com",
        "displayName": "The Operator",
    }
    result = await grpcurl("users.v1.UserService/CreateUser", data=request)

    assert result.status == 0, result
    created = json.loads(result.stdout)
    assert created["username"] == "Operator"
    # grpcurl prints proto field names; accept the JSON (camelCase) ones too.
    assert created.get("display_name", created.get("displayName")) == "The Operator"
    assert "password" not in result.stdout
    fetched = await stub.GetUser(user_service_pb2.GetUserRequest(id=int(created["id"])))
    assert fetched.email == "operator@example.com"


async def test_get_user_of_a_missing_id_prints_not_found(grpcurl, stub):
    user = await create_user(stub)
    missing = user.id + 1
    result = await grpcurl("users.v1.UserService/GetUser", data={"id": missing})
    # grpcurl exits with 64 + the status code: NOT_FOUND is 5.
    assert result.status == 64 + 5, result
    assert "NotFound" in result.stderr
    assert f"User {missing} does not exist." in result.stderr


async def test_invalid_argument_details_are_visible_to_grpcurl(grpcurl):
    result = await grpcurl(
        "-format-error",
        "users.v1.UserService/CreateUser",
        data={"username": "x", "password": "p", "email": "nope"},
    )
    assert result.status == 64 + 3, result  # INVALID_ARGUMENT
    error = json.loads(result.stderr)
    assert error["code"] == 3
    kinds = {detail["@type"].rsplit("/", 1)[-1]: detail for detail in error["details"]}
    assert kinds["google.rpc.ErrorInfo"]["domain"] == "users.v1"
    assert kinds["google.rpc.ErrorInfo"]["reason"] == "INVALID_ARGUMENT"
    bad = kinds["google.rpc.BadRequest"]
    violations = bad.get("field_violations", bad.get("fieldViolations"))
    fields = {v["field"] for v in violations}
    assert fields == {"username", "password", "email"}


async def test_batch_create_imports_a_hash_and_names_a_clashing_entry(grpcurl, stub):
    from passlib.hash import bcrypt

    imported = bcrypt.using(rounds=4).hash("erin used this before")
    entries = [
        {"username": "erin", "email": "erin@example.com", "passwordHash": imported},
        {"username": "frank", "email": "frank@example.com", "password": "frank picks one"},
    ]
    result = await grpcurl("users.v1.UserService/BatchCreateUsers", data={"requests": entries})
    assert result.status == 0, result
    created = json.loads(result.stdout)["users"]
    assert [u["username"] for u in created] == ["erin", "frank"]
    assert "hash" not in result.stdout.lower()
    login = await stub.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(username="erin", password="erin used this before")
    )
    assert login.user.id == int(created[0]["id"])

    again = [{"username": "gina", "email": "gina@example.com", "password": "gina's secret"}]
    again.append(entries[0] | {"username": "ERIN", "email": "e2@example.com"})
    result = await grpcurl(
        "-format-error", "users.v1.UserService/BatchCreateUsers", data={"requests": again}
    )
    assert result.status == 64 + 6, result  # ALREADY_EXISTS
    (info,) = json.loads(result.stderr)["details"]
    assert info["reason"] == "USERNAME_TAKEN"
    assert info["metadata"] == {"field": "requests[1].username", "index": "1"}
