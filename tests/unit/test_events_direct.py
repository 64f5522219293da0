"""--events-direct-url: reading, refusals, and the DSN the feed's session-bound connections use."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from service.config import Settings, parse_command
from service.db.feed_listener import dedicated_connection, host_dsns, session_dsn

PG = "postgres://app:secret@bouncer:6432/users?statement_cache_size=0&minsize=2"
DIRECT = "postgresql://app:secret@pg1:5432,pg2:5433/users?target_session_attrs=read-write"


def test_read_from_its_flag_and_its_variable_and_the_flag_wins():
    environ = {"USERS_DATABASE_URL": PG, "USERS_EVENTS_DIRECT_URL": DIRECT}
    assert parse_command([], environ)[1].events_direct_url == DIRECT
    other = "postgres://app@pg9:5432/users"
    settings = parse_command(["--events-direct-url", other], environ)[1]
    assert settings.events_direct_url == other
    assert Settings().events_direct_url == ""


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://app@pg1/users", "expected postgresql://"),
        ("pg1:5432", "expected postgresql://"),
        ("postgres:///users", "expected postgresql://"),
        ("postgres://app@pg1:5432,,pg2:5432/users?target_session_attrs=read-write", "empty"),
        ("postgres://app@pg1:5432,pg2:5432/users", "several hosts need"),
        ("postgres://app@pg1:5432,pg2:5432/users?target_session_attrs=any", "several hosts"),
        ("postgres://app@pg1:5432/users?target_session_attrs=writable", "must be one of"),
    ],
)
def test_a_bad_url_stops_start_up_with_one_line(url: str, problem: str, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_command(["--database-url", PG, "--events-direct-url", url], {})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--events-direct-url (USERS_EVENTS_DIRECT_URL)" in err
    assert problem in err


def test_refused_with_a_sqlite_database(capsys):
    with pytest.raises(SystemExit):
        parse_command(["--events-direct-url", "postgres://app@pg1:5432/users"], {})
    assert "only for a PostgreSQL --database-url" in capsys.readouterr().err


def test_one_host_needs_no_session_attrs():
    url = "postgres://app@pg1:5432/users"
    assert parse_command(["--database-url", PG, "--events-direct-url", url], {})[1]


def test_without_it_the_database_url_is_used_without_its_pool_options():
    assert session_dsn(PG) == "postgresql://app:secret@bouncer:6432/users"
    assert session_dsn(PG, "") == "postgresql://app:secret@bouncer:6432/users"


def test_with_it_the_direct_url_is_used_query_and_all():
    assert session_dsn(PG, DIRECT) == DIRECT
    direct = "postgres://app@pg1:5432/users?application_name=feed"
    assert session_dsn(PG, direct) == "postgresql://app@pg1:5432/users?application_name=feed"


def test_each_host_of_a_multi_host_dsn_gets_a_dsn_of_its_own_in_order():
    assert host_dsns(DIRECT) == [
        "postgresql://app:secret@pg1:5432/users?target_session_attrs=read-write",
        "postgresql://app:secret@pg2:5433/users?target_session_attrs=read-write",
    ]
    assert host_dsns("postgresql://pg1/users") == ["postgresql://pg1/users"]


async def test_each_connection_tries_the_hosts_in_turn_until_one_fits(monkeypatch):
    tried: list[str] = []
    fits = {"pg2:5433"}

    async def connect(dsn: str, **_: float) -> Any:
        tried.append(dsn.split("@")[1].split("/")[0])
        if tried[-1] not in fits:
            raise OSError("refused")
        return tried[-1]

    monkeypatch.setattr(asyncpg, "connect", connect)
    assert str(await dedicated_connection(DIRECT)) == "pg2:5433"
    assert tried == ["pg1:5432", "pg2:5433"]
    # After a failover the next connection looks again from the first host.
    tried.clear()
    fits = {"pg1:5432"}
    assert str(await dedicated_connection(DIRECT)) == "pg1:5432"
    fits = set()
    with pytest.raises(OSError, match="refused"):
        await dedicated_connection(DIRECT)
