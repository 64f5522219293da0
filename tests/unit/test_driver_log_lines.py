"""During an outage a driver's traceback about a lost connection becomes one log line."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from service.db.database import Database


@pytest.fixture(autouse=True)
def _postgres_database() -> None:
    # Making a PostgreSQL Database installs the filter (nothing connects yet).
    Database("postgres://nobody@127.0.0.1:1/none")


def _log(name: str, error: BaseException, message: str) -> None:
    try:
        raise error
    except BaseException:
        logging.getLogger(name).warning(message, exc_info=True)


@pytest.mark.parametrize(
    ("logger", "error", "next_step"),
    [
        ("asyncpg.pool", ConnectionRefusedError(111, "Connect call failed"), "retries by itself"),
        (
            "asyncio",
            asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
            "calls meanwhile get UNAVAILABLE",
        ),
    ],
)
def test_a_lost_connection_is_logged_on_one_line_saying_what_happens_next(
    caplog, logger, error, next_step
):
    caplog.set_level(logging.WARNING)
    _log(logger, error, "Failed to restore the pool connection floor; retrying")
    [record] = [r for r in caplog.records if r.name == logger]
    line = logging.Formatter("%(message)s").format(record)
    assert "\n" not in line, line
    assert "Traceback" not in line
    assert type(error).__name__ in line
    assert next_step in line


def test_any_other_error_keeps_its_traceback(caplog):
    caplog.set_level(logging.WARNING)
    _log("asyncio", ValueError("a bug"), "Task exception was never retrieved")
    [record] = [r for r in caplog.records if r.name == "asyncio"]
    line = logging.Formatter("%(message)s").format(record)
    assert "Traceback" in line
    assert "ValueError: a bug" in line
