"""Bearer JWTs as caller identity: RS256/ES256 only, every claim checked, keys from file or URL."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.api.jwks import KeySet, KeySetError
from service.testing import running_service
from tests.authz_helpers import FRONTEND, SVC, Pki, make_pki, secure_channel, write_policy
from tests.helpers import Failure, failure
from tests.ops_helpers import eventually, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from service.testing import RunningService

ISSUER = "https://issuer.users.example"
AUDIENCE = "users.v1"
READER = "svc:reader"
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
POLICY = {
    "name": "jwt",
    "allow_rules": [
        {"name": "readers", "source": {"principals": ["svc:*"]},
         "request": {"paths": [f"{SVC}/GetUser"]}},
    ],
}  # fmt: skip

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else None
    if algorithm is None:
        entry = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        entry = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**entry, "kid": kid, "use": "sig"}


def key_set(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": READER, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(key: Any = RSA_KEY, kid: str = "rsa-1", algorithm: str = "RS256", **changes: Any) -> str:
    return jwt.encode(claims(**changes), key, algorithm=algorithm, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key() -> str:
    """The classic confusion attack: HMAC 'signed' with the RSA public key as the secret."""
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def unsigned() -> str:
    head = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    return f"{head}.{b64(json.dumps(claims()).encode())}."


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def jwt_settings(pki: Pki, tmp_path: Path, jwks: str) -> dict[str, Any]:
    return {
        "tls_cert": str(pki.server_cert),
        "tls_key": str(pki.server_key),
        "authz_policy": str(write_policy(tmp_path / "policy.json", POLICY)),
        "authz_jwks": jwks,
        "authz_jwt_issuer": ISSUER,
        "authz_jwt_audience": AUDIENCE,
    }


@pytest.fixture
async def jwt_service(pki, tmp_path) -> AsyncIterator[RunningService]:
    """Tokens are checked before anything reads the database: one backend is enough."""
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(key_set(jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")))
    database_url = f"sqlite://{tmp_path / 'u.sqlite3'}"
    async with running_service(database_url, **jwt_settings(pki, tmp_path, str(jwks))) as running:
        yield running


async def get_user(running: RunningService, pki: Pki, metadata: Any = ()) -> Failure:
    channel = secure_channel(running.address, pki.credentials(None))
    async with channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        return await failure(
            users.GetUser(user_service_pb2.GetUserRequest(id=42), metadata=metadata)
        )


def bearer(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


async def test_a_verified_rs256_or_es256_token_is_its_sub(jwt_service, pki):
    for good in (token(), token(EC_KEY, "ec-1", "ES256")):
        got = await get_user(jwt_service, pki, bearer(good))
        assert got.code == grpc.StatusCode.NOT_FOUND  # through the policy, into the handler
    other = token(sub="user:someone")
    got = await get_user(jwt_service, pki, bearer(other))
    assert (got.code, got.metadata.get("principal")) == (DENIED, "user:someone")


@pytest.mark.parametrize(
    ("credential", "why"),
    # Made when the test runs, not at collection: a long suite would expire them all.
    [
        pytest.param(None, "verified caller", id="no-token"),
        pytest.param(lambda: token(exp=int(time.time()) - 120), "has expired", id="expired"),
        pytest.param(lambda: token(iss="https://evil.example"), "another issuer", id="wrong-iss"),
        pytest.param(lambda: token(aud="billing.v1"), "not meant for this service", id="wrong-aud"),
        pytest.param(lambda: token(exp=None), "no exp claim", id="no-exp"),
        pytest.param(lambda: token(iss=None), "no iss claim", id="no-iss"),
        pytest.param(lambda: token(aud=None), "no aud claim", id="no-aud"),
        pytest.param(lambda: token(sub=None), "no sub claim", id="no-sub"),
        pytest.param(lambda: token(sub=""), "empty sub", id="empty-sub"),
        pytest.param(unsigned, "RS256 or ES256", id="alg-none"),
        pytest.param(hs256_with_public_key, "RS256 or ES256", id="hs256-public-key"),
        pytest.param(
            lambda: token(OTHER_RSA_KEY, kid="rsa-9"), "(kid) is not known", id="unknown-kid"
        ),
        pytest.param(lambda: token(OTHER_RSA_KEY), "does not verify", id="forged-signature"),
        pytest.param(
            lambda: token(EC_KEY, "rsa-1", "ES256"), "does not match its key", id="alg-kid-swap"
        ),
        pytest.param(lambda: "not.a.jwt", "not a JWT", id="garbage"),
    ],
)
async def test_every_bad_token_is_unauthenticated_and_says_why(jwt_service, pki, credential, why):
    metadata = () if credential is None else bearer(credential())
    got = await get_user(jwt_service, pki, metadata)
    assert (got.code, got.reason) == (UNAUTHENTICATED, "CALLER_UNAUTHENTICATED"), got
    assert why in got.message, got.message


async def test_an_authorization_header_that_is_not_one_bearer_token_is_refused(jwt_service, pki):
    for metadata in (
        (("authorization", f"Basic {b64(b'reader:pw')}"),),
        (("authorization", f"Bearer {token()}"), ("authorization", f"Bearer {token()}")),
        (("authorization", "Bearer "),),
    ):
        got = await get_user(jwt_service, pki, metadata)
        assert (got.code, got.reason) == (UNAUTHENTICATED, "CALLER_UNAUTHENTICATED"), metadata


@contextlib.contextmanager
def serving_jwks(body: list[bytes]) -> Iterator[str]:
    """An HTTP server on loopback answering the JWKS in ``body[0]`` (change it to rotate)."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


async def test_keys_from_a_url_are_fetched_and_tokens_verify(pki, tmp_path):
    body = [key_set(jwk(RSA_KEY, "rsa-1"))]
    with serving_jwks(body) as url:
        settings = jwt_settings(pki, tmp_path, url)
        async with running_service(f"sqlite://{tmp_path / 'u.sqlite3'}", **settings) as running:

            async def through() -> bool:
                return (
                    await get_user(running, pki, bearer(token()))
                ).code == grpc.StatusCode.NOT_FOUND

            await eventually(through, within=10, interval=0.1, what="keys fetched from the URL")


async def test_a_new_key_id_makes_the_key_set_fetch_the_url_again(tmp_path):
    body = [key_set(jwk(RSA_KEY, "rsa-1"))]
    with serving_jwks(body) as url:
        keys = KeySet(url, min_refetch=0)
        await keys.load()
        assert keys.get("rsa-2") is None
        body[0] = key_set(jwk(RSA_KEY, "rsa-1"), jwk(OTHER_RSA_KEY, "rsa-2"))
        keys.missing("rsa-2")

        async def rotated() -> bool:
            return keys.get("rsa-2") is not None

        await eventually(rotated, within=10, interval=0.05, what="the rotated key")
        # A set that turns bad keeps the keys already known.
        body[0] = b"<html>oops</html>"
        with pytest.raises(KeySetError, match="not a JSON object"):
            await keys.load()
        assert keys.get("rsa-2") is not None


def test_a_key_set_keeps_only_rs256_and_es256_signing_keys():
    from service.api.jwks import parse_key_set

    symmetric = {"kty": "oct", "k": b64(b"secret-secret-secret"), "kid": "hmac"}
    encryption = {**jwk(RSA_KEY, "enc"), "use": "enc"}
    no_kid = {k: v for k, v in jwk(EC_KEY, "x").items() if k != "kid"}
    keys = parse_key_set(key_set(symmetric, encryption, no_kid, jwk(EC_KEY, "ec-1")), "test")
    assert set(keys) == {"ec-1"}
    with pytest.raises(KeySetError, match="no RS256 or ES256"):
        parse_key_set(key_set(symmetric), "test")


async def test_with_mtls_and_jwt_a_token_is_the_principal_and_a_bad_one_is_never_overlooked(
    pki, tmp_path
):
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(key_set(jwk(RSA_KEY, "rsa-1")))
    settings = {**jwt_settings(pki, tmp_path, str(jwks)), "tls_client_ca": str(pki.ca_file)}
    async with running_service(f"sqlite://{tmp_path / 'u.sqlite3'}", **settings) as running:
        channel = secure_channel(running.address, pki.credentials(pki.client("frontend")))
        async with channel:
            users = user_service_pb2_grpc.UserServiceStub(channel)
            request = user_service_pb2.GetUserRequest(id=42)
            # The certificate alone: its SPIFFE ID, which this policy does not allow.
            got = await failure(users.GetUser(request))
            assert (got.code, got.metadata["principal"]) == (DENIED, FRONTEND)
            # With a token: the token's sub, which it does.
            got = await failure(users.GetUser(request, metadata=bearer(token())))
            assert got.code == grpc.StatusCode.NOT_FOUND
            # A bad token is refused even though the certificate is good.
            got = await failure(users.GetUser(request, metadata=bearer(token(aud="other"))))
            assert (got.code, got.reason) == (UNAUTHENTICATED, "CALLER_UNAUTHENTICATED")


async def test_a_key_url_that_does_not_answer_at_start_up_refuses_tokens_but_serves(pki, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/jwks.json"  # nothing listens there
    settings = jwt_settings(pki, tmp_path, url)
    async with running_service(f"sqlite://{tmp_path / 'u.sqlite3'}", **settings) as running:
        got = await get_user(running, pki, bearer(token()))
        assert (got.code, got.reason) == (UNAUTHENTICATED, "CALLER_UNAUTHENTICATED")
        assert "(kid) is not known" in got.message
