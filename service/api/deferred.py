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

from service.api.status import to_status
from service.domain.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from google.protobuf.descriptor import ServiceDescriptor

__all__ = ["DeferredServicer"]


class DeferredServicer:
    """Every method of ``service``, each forwarding to the attached servicer."""

    def __init__(self, service: ServiceDescriptor) -> None:
        self._target: object | None = None
        for method in service.methods:
            route = self._stream if method.server_streaming else self._route
            setattr(self, method.name, route(method.name))

    def attach(self, servicer: object) -> None:
        """From now on every call goes to ``servicer``."""
        self._target = servicer

    def _stream(self, name: str) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def call(request: Any, context: Any) -> AsyncIterator[Any]:
            target = self._target
            if target is None:
                # No call wrapper around a stream maps the error: say it here.
                await context.abort_with_status(to_status(DatabaseUnavailable()))
            async for message in getattr(target, name)(request, context):
                yield message

        call.__name__ = name
        return call

    def _route(self, name: str) -> Callable[[Any, Any], Awaitable[Any]]:
        async def call(request: Any, context: Any) -> Any:
            target = self._target
            if target is None:
                raise DatabaseUnavailable()
            return await getattr(target, name)(request, context)

        call.__name__ = name
        return call
