"""What a test needs from the machine, and what happens when it is missing.

A developer without PostgreSQL, NATS or the tools for a private cluster gets
a skip that says what is missing. CI sets ``USERS_TEST_STRICT=1``: there a
missing requirement fails the test with the same reason, so that a machine
without, say, ``initdb`` cannot turn the fault tests green by skipping them.

Use ``require(...)`` for anything a test needs and may not find::

    from tests.requirements import require

    url = os.environ.get("USERS_TEST_NATS_URL") or require("NATS", "USERS_TEST_NATS_URL is unset")

``not_applicable(...)`` is for the other kind of skip: a case that cannot
mean anything on this backend (row locks on SQLite) while its sibling case
runs; it skips in every mode. Under ``USERS_TEST_STRICT`` any other skip,
such as a bare ``pytest.skip`` in a new test, fails too (``tests/conftest.py``).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = [
    "NOT_APPLICABLE",
    "POSTGRES_ENV",
    "STRICT_ENV",
    "not_applicable",
    "postgres_admin_url",
    "require",
    "strict",
]

STRICT_ENV = "USERS_TEST_STRICT"
POSTGRES_ENV = "USERS_TEST_POSTGRES_URL"
# How a skip that is no missing requirement begins; tests/conftest.py lets only these pass.
NOT_APPLICABLE = "not applicable:"


def strict() -> bool:
    """Whether a missing requirement fails the test (CI) instead of skipping it."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes"}


def require(what: str, reason: str) -> NoReturn:
    """Stop this test for want of ``what``: a skip, or under ``USERS_TEST_STRICT`` a failure."""
    message = f"needs {what}: {reason}"
    if strict():
        pytest.fail(f"{message} ({STRICT_ENV} is set: a missing requirement fails)", pytrace=False)
    pytest.skip(message)


def postgres_admin_url() -> str:
    """The URL of the shared test server's administrative database, or ``require`` it."""
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        require("PostgreSQL", f"{POSTGRES_ENV} is not set")
    return url


def not_applicable(reason: str) -> NoReturn:
    """Skip a case that has no meaning here (its other backend runs); never a failure."""
    pytest.skip(f"{NOT_APPLICABLE} {reason}")
