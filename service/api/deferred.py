"""The UserService registered before the database answers, UNAVAILABLE until it does.

A grpc.aio server takes its servicers before it starts and cannot add one
later, while the real servicer needs the database (its page-token key lives
there). The server can still start at once, so that health checks and calls
get a clear answer while the database is away at start-up: it registers this
stand-in, whose methods raise ``DatabaseUnavailable`` until ``attach()`` hands
them the real servicer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.domain.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from google.protobuf.descriptor import ServiceDescriptor

__all__ = ["DeferredServicer"]


class DeferredServicer:
    """Every method of ``service``, each forwarding to the attached servicer."""

    def __init__(self, service: ServiceDescriptor) -> None:
        self._target: object | None = None
        for method in service.methods:
            setattr(self, method.name, self._route(method.name))

    def attach(self, servicer: object) -> None:
        """From now on every call goes to ``servicer``."""
        self._target = servicer

    def _route(self, name: str) -> Callable[[Any, Any], Awaitable[Any]]:
        async def call(request: Any, context: Any) -> Any:
            target = self._target
            if target is None:
                raise DatabaseUnavailable()
            return await getattr(target, name)(request, context)

        call.__name__ = name
        return call
