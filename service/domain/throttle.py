"""Brute-force throttling of password checks, per login name or account.

After ``max_failures`` unsuccessful attempts in a row, each further attempt
must wait: the lockout starts at ``base_delay`` and doubles with every attempt
that fails after it, up to ``max_delay``. A success forgets everything; so do
``window`` seconds without an attempt. Attempts are counted when they *start*,
not when they fail, so a burst of parallel guesses cannot slip past the
limit while the first ones are still hashing: the N-th attempt already sets
the lockout that the (N+1)-th meets, and a success lifts it.

Keys are digests of what the caller named: the normalised username or email
for AuthenticateUser, the user id for ChangePassword. A name that belongs to
no account is counted exactly like one that does, so the throttle tells an
attacker nothing about which accounts exist. The price: an account's username
and its email are separate counters (linking them would reveal that they
belong together), so a guesser gets at most twice the attempts per window.
A refused attempt writes nothing and hashes nothing, and answers as fast for
an unknown name as for a known one.

The state lives in the database (``service.db.throttle``), so it holds across
restarts, workers and replicas. OWASP's Authentication Cheat Sheet
("Protect Against Automated Attacks") is the reference for the policy.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace

from service.db import throttle as throttle_db
from service.domain.entities import Attempts
from service.domain.errors import TooManyAttempts

__all__ = ["Decision", "LoginThrottle", "ThrottlePolicy", "account_key", "login_key", "next_state"]


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    max_failures: int = 5  # 0 turns throttling off
    window: float = 3600.0
    base_delay: float = 1.0
    max_delay: float = 900.0

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    state: Attempts
    retry_after_ms: int = 0


def next_state(state: Attempts | None, now_ms: int, policy: ThrottlePolicy) -> Decision:
    """Whether an attempt may go ahead, and the state it leaves behind."""
    if state is not None and state.blocked_until_ms > now_ms:
        return Decision(False, state, state.blocked_until_ms - now_ms)
    window_ms = int(policy.window * 1000)
    if state is None or now_ms - max(state.last_attempt_ms, state.blocked_until_ms) > window_ms:
        state = Attempts(failures=0, delay_ms=0, blocked_until_ms=0, last_attempt_ms=now_ms)
    failures = state.failures + 1
    delay_ms, blocked_until_ms = state.delay_ms, 0
    if failures >= policy.max_failures:
        # Lock out in advance: should this attempt fail, the next one waits.
        base_ms, max_ms = int(policy.base_delay * 1000), int(policy.max_delay * 1000)
        delay_ms = base_ms if delay_ms == 0 else min(delay_ms * 2, max_ms)
        blocked_until_ms = now_ms + delay_ms
    return Decision(
        True,
        replace(
            state,
            failures=failures,
            delay_ms=delay_ms,
            blocked_until_ms=blocked_until_ms,
            last_attempt_ms=now_ms,
        ),
    )


def login_key(kind: str, identity: str) -> str:
    """The key of a login name, given as its identity key (every spelling alike)."""
    return _digest(kind, identity)


def account_key(user_id: int) -> str:
    return _digest("account", str(user_id))


def _digest(kind: str, value: str) -> str:
    # A fixed-size key whatever the input's length; names are not kept in clear.
    return hashlib.sha256(f"{kind}\0{value}".encode("utf-8", "surrogatepass")).hexdigest()


class LoginThrottle:
    """Counts password checks per key and refuses them while a key is locked out."""

    def __init__(self, policy: ThrottlePolicy) -> None:
        self.policy = policy

    async def admit(self, key: str) -> None:
        """Count an attempt; raises TooManyAttempts while the key is locked out."""
        if not self.policy.enabled:
            return
        decision = await throttle_db.admit(
            key,
            _now_ms(),
            lambda state, now: next_state(state, now, self.policy),
            window_ms=int(self.policy.window * 1000),
        )
        if not decision.allowed:
            raise TooManyAttempts(decision.retry_after_ms / 1000)

    async def succeeded(self, key: str) -> None:
        """Forget the key's failures after a successful check."""
        if self.policy.enabled:
            await throttle_db.forget(key)


def _now_ms() -> int:
    return int(time.time() * 1000)
