"""Make a development CA, a server certificate and SPIFFE client certificates (mTLS).

    python deploy/certs.py certs/ \
        --client spiffe://users.example/ns/web/sa/frontend \
        --client spiffe://users.example/ns/ops/sa/admin

writes ``certs/ca.pem`` (and ``ca-key.pem``), ``certs/server.pem`` and
``server-key.pem`` for localhost and 127.0.0.1, and for each client
``certs/<last path segment>.pem`` and ``-key.pem`` whose only URI SAN is the
SPIFFE ID, the form the server takes a caller's principal from. An existing CA
in the directory is reused, so more clients can be added later. For
development and tests only: production certificates come from your PKI (SPIRE,
cert-manager, a Vault PKI engine).

Uses the ``cryptography`` package (a dependency of the service's JWT support).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Authority", "main"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "users development CA", days: int = 365) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return cls(cert, key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> Authority:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC key made by this script")
        return cls(x509.load_pem_x509_certificate(cert_pem), key)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def issue(
        self,
        common_name: str,
        *,
        uris: Sequence[str] = (),
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        server: bool = False,
        days: int = 30,
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and its key (PEM) with exactly the SANs given."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    path.write_bytes(data)
    if secret:
        path.chmod(0o600)
    print(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--client", action="append", default=[], metavar="SPIFFE_ID")
    parser.add_argument("--server-name", action="append", default=[], metavar="DNS_NAME")
    args = parser.parse_args(argv)
    out: Path = args.directory
    out.mkdir(parents=True, exist_ok=True)
    for spiffe_id in args.client:
        if not spiffe_id.startswith("spiffe://") or "/" not in spiffe_id[len("spiffe://") :]:
            parser.error(f"{spiffe_id!r} is not a SPIFFE ID (spiffe://trust-domain/path)")
    if (out / "ca.pem").exists() and (out / "ca-key.pem").exists():
        ca = Authority.load((out / "ca.pem").read_bytes(), (out / "ca-key.pem").read_bytes())
    else:
        ca = Authority.create()
        _write(out / "ca.pem", ca.pem)
        _write(out / "ca-key.pem", ca.key_pem, secret=True)
    names = ["localhost", *args.server_name]
    cert, key = ca.issue(names[0], dns=names, ips=["127.0.0.1", "::1"], server=True)
    _write(out / "server.pem", cert)
    _write(out / "server-key.pem", key, secret=True)
    for spiffe_id in args.client:
        stem = spiffe_id.rstrip("/").rsplit("/", 1)[-1]
        cert, key = ca.issue(stem, uris=[spiffe_id])
        _write(out / f"{stem}.pem", cert)
        _write(out / f"{stem}-key.pem", key, secret=True)


if __name__ == "__main__":
    main()
