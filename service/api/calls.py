"""The one wrapper every call runs in.

It admits the call under the process's limit of calls at once (``Admission``),
checks the caller against the authorization policy (``service.api.authz``)
and runs the call as that principal (``service.domain.actor``); it turns
domain errors into statuses (and any other exception into INTERNAL, or
UNAVAILABLE for a lost database), and times, counts and logs the call.
``service.api.registration`` applies it to every method of every service.
It is applied to the servicer's methods when they are registered rather than
as a ``grpc.aio.ServerInterceptor``: an interceptor cannot see handler
exceptions without wrapping the handler anyway, and grpc.aio runs its
interception pipeline on every call, which cost about 0.2 ms of CPU per call
here, close to half of what a bare grpc.aio call costs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from service.api.access_lines import log_call
from service.api.status import internal_status, to_status
from service.domain.actor import Actor, acting_as
from service.domain.errors import TooManyCalls, UsersError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from service.api.authz import Authorizer
    from service.api.observability import Metrics

    Behavior = Callable[[Any, Any], Awaitable[Any]]

__all__ = ["Admission", "CallGuard"]

log = logging.getLogger("service.errors")


class Admission:
    """The calls being served by this process, against its limit (``--max-concurrent-rpcs``).

    One count for all the process's gRPC servers (``service.listening``):
    grpc.aio's own limit is per server. Calls over it are refused with
    RESOURCE_EXHAUSTED before any work; health checks are not counted.
    """

    __slots__ = ("limit", "serving")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.serving = 0


class CallGuard:
    def __init__(
        self,
        classify: Callable[[BaseException], UsersError | None],
        metrics: Metrics | None,
        *,
        log_calls: bool,
        authorizer: Authorizer | None = None,
        admission: Admission | None = None,
    ) -> None:
        # Maps a non-domain exception (a lost database connection, say) to a
        # domain error, or returns None when it is a genuine fault.
        self._classify = classify
        self._metrics = metrics
        self._log_calls = log_calls
        self._authorizer = authorizer
        self._admission = admission

    def wrap(self, service: str, method: str, behavior: Behavior) -> Behavior:
        full_method = f"/{service}/{method}"
        classify, metrics, log_calls, pid = (
            self._classify,
            self._metrics,
            self._log_calls,
            os.getpid(),
        )
        authorizer, admission = self._authorizer, self._admission
        if metrics is not None:
            started = metrics.started.labels(service, method)
            latency = metrics.latency.labels(service, method)

        async def guarded(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            caller = ""
            admitted = False
            if metrics is not None:
                started.inc()
                metrics.in_flight.inc()
            try:
                if admission is not None:
                    if admission.serving >= admission.limit:
                        raise TooManyCalls(admission.limit)
                    admission.serving += 1
                    admitted = True
                if authorizer is None:
                    response = await behavior(request, context)
                else:
                    caller = authorizer.principal(context)
                    authorizer.check(caller, full_method)
                    with acting_as(Actor(caller)):
                        response = await behavior(request, context)
                code = grpc.StatusCode.OK
                return response
            except UsersError as error:
                status = to_status(error)
                code = status.code
                await context.abort_with_status(status)
            except grpc.aio.AbortError:
                code = context.code() or code
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                mapped = classify(error)
                if mapped is None:
                    log.exception("unexpected error in %s", full_method)
                    status = internal_status()
                else:
                    log.warning(
                        "%s failed: %s (%s)", full_method, mapped.reason, type(error).__name__
                    )
                    status = to_status(mapped)
                code = status.code
                await context.abort_with_status(status)
            finally:
                if admitted and admission is not None:
                    admission.serving -= 1
                elapsed = time.perf_counter() - start
                if metrics is not None:
                    metrics.in_flight.dec()
                    metrics.handled.labels(service, method, code.name).inc()
                    latency.observe(elapsed)
                if log_calls:
                    log_call(full_method, code.name, elapsed, context.peer(), caller, pid)

        return guarded
