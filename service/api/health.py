"""grpc.health.v1.Health whose Watch streams end once shutdown begins.

grpc's own aio HealthServicer tells watchers NOT_SERVING on shutdown but keeps
their streams open, and an open stream makes ``server.stop(grace)`` wait for
the whole grace period. Here a watcher is told NOT_SERVING and then its stream
ends, so shutdown takes as long as the real in-flight calls and no longer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["HealthServicer"]

# A HealthCheckResponse.ServingStatus value.
Status = int
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self._statuses: dict[str, Status] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._shutting_down = False

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "Unknown service.")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: Status | None = None
        async with self._changed:
            while True:
                status = self._statuses.get(request.service, SERVICE_UNKNOWN)
                if status != last:
                    yield health_pb2.HealthCheckResponse(status=status)
                    last = status
                if self._shutting_down:
                    return
                await self._changed.wait()

    async def set(self, service: str, status: Status) -> None:
        """Set a service's status; ignored once shutdown has begun."""
        if self._shutting_down:
            return
        async with self._changed:
            self._statuses[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; watchers hear it and their streams end."""
        async with self._changed:
            self._shutting_down = True
            for service in self._statuses:
                self._statuses[service] = NOT_SERVING
            self._changed.notify_all()
