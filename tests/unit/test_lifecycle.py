"""Lifecycle rules without a server: etags, the state table, and refusing inactive logins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from service.db import users as users_db
from service.domain.entities import Credentials, User
from service.domain.errors import InvalidCredentials, InvalidEtag
from service.domain.lifecycle import STATE_CHANGES, State, etag_of, parse_etag
from service.domain.passwords import Verification
from service.domain.throttle import LoginThrottle, ThrottlePolicy
from service.domain.users import Accounts


def test_an_etag_names_the_version_it_was_made_from():
    assert parse_etag(etag_of(42, 7), 42) == 7
    assert parse_etag(etag_of(42, 10**17), 42) == 10**17


def test_an_empty_etag_means_unconditional():
    assert parse_etag("", 42) is None


def test_an_etag_in_http_quotes_is_read_like_a_bare_one():
    assert parse_etag(f'"{etag_of(42, 3)}"', 42) == 3


def test_etags_differ_between_users_and_versions():
    assert etag_of(1, 2) != etag_of(2, 2)
    assert etag_of(1, 2) != etag_of(1, 3)


@pytest.mark.parametrize(
    "etag", ["x", "7", "7-", "-7-abcdefabcdef", "0-000000000000", "7-abcdefabcdeg", " 7-abc"]
)
def test_an_etag_this_service_did_not_make_is_invalid(etag):
    with pytest.raises(InvalidEtag) as raised:
        parse_etag(etag, 42, "user.etag")
    assert [v.field for v in raised.value.violations] == ["user.etag"]


def test_another_users_etag_is_invalid():
    with pytest.raises(InvalidEtag):
        parse_etag(etag_of(43, 1), 42)


def test_the_state_table():
    table = {
        name: (sorted(s.name for s in change.sources), change.target.name)
        for name, change in STATE_CHANGES.items()
    }
    assert table == {
        "DisableUser": (["ACTIVE", "LOCKED"], "DISABLED"),
        "EnableUser": (["DISABLED"], "ACTIVE"),
        "LockUser": (["ACTIVE"], "LOCKED"),
        "UnlockUser": (["LOCKED"], "ACTIVE"),
    }
    # No state method reaches or leaves DELETED: only DeleteUser and UndeleteUser do.
    assert all(State.DELETED not in c.sources | {c.target} for c in STATE_CHANGES.values())


class RecordingHasher:
    """Says every password is right, and records what it was asked to verify."""

    def __init__(self) -> None:
        self.verified: list[str | None] = []

    async def verify(self, password: str, stored_hash: str | None) -> Verification:
        self.verified.append(stored_hash)
        return Verification(ok=True, new_hash="$argon2id$upgraded")


def _credentials(state: State) -> Credentials:
    now = datetime.now(UTC)
    user = User(1, "ann", "ann@example.com", "", 0, now, now, state=state)
    return Credentials(user, "$2b$stored")


@pytest.mark.parametrize("state", [State.DISABLED, State.LOCKED, State.DELETED])
async def test_an_inactive_user_is_refused_after_the_same_verification_as_anyone(
    monkeypatch: pytest.MonkeyPatch, state: State
):
    hasher = RecordingHasher()
    rehashed: list[Any] = []

    async def find_credentials(**_: str) -> Credentials:
        return _credentials(state)

    async def replace_password_hash(*args: Any, **kwargs: Any) -> bool:
        rehashed.append(args)
        return True

    monkeypatch.setattr(users_db, "find_credentials", find_credentials)
    monkeypatch.setattr(users_db, "replace_password_hash", replace_password_hash)
    unthrottled = LoginThrottle(ThrottlePolicy(max_failures=0))
    accounts = Accounts(hasher, page_tokens=None, throttle=unthrottled)  # type: ignore[arg-type]

    with pytest.raises(InvalidCredentials):
        await accounts.authenticate("ann", "the right password")

    # The real stored hash was verified (as for an active user), and a
    # refused login upgrades nothing.
    assert hasher.verified == ["$2b$stored"]
    assert rehashed == []
