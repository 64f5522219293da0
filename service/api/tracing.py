"""OpenTelemetry traces of the server, configured by the standard ``OTEL_*`` variables.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``,
or any registered under the ``opentelemetry_traces_exporter`` entry point),
and off with ``OTEL_SDK_DISABLED=true``. Off costs nothing per call: the
methods are not wrapped and neither is the database client.

When on, each call gets one SERVER span, as opentelemetry-instrumentation-grpc
would make it (name, ``rpc.*`` attributes, status code), continuing a
caller's W3C ``traceparent`` (or any propagator of ``OTEL_PROPAGATORS``),
with a CLIENT child span per database statement (``service.db.tracing``).
The span is made by wrapping each method where it is registered rather than by that
package's grpc.aio interceptor: in back-to-back ``make bench`` runs, the
interceptor cost +0.43 to +0.52 ms of CPU per GetUser and the wrapper +0.28
to +0.30 ms, and about 0.2 ms was grpc.aio's interception pipeline, which
any interceptor turns on for every call.
The rest comes from the SDK's own
variables: ``OTEL_SERVICE_NAME`` (default ``users-service``),
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and its argument,
``OTEL_EXPORTER_OTLP_*`` and ``OTEL_BSP_*``.
"""

from __future__ import annotations

import contextlib
import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pool
from opentelemetry import propagate
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from service.db import tracing as db_tracing

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping

    from opentelemetry.trace import Tracer

    Behavior = Callable[[Any, Any], Awaitable[Any]]
    Wrap = Callable[[str, str, Behavior], Behavior]

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
    """The tracer provider of one server, and the wrappers that trace its calls."""

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

    def around(self, wrap: Wrap) -> Wrap:
        """A method wrapper that puts a span around what ``wrap`` makes of each method.

        The server registers every method through one wrapper (the call
        guard, see ``service.api.registration``); this one goes outside it, so
        that a span sees the status the guard sets. Streaming methods reach it
        as coroutines that write their messages, like unary ones.
        """
        db_tracing.install()
        pool = descriptor_pool.Default()
        tracer = self._tracer

        def traced_wrap(service: str, method: str, behavior: Behavior) -> Behavior:
            inner = wrap(service, method, behavior)
            descriptor = pool.FindServiceByName(service).methods_by_name[method]
            full_method = f"/{service}/{method}"
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
            # A stream may last hours: its span gives its length and status,
            # without a child for every query it makes meanwhile.
            database = not (descriptor.server_streaming or descriptor.client_streaming)

            async def traced(request: Any, context: Any) -> Any:
                with _server_span(tracer, full_method, attributes, context, database=database):
                    return await inner(request, context)

            return traced

        return traced_wrap

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


@contextlib.contextmanager
def _server_span(
    tracer: Tracer,
    full_method: str,
    attributes: dict[str, str],
    context: Any,
    *,
    database: bool = True,
) -> Iterator[None]:
    """One call's SERVER span, continuing the caller's trace; database spans join it.

    Named and attributed as OpenTelemetry's RPC conventions (and its grpc
    instrumentation) do. The status code is read from ``context.code()``
    once the call is over: the call guard sets it with ``abort_with_status``.
    """
    parent = propagate.extract(dict(context.invocation_metadata() or ()))
    with tracer.start_as_current_span(
        full_method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        token = db_tracing.database_tracer.set(tracer if database else None)
        try:
            yield
        finally:
            db_tracing.database_tracer.reset(token)
            code = context.code() or grpc.StatusCode.OK
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, code.name))
