"""A traced server-streaming method: one span for the whole stream, status at its end."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.api.tracing import Tracing
from service.db.tracing import database_tracer

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]


class FakeContext:
    def __init__(self, code: grpc.StatusCode | None) -> None:
        self._code = code
        self.written: list[Any] = []

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def code(self) -> grpc.StatusCode | None:
        return self._code

    async def write(self, message: Any) -> None:
        self.written.append(message)


class Watcher:
    """Stands in for a Health servicer: unary Check and List, streaming Watch.

    Methods reach the tracing wrapper as the registry hands them over:
    coroutines, a stream writing its messages to the context.
    """

    def __init__(self) -> None:
        self.tracers_seen: list[object] = []

    async def Check(self, request: Any, context: Any) -> str:
        self.tracers_seen.append(database_tracer.get())
        return "checked"

    async def List(self, request: Any, context: Any) -> str:
        return "listed"

    async def Watch(self, request: Any, context: Any) -> None:
        for item in ("a", "b"):
            self.tracers_seen.append(database_tracer.get())
            await context.write(item)


def _unchanged(service: str, method: str, behavior: Any) -> Any:
    return behavior


async def test_a_stream_is_one_span_without_database_children_and_a_call_is_one_with():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    servicer = Watcher()
    wrap = Tracing(provider).around(_unchanged)
    watch = wrap(HEALTH.full_name, "Watch", servicer.Watch)
    check = wrap(HEALTH.full_name, "Check", servicer.Check)

    stream_context = FakeContext(grpc.StatusCode.CANCELLED)
    await watch(None, stream_context)
    assert stream_context.written == ["a", "b"]
    assert servicer.tracers_seen == [None, None], "a stream's queries make no spans"
    assert await check(None, FakeContext(None)) == "checked"
    assert servicer.tracers_seen[-1] is not None, "a call's queries do"

    spans = exporter.get_finished_spans()
    assert [(s.name, s.kind) for s in spans] == [
        ("/grpc.health.v1.Health/Watch", SpanKind.SERVER),
        ("/grpc.health.v1.Health/Check", SpanKind.SERVER),
    ]
    codes = [s.attributes["rpc.grpc.status_code"] for s in spans if s.attributes]
    assert codes == [grpc.StatusCode.CANCELLED.value[0], grpc.StatusCode.OK.value[0]]
