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

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def code(self) -> grpc.StatusCode | None:
        return self._code


class Watcher:
    """Stands in for a Health servicer: unary Check and List, streaming Watch."""

    def __init__(self) -> None:
        self.tracers_seen: list[object] = []

    async def Check(self, request: Any, context: Any) -> str:
        self.tracers_seen.append(database_tracer.get())
        return "checked"

    async def List(self, request: Any, context: Any) -> str:
        return "listed"

    async def Watch(self, request: Any, context: Any) -> Any:
        for item in ("a", "b"):
            self.tracers_seen.append(database_tracer.get())
            yield item


async def test_a_stream_is_one_span_without_database_children_and_a_call_is_one_with():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    servicer = Watcher()
    Tracing(provider).trace_servicer(servicer, HEALTH)

    streamed = [item async for item in servicer.Watch(None, FakeContext(grpc.StatusCode.CANCELLED))]
    assert streamed == ["a", "b"]
    assert servicer.tracers_seen == [None, None], "a stream's queries make no spans"
    assert await servicer.Check(None, FakeContext(None)) == "checked"
    assert servicer.tracers_seen[-1] is not None, "a call's queries do"

    spans = exporter.get_finished_spans()
    assert [(s.name, s.kind) for s in spans] == [
        ("/grpc.health.v1.Health/Watch", SpanKind.SERVER),
        ("/grpc.health.v1.Health/Check", SpanKind.SERVER),
    ]
    codes = [s.attributes["rpc.grpc.status_code"] for s in spans if s.attributes]
    assert codes == [grpc.StatusCode.CANCELLED.value[0], grpc.StatusCode.OK.value[0]]
