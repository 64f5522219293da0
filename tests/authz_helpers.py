"""Certificates, policies and channels for the authorization tests."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).parents[1]
EXAMPLE_POLICY = ROOT / "deploy" / "authz-policy.json"
SVC = "/users.v1.UserService"
TD = "spiffe://users.example"
ADMIN = f"{TD}/ns/ops/sa/admin"
INTERN = f"{TD}/ns/ops/sa/intern"
FRONTEND = f"{TD}/ns/web/sa/frontend"
BILLING = f"{TD}/ns/payments/sa/billing"


def certs_tool() -> ModuleType:
    """deploy/certs.py, the documented way to make development certificates."""
    spec = importlib.util.spec_from_file_location("users_dev_certs", ROOT / "deploy" / "certs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Pki:
    directory: Path
    ca: Any  # deploy/certs.py Authority
    stranger_ca: Any

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    def client(self, stem: str) -> tuple[bytes, bytes]:
        return (
            (self.directory / f"{stem}.pem").read_bytes(),
            (self.directory / f"{stem}-key.pem").read_bytes(),
        )

    def credentials(self, cert_and_key: tuple[bytes, bytes] | None) -> grpc.ChannelCredentials:
        cert, key = cert_and_key or (None, None)
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(), private_key=key, certificate_chain=cert
        )

    def tls_settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "tls_cert": str(self.server_cert),
            "tls_key": str(self.server_key),
            "tls_client_ca": str(self.ca_file),
            **extra,
        }


def make_pki(directory: Path) -> Pki:
    """Run deploy/certs.py for the principals of the example policy, and keep its CA."""
    tool = certs_tool()
    with contextlib.redirect_stdout(io.StringIO()):  # it lists the files it writes
        tool.main([str(directory), "--client", ADMIN, "--client", INTERN, "--client", FRONTEND,
                  "--client", BILLING])  # fmt: skip
    ca = tool.Authority.load(
        (directory / "ca.pem").read_bytes(), (directory / "ca-key.pem").read_bytes()
    )
    return Pki(directory, ca, tool.Authority.create("some other CA"))


def write_policy(path: Path, document: dict[str, Any] | None = None) -> Path:
    if document is None:
        shutil.copyfile(EXAMPLE_POLICY, path)
    else:
        path.write_text(json.dumps(document))
    return path


def secure_channel(address: str, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
    # The server certificate names localhost; the test dials 127.0.0.1.
    return grpc.aio.secure_channel(
        address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )
