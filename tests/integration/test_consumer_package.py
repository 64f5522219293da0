"""users-api as a consumer uses it: a fresh venv with only that package, a typed client.

The venv is built once per module from a copy of generated/ (so that the
build leaves nothing in the checkout); each backend then runs the client,
which applies the shipped service config, against the real server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.testing import running_service

ROOT = Path(__file__).resolve().parents[2]
# What users-api may bring along: itself, its three dependencies and theirs,
# the typing extra, and what every venv has.
ALLOWED = {
    "users-api", "grpcio", "grpcio-status", "protobuf", "googleapis-common-protos",
    "typing-extensions", "types-protobuf", "grpc-stubs", "pip", "setuptools",
}  # fmt: skip

CLIENT = '''\
"""Signs up once (resent with its request_id), reads the user back, expects NOT_FOUND."""

from __future__ import annotations

import asyncio
import sys
from importlib import resources
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from users.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc

if TYPE_CHECKING:
    # Only in the .pyi: the async stub is the sync one's class at run time.
    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub


def service_config() -> str:
    config = resources.files("users.v1") / "user_service_grpc_service_config.json"
    return config.read_text(encoding="utf-8")


async def sign_up(stub: UserServiceAsyncStub) -> resources_pb2.User:
    request = user_service_pb2.CreateUserRequest(
        username="consumer",
        password="a long enough secret",
        email="consumer@example.com",
        request_id="2c1e8f4a-8d7b-4f49-9a53-2f3c7d1e0b6a",
    )
    first = await stub.CreateUser(request)
    again = await stub.CreateUser(request)
    assert again.id == first.id, (first.id, again.id)
    return first


async def main(address: str) -> None:
    options = [("grpc.service_config", service_config())]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub: UserServiceAsyncStub = user_service_pb2_grpc.UserServiceStub(channel)
        user = await sign_up(stub)
        read = await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
        try:
            await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id + 1000))
        except grpc.aio.AioRpcError as error:
            code: grpc.StatusCode = error.code()
        else:
            raise AssertionError("GetUser of a missing id succeeded")
        print(read.username, read.email, code.name)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
'''


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    """Run a command to completion; fail the test with its output unless it exits 0."""
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def consumer_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv in which only users-api (with its typing extra) was installed."""
    base = tmp_path_factory.mktemp("consumer")
    source = base / "users-api"
    shutil.copytree(
        ROOT / "generated",
        source,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
    )
    venv = base / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{source}[types]")
    return venv


def test_users_api_installs_the_stubs_and_nothing_of_the_service(consumer_venv):
    python = consumer_venv / "bin" / "python"
    listed = run(python, "-m", "pip", "list", "--format=freeze", cwd=consumer_venv)
    names = {line.split("==")[0].lower().replace("_", "-") for line in listed.split()}
    assert "users-api" in names
    assert names <= ALLOWED, names - ALLOWED
    for module in ("service", "tortoise", "asyncpg", "passlib"):
        # From the venv's directory: `-c` puts the working directory on sys.path.
        found = run(
            python, "-c", f"import importlib.util as u; print(u.find_spec({module!r}))",
            cwd=consumer_venv,
        )  # fmt: skip
        assert found.strip() == "None", f"{module} is importable: {found}"
    typed = run(
        python, "-c", "import importlib.resources as r; print(sorted(f.name for f in "
        "r.files('users.v1').iterdir() if f.name.endswith(('.pyi', '.json'))))",
        cwd=consumer_venv,
    )  # fmt: skip
    assert "user_service_pb2_grpc.pyi" in typed
    assert "user_service_grpc_service_config.json" in typed


def test_a_typed_client_passes_mypy_strict_against_users_api_alone(consumer_venv, tmp_path):
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    # mypy from the dev tools, resolving imports in the consumer's venv only.
    mypy = Path(sys.executable).parent / "mypy"
    python = consumer_venv / "bin" / "python"
    output = run(
        mypy, "--strict", "--no-incremental", "--python-executable", python, client, cwd=tmp_path
    )
    assert "Success" in output, output


async def test_the_client_in_that_venv_talks_to_the_real_server(
    consumer_venv, database_url, tmp_path
):
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    async with running_service(database_url) as service:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        process = await _run_client(consumer_venv / "bin" / "python", client, service.address, env)
    assert process == "consumer consumer@example.com NOT_FOUND"


async def _run_client(python: Path, client: Path, address: str, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        str(python), str(client), address,
        cwd=client.parent, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return out.decode().strip()
