"""Errors about the caller rather than the request: who it is, and what it may call.

Beside the hierarchy of ``service.domain.errors``, mapped by the same table::

    UsersError
    ├── Unauthenticated
    │   └── CallerUnauthenticated  no verified principal (no client certificate, bad token)
    └── PermissionDenied
        └── CallerNotAllowed       the authorization policy does not let this principal call it
"""

from __future__ import annotations

from service.domain.errors import Unauthenticated, UsersError

__all__ = ["CallerNotAllowed", "CallerUnauthenticated", "PermissionDenied"]


class CallerUnauthenticated(Unauthenticated):
    reason = "CALLER_UNAUTHENTICATED"
    # The same call will be refused again until the caller brings a credential.
    retry_as_is = False

    def __init__(self, why: str = "") -> None:
        message = "This call needs a verified caller: a client certificate or a bearer token."
        super().__init__(f"{message} {why}" if why else message)


class PermissionDenied(UsersError):
    reason = "PERMISSION_DENIED"


class CallerNotAllowed(PermissionDenied):
    reason = "CALLER_NOT_ALLOWED"

    def __init__(self, principal: str, method: str) -> None:
        super().__init__(
            f"{principal} may not call {method}.",
            metadata={"method": method, "principal": principal},
        )
