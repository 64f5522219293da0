"""OpenTelemetry traces: one trace per call, the method and code, database child spans."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.api.tracing import Tracing
from service.testing import running_service
from tests.helpers import create_user, failure
from tests.ops_helpers import (
    eventually,
    free_port,
    service_environment,
    service_process,
    stub_of,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

GET_USER = "/users.v1.UserService/GetUser"


def in_memory() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_each_call_is_one_trace_with_its_method_code_and_database_spans(
    database_url, backend
):
    tracing, exporter = in_memory()
    async with running_service(database_url, tracing=tracing) as running:
        stub = stub_of(running)
        user = await create_user(stub)
        exporter.clear()
        await stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
        missing = await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=user.id + 1000)))
        assert missing.code == grpc.StatusCode.NOT_FOUND
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert [s.name for s in servers] == [GET_USER, GET_USER]
    assert [s.attributes["rpc.grpc.status_code"] for s in servers if s.attributes] == [
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.NOT_FOUND.value[0],
    ]
    traces = {s.context.trace_id for s in servers if s.context}
    assert len(traces) == 2, "one trace per call"
    # Every span belongs to one of the two calls: the health probe's queries
    # run outside calls and make none.
    assert {s.context.trace_id for s in spans if s.context} == traces
    system = {"sqlite": "sqlite", "postgres": "postgresql"}[backend]
    for server in servers:
        assert server.attributes is not None
        assert server.attributes["rpc.service"] == "users.v1.UserService"
        assert server.attributes["rpc.method"] == "GetUser"
        queries = children(spans, server)
        assert queries, f"no database span under {server.name}"
        for query in queries:
            assert query.kind == SpanKind.CLIENT
            assert query.attributes is not None
            assert query.attributes["db.system.name"] == system
        assert any(q.name == "SELECT users" for q in queries), [q.name for q in queries]
    assert len(spans) == len(servers) + sum(len(children(spans, s)) for s in servers)


async def test_a_write_traces_its_statements_and_transaction(database_url):
    tracing, exporter = in_memory()
    async with running_service(database_url, tracing=tracing) as running:
        stub = stub_of(running)
        user = await create_user(stub)
        exporter.clear()
        await stub.Deposit(user_service_pb2.DepositRequest(user_id=user.id, amount=100))
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    names = [q.name for q in children(spans, server)]
    assert "COMMIT" in names, names
    assert any(n.startswith(("UPDATE users", "INSERT")) for n in names), names
    for span in spans:
        for attribute in (span.attributes or {}).values():
            assert "password" not in str(attribute).lower(), (span.name, attribute)


async def test_a_callers_traceparent_is_continued(database_url):
    tracing, exporter = in_memory()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with running_service(database_url, tracing=tracing) as running:
        await failure(
            stub_of(running).GetUser(
                user_service_pb2.GetUserRequest(id=7),
                metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),),
            )
        )
    (server,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.context is not None
    assert server.parent is not None
    assert format(server.context.trace_id, "032x") == trace_id
    assert format(server.parent.span_id, "016x") == parent_id
    assert server.parent.is_remote


async def test_tracing_is_off_unless_an_exporter_is_configured(database_url, monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    async with running_service(database_url) as running:
        assert running.server.tracing is None
        await failure(stub_of(running).GetUser(user_service_pb2.GetUserRequest(id=7)))


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP receiver: keeps the spans it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, str]]:
        """(service.name, span name) of every span received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope in resource_spans.scope_spans:
                    found += [(attributes.get("service.name", ""), s.name) for s in scope.spans]
        return found


async def test_the_otel_variables_configure_an_otlp_export_from_the_server_process(
    database_url, tmp_path
):
    collector = _Collector()
    receiver = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)  # type: ignore[no-untyped-call]
    port = receiver.add_insecure_port("127.0.0.1:0")
    await receiver.start()
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_SERVICE_NAME": "users-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    address = f"127.0.0.1:{free_port()}"
    try:
        async with service_process(
            "--database-url", database_url, listen=address, cwd=tmp_path,
            env=service_environment(**env),
        ) as running:  # fmt: skip
            await running.wait_serving()
            async with grpc.aio.insecure_channel(address) as channel:
                stub = user_service_pb2_grpc.UserServiceStub(channel)
                await failure(stub.GetUser(user_service_pb2.GetUserRequest(id=7)))

            async def exported() -> bool:
                return ("users-under-test", GET_USER) in collector.spans()

            await eventually(exported, within=20, what="the GetUser span reaches the collector")
            assert ("users-under-test", "SELECT users") in collector.spans()
            running.signal(signal.SIGTERM)
            assert await running.wait_exit() == 0, running.stderr
    finally:
        await receiver.stop(0)
