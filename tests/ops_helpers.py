"""Helpers for the operability tests: ports, health, server processes, PostgreSQL, certificates.

Everything here is safe to use from async tests: subprocesses run through
asyncio, never blocking the loop that grpc.aio and the server share.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.requirements import not_applicable, postgres_admin_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

    from service.testing import RunningService

SERVICE_NAME = "users.v1.UserService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Generous: a 2-core machine running the whole suite can be slow to start a
# Python process that imports grpc, Tortoise and asyncpg.
START_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.1, what: str
) -> None:
    """Wait until ``check()`` is true; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within:.0f}s: {what}")
        await asyncio.sleep(interval)


def stub_of(running: RunningService) -> UserServiceAsyncStub:
    """The service's stub, typed as what it is: a stub over a grpc.aio channel."""
    return running.stub


# -- health -----------------------------------------------------------------


async def health_status(
    address: str,
    service: str = "",
    *,
    credentials: grpc.ChannelCredentials | None = None,
    call_timeout: float = 3.0,
) -> int | None:
    """The Health.Check status over a fresh channel, or None if the call failed."""
    channel = (
        grpc.aio.secure_channel(address, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(address)
    )
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=call_timeout
            )
        except grpc.aio.AioRpcError:
            return None
        status: int = response.status
        return status


# -- the service as a process -----------------------------------------------


def service_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any USERS_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERS_")}
    env.update(extra)
    return env


async def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, within: float = 60
) -> tuple[int, str, str]:
    """Run ``python -m service ARGS`` to completion: (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        env=service_environment() if env is None else env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        pytest.fail(f"python -m service {' '.join(args)} did not finish within {within}s")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class ServiceProcess:
    """A running ``python -m service`` and the lines it has written to stderr so far."""

    process: asyncio.subprocess.Process
    address: str
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def _read_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while line := await stream.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def access_log(self) -> list[dict[str, Any]]:
        """The access-log lines seen so far, parsed."""
        entries = []
        for line in self.lines:
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    entries.append(json.loads(line))
        return entries

    async def wait_serving(
        self,
        within: float = START_TIMEOUT,
        *,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """Wait until Health.Check answers SERVING; fail early if the process exits."""
        deadline = time.monotonic() + within
        while (
            await health_status(self.address, credentials=credentials, call_timeout=1.0) != SERVING
        ):
            if self.process.returncode is not None:
                await self.drain()
                pytest.fail(
                    f"the service exited with {self.process.returncode} before serving:\n"
                    + self.stderr
                )
            if time.monotonic() > deadline:
                pytest.fail(f"the service was not SERVING within {within}s:\n" + self.stderr)
            await asyncio.sleep(0.2)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self, within: float = EXIT_TIMEOUT) -> int:
        """The exit status; fails if the process is still running after ``within`` seconds."""
        try:
            status = await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            pytest.fail(f"the service did not exit within {within}s:\n" + self.stderr)
        await self.drain()
        return status

    async def drain(self) -> None:
        """Read stderr to its end (the process has exited)."""
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 10)


@contextlib.asynccontextmanager
async def service_process(
    *args: str, listen: str, cwd: Path, env: dict[str, str] | None = None
) -> AsyncIterator[ServiceProcess]:
    """Start ``python -m service --listen LISTEN ARGS``; kill what is left of it on exit.

    The process leads a session of its own, so that workers it forks can be
    cleaned up with it even when a test fails half-way.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "--listen",
        listen,
        *args,
        env=service_environment() if env is None else env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    running = ServiceProcess(process, listen)
    running._reader = asyncio.create_task(running._read_stderr())
    try:
        yield running
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        else:
            # Workers of a parent that died early may still hold the port.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        running._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running._reader


# -- PostgreSQL -------------------------------------------------------------


def require_postgres(database_url: str) -> None:
    if not database_url.startswith("postgres"):
        not_applicable("PostgreSQL only: SQLite has no server to cut off, no row locks to wait on")


def database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


async def admin_connection() -> asyncpg.Connection:
    """A connection to the administrative database of the test server (not the service's)."""
    return await asyncpg.connect(postgres_admin_url())


async def lock_waiters(connection: asyncpg.Connection) -> int:
    """Other backends of the connection's database that wait on a lock now."""
    count: int = await connection.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        " AND pid <> pg_backend_pid()"
    )
    return count


# -- certificates -----------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: bytes
    server_cert: Path
    server_key: Path
    ca_file: Path
    client_cert: bytes
    client_key: bytes
    stranger_cert: bytes
    stranger_key: bytes


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and localhost, and client certificates.

    The "stranger" client certificate is signed by another CA the server does not trust.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def authority(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cert, key

    def leaf(
        issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
        common_name: str,
        usage: x509.ObjectIdentifier,
        names: list[x509.GeneralName],
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(issuer[0].subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(issuer[1], hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    ca = authority("users test CA")
    stranger_ca = authority("some other CA")
    server_cert, server_key = leaf(
        ca,
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_cert, client_key = leaf(ca, "a consumer", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    stranger_cert, stranger_key = leaf(
        stranger_ca, "a stranger", ExtendedKeyUsageOID.CLIENT_AUTH, []
    )
    ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
    paths = {
        "ca.pem": ca_pem,
        "server.pem": server_cert,
        "server.key": server_key,
    }
    for filename, content in paths.items():
        (directory / filename).write_bytes(content)
    return Certificates(
        ca=ca_pem,
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        ca_file=directory / "ca.pem",
        client_cert=client_cert,
        client_key=client_key,
        stranger_cert=stranger_cert,
        stranger_key=stranger_key,
    )
