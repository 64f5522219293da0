"""Account lifecycle: states, the transitions between them, and etags.

States follow aip.dev/216. Only these methods change a state::

    DisableUser   ACTIVE, LOCKED -> DISABLED
    EnableUser    DISABLED       -> ACTIVE
    LockUser      ACTIVE         -> LOCKED
    UnlockUser    LOCKED         -> ACTIVE
    DeleteUser    ACTIVE, DISABLED, LOCKED -> DELETED
    UndeleteUser  DELETED        -> the state the user had before DeleteUser

Any other pair is INVALID_STATE_TRANSITION (a method's own target state
included: disabling a disabled user is refused, and the error's metadata names
the state, so a retrying caller can tell its first call succeeded).

Etags (aip.dev/154) are ``<version>-<check>``: the row's version, bumped by
every write, and a digest of user id and version. The digest is not a secret
(etags guard against lost updates, not against forgery); it makes an etag of
another user, or a made-up one, recognisable as such (INVALID_ARGUMENT)
instead of passing as a stale one.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
from dataclasses import dataclass

from service.domain.errors import InvalidEtag

__all__ = ["STATE_CHANGES", "State", "StateChange", "etag_of", "parse_etag"]


class State(enum.IntEnum):
    """users.v1.State, with the same numbers."""

    ACTIVE = 1
    DISABLED = 2
    LOCKED = 3
    DELETED = 4


@dataclass(frozen=True, slots=True)
class StateChange:
    """One state method: which states it applies to and the state it sets."""

    method: str
    sources: frozenset[State]
    target: State

    @property
    def allowed(self) -> str:
        """The source states in words, for error messages."""
        return " or ".join(s.name for s in sorted(self.sources))


STATE_CHANGES = {
    change.method: change
    for change in (
        StateChange("DisableUser", frozenset({State.ACTIVE, State.LOCKED}), State.DISABLED),
        StateChange("EnableUser", frozenset({State.DISABLED}), State.ACTIVE),
        StateChange("LockUser", frozenset({State.ACTIVE}), State.LOCKED),
        StateChange("UnlockUser", frozenset({State.LOCKED}), State.ACTIVE),
    )
}

_ETAG = re.compile(r"([1-9][0-9]{0,17})-([0-9a-f]{12})")


@functools.lru_cache(maxsize=4096)
def _check(user_id: int, version: int) -> str:
    # Cached: the same users are read again and again, and each read hashes.
    return hashlib.sha256(f"users.v1/users/{user_id}@{version}".encode()).hexdigest()[:12]


def etag_of(user_id: int, version: int) -> str:
    return f"{version}-{_check(user_id, version)}"


def parse_etag(etag: str, user_id: int, field: str = "etag") -> int | None:
    """The version an etag names, or None for no etag (an unconditional write).

    Raises InvalidEtag for an etag this service did not issue for this user.
    """
    if not etag:
        return None
    # Tolerate the HTTP quoting that some clients add to etags.
    match = _ETAG.fullmatch(etag.strip('"'))
    if match is None or match[2] != _check(user_id, int(match[1])):
        raise InvalidEtag(field, user_id)
    return int(match[1])
