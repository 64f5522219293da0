"""TLS and mutual TLS, with certificates made for the test."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.testing import running_service
from tests.helpers import failure
from tests.ops_helpers import (
    SERVING,
    Certificates,
    free_port,
    health_status,
    make_certificates,
    service_process,
)

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    # TLS is the transport's business: one backend is enough.
    return f"sqlite://{tmp_path / 'users.sqlite3'}"


async def get_missing_user(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The status of a GetUser call for a user that does not exist: NOT_FOUND if it got through."""
    stub = user_service_pb2_grpc.UserServiceStub(channel)
    got = await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=7), timeout=10))
    return got.code


def trusting(certificates: Certificates, *, cert: bytes | None = None, key: bytes | None = None):
    return grpc.ssl_channel_credentials(
        root_certificates=certificates.ca, private_key=key, certificate_chain=cert
    )


async def test_a_tls_server_answers_a_client_that_trusts_its_ca(sqlite_url, certificates):
    async with running_service(
        sqlite_url, tls_cert=str(certificates.server_cert), tls_key=str(certificates.server_key)
    ) as running:
        assert running.server.settings.tls
        for address in (running.address, f"localhost:{running.server.port}"):
            async with grpc.aio.secure_channel(address, trusting(certificates)) as channel:
                assert await get_missing_user(channel) == grpc.StatusCode.NOT_FOUND
        credentials = trusting(certificates)
        assert await health_status(running.address, credentials=credentials) == SERVING


async def test_a_tls_server_refuses_plaintext_clients(sqlite_url, certificates):
    async with (
        running_service(
            sqlite_url, tls_cert=str(certificates.server_cert), tls_key=str(certificates.server_key)
        ) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        assert await get_missing_user(channel) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_that_does_not_trust_the_servers_ca_cannot_connect(
    sqlite_url, certificates, tmp_path
):
    stranger = make_certificates(tmp_path)
    async with (
        running_service(
            sqlite_url, tls_cert=str(certificates.server_cert), tls_key=str(certificates.server_key)
        ) as running,
        grpc.aio.secure_channel(running.address, trusting(stranger)) as channel,
    ):
        assert await get_missing_user(channel) == grpc.StatusCode.UNAVAILABLE


async def test_with_a_client_ca_only_clients_with_a_certificate_from_it_get_through(
    sqlite_url, certificates
):
    async with running_service(
        sqlite_url,
        tls_cert=str(certificates.server_cert),
        tls_key=str(certificates.server_key),
        tls_client_ca=str(certificates.ca_file),
    ) as running:
        address = running.address
        async with grpc.aio.secure_channel(address, trusting(certificates)) as anonymous:
            assert await get_missing_user(anonymous) == grpc.StatusCode.UNAVAILABLE
        stranger = trusting(
            certificates, cert=certificates.stranger_cert, key=certificates.stranger_key
        )
        async with grpc.aio.secure_channel(address, stranger) as channel:
            assert await get_missing_user(channel) == grpc.StatusCode.UNAVAILABLE
        known = trusting(certificates, cert=certificates.client_cert, key=certificates.client_key)
        async with grpc.aio.secure_channel(address, known) as channel:
            assert await get_missing_user(channel) == grpc.StatusCode.NOT_FOUND
        async with grpc.aio.insecure_channel(address) as plaintext:
            assert await get_missing_user(plaintext) == grpc.StatusCode.UNAVAILABLE


async def test_the_command_line_serves_mutual_tls_from_its_flags(certificates, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    known = trusting(certificates, cert=certificates.client_cert, key=certificates.client_key)
    async with service_process(
        "--database-url", f"sqlite://{tmp_path / 'users.sqlite3'}",
        "--tls-cert", str(certificates.server_cert),
        "--tls-key", str(certificates.server_key),
        "--tls-client-ca", str(certificates.ca_file),
        listen=address, cwd=tmp_path,
    ) as running:  # fmt: skip
        await running.wait_serving(credentials=known)
        async with grpc.aio.secure_channel(address, known) as channel:
            assert await get_missing_user(channel) == grpc.StatusCode.NOT_FOUND
        async with grpc.aio.secure_channel(address, trusting(certificates)) as anonymous:
            assert await get_missing_user(anonymous) == grpc.StatusCode.UNAVAILABLE
        running.signal(signal.SIGTERM)
        assert await running.wait_exit() == 0, running.stderr
    assert any("TLS" in line and "serving" in line for line in running.lines), running.stderr
