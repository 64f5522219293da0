"""What the server serves, every method of it behind the call guard.

UserService, grpc.health.v1 and reflection are added through a
``GuardedRegistry``: a served method that escaped the guard stops the server
before it binds, instead of serving a call without authorization, limits or
metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.api.authz import OPEN_SERVICES, Authorizer, open_authorizer
from service.api.calls import Admission, CallGuard
from service.api.registration import GuardedRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

    import grpc.aio

    from service.api.deferred import DeferredServicer
    from service.api.health import HealthServicer
    from service.api.observability import Metrics
    from service.api.registration import Wrap
    from service.api.tracing import Tracing
    from service.config import Settings
    from service.domain.errors import UsersError

__all__ = [
    "SERVED_SERVICES",
    "SERVICE_NAME",
    "USER_SERVICE",
    "open_user_service_authorizer",
    "register_services",
]

USER_SERVICE = user_service_pb2.DESCRIPTOR.services_by_name["UserService"]
SERVICE_NAME: str = USER_SERVICE.full_name
SERVED_SERVICES = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)


async def open_user_service_authorizer(settings: Settings, metrics: Metrics) -> Authorizer | None:
    """The authorizer for UserService's methods, or None when authorization is off."""
    methods = {f"/{SERVICE_NAME}/{method.name}" for method in USER_SERVICE.methods}
    return await open_authorizer(settings, methods=methods, registry=metrics.registry)


def register_services(
    server: grpc.aio.Server,
    *,
    servicer: DeferredServicer,
    health_servicer: HealthServicer,
    classify: Callable[[BaseException], UsersError | None],
    metrics: Metrics,
    log_calls: bool,
    authorizer: Authorizer | None,
    tracing: Tracing | None,
    admission: Admission | None = None,
) -> None:
    """Add every service through the call guard; refuse to go on if a method escaped it."""
    guard = CallGuard(
        classify, metrics, log_calls=log_calls, authorizer=authorizer, admission=admission
    )
    wrap: Wrap = guard.wrap
    if tracing is not None:
        # Outside the guard, so that a span sees the status the guard sets.
        wrap = tracing.around(guard.wrap)
    registry = GuardedRegistry(server, wrap, open_services=OPEN_SERVICES)
    # It has every method of the generated servicer, set on the instance.
    front = cast("user_service_pb2_grpc.UserServiceServicer", servicer)
    # The generated functions only call the two add_* methods the registry has.
    target = cast("grpc.aio.Server", registry)
    user_service_pb2_grpc.add_UserServiceServicer_to_server(front, target)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, target)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        # The public alias of the aio servicer; mypy does not see it re-exported.
        reflection.aio.ReflectionServicer(SERVED_SERVICES),  # type: ignore[attr-defined]
        target,
    )
    registry.verify(SERVED_SERVICES)
