"""service.config.parse_settings: precedence of flags, environment and defaults; bad values."""

from __future__ import annotations

import pytest

from service.config import Settings, parse_settings


def test_without_flags_or_environment_the_defaults_apply():
    assert parse_settings([], {}) == Settings()


def test_environment_beats_defaults():
    settings = parse_settings(
        [],
        {
            "USERS_LISTEN": "0.0.0.0:6000",
            "USERS_DATABASE_URL": "postgres://u@db:5432/users",
            "USERS_DB_POOL_SIZE": "3",
            "USERS_GRACE_PERIOD": "2.5",
            "USERS_LOG_LEVEL": "DEBUG",
        },
    )
    assert settings.listen == "0.0.0.0:6000"
    assert settings.database_url == "postgres://u@db:5432/users"
    assert settings.db_pool_size == 3
    assert settings.grace_period == 2.5
    assert settings.log_level == "DEBUG"


def test_flags_beat_environment():
    settings = parse_settings(
        ["--listen", "127.0.0.1:7001", "--db-pool-size", "7", "--grace-period=0"],
        {"USERS_LISTEN": "0.0.0.0:6000", "USERS_DB_POOL_SIZE": "3", "USERS_GRACE_PERIOD": "9"},
    )
    assert settings.listen == "127.0.0.1:7001"
    assert settings.db_pool_size == 7
    assert settings.grace_period == 0.0


def test_a_flag_for_one_setting_leaves_the_environment_of_others_in_force():
    settings = parse_settings(["--db-pool-size", "7"], {"USERS_HASH_THREADS": "3"})
    assert (settings.db_pool_size, settings.hash_threads) == (7, 3)


def test_values_from_flags_and_environment_get_the_settings_types():
    settings = parse_settings(["--hash-threads", "4"], {"USERS_GRACE_PERIOD": "1"})
    assert isinstance(settings.hash_threads, int)
    assert isinstance(settings.grace_period, float)


def test_unrelated_environment_variables_are_ignored():
    assert parse_settings([], {"LISTEN": "nonsense", "USERS_UNKNOWN": "x"}) == Settings()


def test_settings_are_frozen():
    settings = parse_settings([], {})
    with pytest.raises(AttributeError):
        settings.listen = "elsewhere:1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("argv", "environ", "flag", "env"),
    [
        (["--db-pool-size", "many"], {}, "--db-pool-size", "USERS_DB_POOL_SIZE"),
        ([], {"USERS_DB_POOL_SIZE": "many"}, "--db-pool-size", "USERS_DB_POOL_SIZE"),
        ([], {"USERS_DB_POOL_SIZE": "0"}, "--db-pool-size", "USERS_DB_POOL_SIZE"),
        (["--hash-threads", "-1"], {}, "--hash-threads", "USERS_HASH_THREADS"),
        (["--grace-period", "soon"], {}, "--grace-period", "USERS_GRACE_PERIOD"),
        ([], {"USERS_GRACE_PERIOD": "-1"}, "--grace-period", "USERS_GRACE_PERIOD"),
        (["--listen", "no-port"], {}, "--listen", "USERS_LISTEN"),
        ([], {"USERS_LISTEN": "host:99999"}, "--listen", "USERS_LISTEN"),
        (["--database-url", "mysql://x/y"], {}, "--database-url", "USERS_DATABASE_URL"),
        ([], {"USERS_DATABASE_URL": "users.db"}, "--database-url", "USERS_DATABASE_URL"),
        (["--log-level", "LOUD"], {}, "--log-level", "USERS_LOG_LEVEL"),
    ],
    ids=["int-flag", "int-env", "zero-pool", "negative-threads", "float-flag", "negative-env",
         "listen-no-port", "listen-port-range", "url-scheme", "url-no-scheme", "log-level"],
)  # fmt: skip
def test_bad_value_exits_naming_the_flag_and_its_variable(argv, environ, flag, env, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_settings(argv, environ)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert flag in err
    assert env in err
    assert "Traceback" not in err
    # One line of diagnosis after argparse's usage text.
    assert err.strip().splitlines()[-1].count(flag) >= 1


def test_a_good_flag_overrides_a_bad_environment_value():
    settings = parse_settings(["--db-pool-size", "4"], {"USERS_DB_POOL_SIZE": "many"})
    assert settings.db_pool_size == 4


def test_unknown_flag_exits():
    with pytest.raises(SystemExit) as exit_:
        parse_settings(["--no-such-flag"], {})
    assert exit_.value.code == 2
