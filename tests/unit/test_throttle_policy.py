"""The lockout policy as a pure function of the remembered state and the time."""

from __future__ import annotations

import pytest

from service.config import SettingError, Settings
from service.domain.throttle import ThrottlePolicy, account_key, login_key, next_state

POLICY = ThrottlePolicy(max_failures=3, window=60, base_delay=1, max_delay=5)


def run(times_ms: list[int], policy: ThrottlePolicy = POLICY) -> list[tuple[bool, int]]:
    """Attempts at these times, all failing: (allowed, retry_after_ms) of each."""
    state, seen = None, []
    for now in times_ms:
        decision = next_state(state, now, policy)
        seen.append((decision.allowed, decision.retry_after_ms))
        state = decision.state
    return seen


def test_the_first_attempts_pass_and_the_next_waits_the_base_delay():
    assert run([0, 10, 20, 30]) == [(True, 0), (True, 0), (True, 0), (False, 990)]


def test_each_attempt_after_a_lockout_doubles_it_up_to_the_maximum():
    state = None
    delays = []
    now = 0
    for _ in range(3):
        state = next_state(state, now, POLICY).state
    for _ in range(5):
        refused = next_state(state, now, POLICY)
        assert not refused.allowed
        delays.append(refused.retry_after_ms)
        now += refused.retry_after_ms
        state = next_state(state, now, POLICY).state
    assert delays == [1000, 2000, 4000, 5000, 5000]


def test_a_refused_attempt_changes_nothing():
    state = None
    for now in (0, 1, 2):
        state = next_state(state, now, POLICY).state
    refused = next_state(state, 3, POLICY)
    assert refused.state == state


def test_a_quiet_window_forgets_the_failures():
    assert run([0, 1, 60_002, 60_003, 60_004]) == [(True, 0)] * 5


def test_the_window_counts_from_the_end_of_a_lockout():
    slow = ThrottlePolicy(max_failures=1, window=10, base_delay=100, max_delay=1000)
    first = next_state(None, 0, slow).state
    # 100 s locked, then only 5 s quiet: the failure is still remembered.
    again = next_state(first, 105_000, slow)
    assert again.allowed
    assert again.state.delay_ms == 200_000


def test_keys_differ_by_kind_and_have_a_fixed_size():
    assert login_key("username_key", "bob") != login_key("email_key", "bob")
    assert login_key("username_key", "bob") != account_key(1)
    assert len(login_key("username_key", "b" * 10_000)) == 64


@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"auth_max_failures": -1}, "--auth-max-failures"),
        ({"auth_failure_window": 0}, "--auth-failure-window"),
        ({"auth_lockout_base": 0}, "--auth-lockout-base"),
        ({"auth_lockout_base": 10, "auth_lockout_max": 5}, "--auth-lockout-max"),
    ],
)
def test_bad_throttle_settings_name_the_flag(values, flag):
    with pytest.raises(SettingError, match=flag):
        Settings(**values)
