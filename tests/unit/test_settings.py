"""Settings from flags and USERS_* variables: every field, precedence, conversions, errors."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import pytest

from service.config import Settings, parse_command, parse_settings

if TYPE_CHECKING:
    from pathlib import Path

# For every setting but the TLS files: two strings and the values they mean.
# The first is never the default; the second differs from the first.
VALUES: dict[str, tuple[str, str, Any, Any]] = {
    "listen": ("0.0.0.0:7000", "127.0.0.1:7001", "0.0.0.0:7000", "127.0.0.1:7001"),
    "database_url": (
        "sqlite:///tmp/from-env.sqlite3",
        "postgres://app@db.internal:5432/users",
        "sqlite:///tmp/from-env.sqlite3",
        "postgres://app@db.internal:5432/users",
    ),
    "db_pool_size": ("3", "4", 3, 4),
    "db_command_timeout": ("0", "2.5", 0.0, 2.5),
    "database_wait": ("0", "30.5", 0.0, 30.5),
    "hash_threads": ("5", "6", 5, 6),
    "workers": ("2", "3", 2, 3),
    "accept_loops": ("2", "3", 2, 3),
    "grace_period": ("2.5", "0", 2.5, 0.0),
    "migrate_on_start": ("false", "yes", False, True),
    "metrics_listen": ("127.0.0.1:9100", "0.0.0.0:9200", "127.0.0.1:9100", "0.0.0.0:9200"),
    "access_log": ("off", "on", False, True),
    "log_level": ("debug", "ERROR", "debug", "ERROR"),
    "health_probe_interval": ("0.5", "2", 0.5, 2.0),
    "max_message_bytes": ("65536", "1048576", 65536, 1048576),
    "max_concurrent_rpcs": ("0", "50", 0, 50),
    "max_connection_age": ("30", "600.5", 30.0, 600.5),
    "deleted_retention_days": ("7", "0.5", 7.0, 0.5),
    "auth_max_failures": ("0", "10", 0, 10),
    "auth_failure_window": ("60", "7200.5", 60.0, 7200.5),
    "auth_lockout_base": ("0.5", "2", 0.5, 2.0),
    "auth_lockout_max": ("60", "3600", 60.0, 3600.0),
    # --- change feed ---
    "events_retention_days": ("30", "0.5", 30.0, 0.5),
    "events_bookmark_interval": ("2", "0.25", 2.0, 0.25),
    "events_poll_interval": ("0.2", "5", 0.2, 5.0),
    "events_nats_url": (
        "nats://127.0.0.1:4222",
        "nats://nats.internal:4222",
        "nats://127.0.0.1:4222",
        "nats://nats.internal:4222",
    ),
    "events_nats_stream": ("FEED", "OTHER_FEED", "FEED", "OTHER_FEED"),
    "events_nats_subject": ("feed", "acme.users", "feed", "acme.users"),
}
TLS_FIELDS = {"tls_cert", "tls_key", "tls_client_ca"}
# They go together and name files: tests/unit/test_authz_settings.py covers them.
AUTHZ_FIELDS = {"authz_policy", "authz_jwks", "authz_jwt_issuer", "authz_jwt_audience"}
# It needs a PostgreSQL database URL: tests/unit/test_events_direct.py covers it.
DIRECT_FIELDS = {"events_direct_url"}
DEFAULTS = Settings()


def env_name(field: str) -> str:
    return "USERS_" + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def test_every_setting_is_covered_by_these_tests():
    assert set(VALUES) | TLS_FIELDS | AUTHZ_FIELDS | DIRECT_FIELDS == {
        f.name for f in dataclasses.fields(Settings)
    }


def test_with_neither_flags_nor_environment_every_setting_has_its_default():
    assert parse_command([], {}) == ("serve", DEFAULTS)


def test_by_default_the_service_waits_for_its_database_as_long_as_it_takes():
    assert DEFAULTS.database_wait == float("inf")
    assert parse_settings(["--database-wait", "inf"], {}).database_wait == float("inf")


def test_the_default_database_is_a_sqlite_file_under_data():
    assert DEFAULTS.database_url.startswith("sqlite://data/")
    assert DEFAULTS.listen == "127.0.0.1:50051"


@pytest.mark.parametrize("field", sorted(VALUES))
def test_every_setting_is_read_from_its_environment_variable(field):
    text, _, expected, _ = VALUES[field]
    settings = parse_settings([], {env_name(field): text})
    assert getattr(settings, field) == expected
    assert getattr(settings, field) != getattr(DEFAULTS, field)


@pytest.mark.parametrize("field", sorted(VALUES))
def test_every_setting_is_read_from_its_flag(field):
    text, _, expected, _ = VALUES[field]
    settings = parse_settings([flag_name(field), text], {})
    assert getattr(settings, field) == expected
    assert getattr(settings, field) != getattr(DEFAULTS, field)


@pytest.mark.parametrize("field", sorted(VALUES))
def test_a_flag_beats_its_environment_variable(field):
    env_text, flag_text, from_env, from_flag = VALUES[field]
    assert from_env != from_flag
    settings = parse_settings([flag_name(field), flag_text], {env_name(field): env_text})
    assert getattr(settings, field) == from_flag


def test_a_flag_beats_an_invalid_environment_variable():
    settings = parse_settings(["--db-pool-size", "7"], {"USERS_DB_POOL_SIZE": "x"})
    assert settings.db_pool_size == 7


def test_tls_files_are_read_from_flags_and_environment_and_flags_win(tmp_path: Path):
    files = {name: tmp_path / f"{name}.pem" for name in ("a", "b", "c", "d")}
    for path in files.values():
        path.write_text("not checked here")
    environ = {
        "USERS_TLS_CERT": str(files["a"]),
        "USERS_TLS_KEY": str(files["b"]),
        "USERS_TLS_CLIENT_CA": str(files["c"]),
    }
    from_env = parse_settings([], environ)
    assert (from_env.tls_cert, from_env.tls_key, from_env.tls_client_ca) == (
        str(files["a"]),
        str(files["b"]),
        str(files["c"]),
    )
    assert from_env.tls
    flagged = parse_settings(
        ["--tls-cert", str(files["d"]), "--tls-client-ca", str(files["a"])], environ
    )
    assert (flagged.tls_cert, flagged.tls_key, flagged.tls_client_ca) == (
        str(files["d"]),
        str(files["b"]),
        str(files["a"]),
    )


def test_migrate_is_a_command_and_serve_the_default():
    assert parse_command(["migrate"], {})[0] == "migrate"
    assert parse_command(["purge"], {})[0] == "purge"
    assert parse_command(["serve"], {})[0] == "serve"
    assert parse_command([], {})[0] == "serve"


@pytest.mark.parametrize(
    ("argv", "environ", "flag"),
    [
        ([], {"USERS_DB_POOL_SIZE": "x"}, "--db-pool-size"),
        (["--db-pool-size", "0"], {}, "--db-pool-size"),
        (["--hash-threads", "0"], {}, "--hash-threads"),
        (["--workers", "0"], {}, "--workers"),
        (["--workers", "2", "--listen", "127.0.0.1:0"], {}, "--workers"),
        (["--listen", "nonsense"], {}, "--listen"),
        (["--listen", "127.0.0.1:70000"], {}, "--listen"),
        (["--metrics-listen", "9100"], {}, "--metrics-listen"),
        (["--database-url", "mysql://db/users"], {}, "--database-url"),
        (["--grace-period", "-1"], {}, "--grace-period"),
        (["--database-wait", "-1"], {}, "--database-wait"),
        ([], {"USERS_DATABASE_WAIT": "nan"}, "--database-wait"),
        (["--database-wait", "forever"], {}, "--database-wait"),
        (["--grace-period", "soon"], {}, "--grace-period"),
        ([], {"USERS_ACCESS_LOG": "maybe"}, "--access-log"),
        (["--log-level", "LOUD"], {}, "--log-level"),
        (["--health-probe-interval", "0"], {}, "--health-probe-interval"),
        (["--max-message-bytes", "10"], {}, "--max-message-bytes"),
        (["--max-concurrent-rpcs", "-1"], {}, "--max-concurrent-rpcs"),
        (["--max-connection-age", "-5"], {}, "--max-connection-age"),
        (["--deleted-retention-days", "-1"], {}, "--deleted-retention-days"),
        (["--deleted-retention-days", "40000"], {}, "--deleted-retention-days"),
        ([], {"USERS_DELETED_RETENTION_DAYS": "forever"}, "--deleted-retention-days"),
        (["--tls-cert", "/no/such/cert.pem", "--tls-key", "/no/such/key.pem"], {}, "--tls-cert"),
        (["--tls-client-ca", __file__], {}, "--tls-client-ca"),
        (["--events-retention-days", "0"], {}, "--events-retention-days"),
        (["--events-bookmark-interval", "11"], {}, "--events-bookmark-interval"),
        (["--events-poll-interval", "0"], {}, "--events-poll-interval"),
        (["--accept-loops", "0"], {}, "--accept-loops"),
        ([], {"USERS_ACCEPT_LOOPS": "65"}, "--accept-loops"),
        (["--events-nats-url", "http://127.0.0.1:4222"], {}, "--events-nats-url"),
        (["--events-nats-stream", "users.events"], {}, "--events-nats-stream"),
        (["--events-nats-subject", "users.*"], {}, "--events-nats-subject"),
        (["--events-nats-subject", "users..events"], {}, "--events-nats-subject"),
    ],
)
def test_a_bad_value_exits_2_with_one_line_naming_the_flag_and_the_variable(
    argv, environ, flag, capsys
):
    with pytest.raises(SystemExit) as exited:
        parse_command(argv, environ)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    variable = "USERS_" + flag[2:].replace("-", "_").upper()
    assert flag in errors[0], err
    assert variable in errors[0], err
    assert "Traceback" not in err


def test_a_tls_certificate_without_its_key_names_the_missing_key(capsys):
    with pytest.raises(SystemExit) as exited:
        parse_command(["--tls-cert", __file__], {})
    assert exited.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "--tls-key" in line
    assert "USERS_TLS_KEY" in line


def test_a_tls_key_without_its_certificate_names_the_missing_certificate(capsys):
    with pytest.raises(SystemExit):
        parse_command(["--tls-key", __file__], {})
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "--tls-cert" in line
    assert "USERS_TLS_CERT" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        ("Yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("NO", False),
        ("off", False),
    ],
)
def test_boolean_settings_accept_the_usual_spellings(text, expected):
    assert parse_settings(["--access-log", text], {}).access_log is expected
