"""OpenTelemetry traces of the server, configured by the standard ``OTEL_*`` variables.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``,
or any registered under the ``opentelemetry_traces_exporter`` entry point),
and off with ``OTEL_SDK_DISABLED=true``. Off costs nothing per call: no
interceptor is installed and the database is not wrapped.

When on, each call gets one SERVER span from opentelemetry-instrumentation-grpc's
grpc.aio interceptor, which continues a caller's W3C ``traceparent`` (or any
propagator of ``OTEL_PROPAGATORS``), with a CLIENT child span per database
statement (``service.db.tracing``). The rest comes from the SDK's own
variables: ``OTEL_SERVICE_NAME`` (default ``users-service``),
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and its argument,
``OTEL_EXPORTER_OTLP_*`` and ``OTEL_BSP_*``.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from service.db import tracing as db_tracing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from opentelemetry.trace import Tracer

    Handler = grpc.RpcMethodHandler[Any, Any]

__all__ = ["Tracing", "TracingConfigError"]

DEFAULT_SERVICE_NAME = "users-service"
# The codes that make a server span an error, per OpenTelemetry's gRPC conventions.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable names something that cannot be used."""


class Tracing:
    """The tracer provider of one server, and the interceptors that trace its calls."""

    def __init__(self, provider: TracerProvider, *, owned: bool = False) -> None:
        self.provider = provider
        # An owned provider was built here from the environment and is shut
        # down (flushing its spans) with the server; a given one is the caller's.
        self._owned = owned
        self._tracer = provider.get_tracer("service")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Tracing | None:
        """Tracing as the ``OTEL_*`` variables configure it, or None when they leave it off."""
        environ = os.environ if environ is None else environ
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
        names = [n for n in names if n and n != "none"]
        if not names:
            return None
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
        provider = TracerProvider(resource=resource)
        for name in names:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
        return cls(provider, owned=True)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
        """The server's interceptors: the call's span, then its status code and DB spans."""
        db_tracing.install()
        return [
            aio_server_interceptor(tracer_provider=self.provider),  # type: ignore[no-untyped-call]
            _CallOutcome(self._tracer),
        ]

    def close(self) -> None:
        if self._owned:
            self.provider.shutdown()


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    if name == "otlp":
        # As the SDK's own configurator reads it: the protocol picks the package.
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
        )
        name = _OTLP_BY_PROTOCOL.get(protocol.strip(), f"otlp ({protocol})")
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: no span exporter named {name!r}")
    return next(iter(found)).load()()


class _CallOutcome(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Inside the instrumentation's span: lets database spans join it, records the status code.

    The instrumentation learns the code from ``context.abort()``, but the
    service's call wrapper aborts with ``abort_with_status()`` (to send
    error details), which it does not see; ``context.code()`` does.
    """

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        tracer = self._tracer
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def traced(request: Any, context: Any) -> Any:
                token = db_tracing.database_tracer.set(tracer)
                try:
                    return await unary(request, context)
                finally:
                    db_tracing.database_tracer.reset(token)
                    _record_code(context.code() or grpc.StatusCode.OK)

            return handler._replace(unary_unary=traced)  # type: ignore[attr-defined,no-any-return]
        if handler.unary_stream is not None:
            stream: Any = handler.unary_stream  # an async generator under grpc.aio

            async def traced_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                token = db_tracing.database_tracer.set(tracer)
                try:
                    async for response in stream(request, context):
                        yield response
                finally:
                    db_tracing.database_tracer.reset(token)
                    _record_code(context.code() or grpc.StatusCode.OK)

            return handler._replace(unary_stream=traced_stream)  # type: ignore[attr-defined,no-any-return]
        return handler


def _record_code(code: grpc.StatusCode) -> None:
    span = trace.get_current_span()
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code.name))
