"""Who is acting: the principal of the current call, in the domain's vocabulary.

The call wrapper (``service.api.calls``) sets the actor for the duration of
each call; the database layer reads it where it records a write (the change
feed's ``actor``). It travels as a context variable holding a plain value, not
as a parameter of every use case: every write already runs inside the one call
task that set it, and a new write path cannot forget to pass it along.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["ANONYMOUS", "Actor", "acting_as", "current_actor"]


@dataclass(frozen=True, slots=True)
class Actor:
    """The verified principal of a call (a SPIFFE ID or a JWT ``sub``).

    Empty when authorization is off or for work the service does on its own
    behalf (``purge`` from the command line).
    """

    principal: str = ""


ANONYMOUS = Actor()

_current: contextvars.ContextVar[Actor] = contextvars.ContextVar("users_actor", default=ANONYMOUS)


def current_actor() -> Actor:
    """The actor of the call this code runs in, ANONYMOUS outside any call."""
    return _current.get()


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Make ``actor`` the current actor inside the block (and tasks it starts)."""
    token = _current.set(actor)
    try:
        yield
    finally:
        _current.reset(token)
