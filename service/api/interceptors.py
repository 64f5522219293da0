"""The interceptor that turns every exception a handler raises into a proper status.

A plain ``grpc.aio.ServerInterceptor`` never sees handler exceptions, so this
one wraps the handler itself. Without it an exception reaches the client as
UNKNOWN with its message, which can carry SQL and constraint names.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from service.api.status import internal_status, to_status
from service.domain.errors import UsersError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["ErrorInterceptor"]

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]

log = logging.getLogger("service.errors")


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, classify: Callable[[BaseException], UsersError | None]) -> None:
        # Maps a non-domain exception (a lost database connection, say) to a
        # domain error, or returns None when it is a genuine fault.
        self._classify = classify

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        method = handler_call_details.method
        classify = self._classify

        async def guarded(request: Any, context: Any) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except UsersError as error:
                await context.abort_with_status(to_status(error))
            except Exception as error:
                mapped = classify(error)
                if mapped is None:
                    log.exception("unexpected error in %s", method)
                    await context.abort_with_status(internal_status())
                else:
                    log.warning("%s failed: %s (%s)", method, mapped.reason, type(error).__name__)
                    await context.abort_with_status(to_status(mapped))

        wrapped: Handler = handler._replace(unary_unary=guarded)  # type: ignore[attr-defined]
        return wrapped
