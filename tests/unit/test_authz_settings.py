"""The authorization flags: read like every other, and only in combinations that make sense."""

from __future__ import annotations

import pytest

from service.config import parse_settings

POLICY_ERROR = "callers need an identity: set --tls-client-ca (mTLS) or --authz-jwks (JWT)"


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name in ("policy.json", "jwks.json", "cert.pem", "key.pem", "ca.pem"):
        path = tmp_path / name
        path.write_text("{}")
        paths[name] = str(path)
    return paths


def test_the_flags_and_variables_are_read_and_flags_win(files):
    environ = {
        "USERS_AUTHZ_POLICY": files["policy.json"],
        "USERS_AUTHZ_JWKS": "https://issuer.example/jwks.json",
        "USERS_AUTHZ_JWT_ISSUER": "https://issuer.example",
        "USERS_AUTHZ_JWT_AUDIENCE": "users",
    }
    settings = parse_settings(["--authz-jwt-audience", "users.v1"], environ)
    assert settings.authz_policy == files["policy.json"]
    assert settings.authz_jwks == "https://issuer.example/jwks.json"
    assert settings.authz_jwt_issuer == "https://issuer.example"
    assert settings.authz_jwt_audience == "users.v1"


def test_a_policy_with_mtls_is_accepted(files):
    settings = parse_settings(
        ["--authz-policy", files["policy.json"], "--tls-cert", files["cert.pem"],
         "--tls-key", files["key.pem"], "--tls-client-ca", files["ca.pem"]], {}
    )  # fmt: skip
    assert settings.authz_policy


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--authz-policy", "{policy.json}"], POLICY_ERROR),
        (["--authz-policy", "/no/such/policy.json"], "no such file: /no/such/policy.json"),
        (["--authz-jwks", "{jwks.json}"], "--authz-jwks needs it"),
        (["--authz-jwt-issuer", "https://i.example"], "goes with --authz-jwks"),
        (
            ["--authz-jwks", "{jwks.json}", "--authz-jwt-issuer", "i", "--authz-jwt-audience", "a"],
            "bearer tokens need --authz-policy",
        ),
        (
            ["--authz-policy", "{policy.json}", "--authz-jwks", "/no/jwks.json",
             "--authz-jwt-issuer", "i", "--authz-jwt-audience", "a"],
            "no such file: /no/jwks.json",
        ),
    ],
)  # fmt: skip
def test_a_combination_that_cannot_work_exits_2_with_one_line(files, capsys, argv, problem):
    argv = [files.get(arg.strip("{}"), arg) if arg.startswith("{") else arg for arg in argv]
    with pytest.raises(SystemExit) as exited:
        parse_settings(argv, {})
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert problem in line
