"""What traces cost per call: GetUser with tracing off and on, in the same block.

Two servers over the same database, idle while the other is measured: one
untraced, one with ``OTEL_TRACES_EXPORTER=otlp`` exporting every call's spans
(sampler always on, the SDK's default batching) over OTLP/gRPC to a sink in
this process that counts and drops them, as a collector would receive them.
Untraced and traced runs take turns, starting and ending untraced, and each
traced run is compared with the median of the untraced ones, so that a drift
of the shared machine's load weighs on both alike. Reported: the
traced throughput as a share of the untraced, and the difference in server
CPU per call, which is the trace overhead per call.
"""

from __future__ import annotations

import os
import statistics
import threading
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from users.v1 import user_service_pb2 as pb

from bench.server import ServerProcess, free_port

if TYPE_CHECKING:
    from bench.report import Result
    from bench.run import Backend, Bench

__all__ = ["TRACED", "run_tracing"]

TRACED = "get_user_traced"
UNTRACED = "get_user_untraced"
ROUNDS = 2


class OtlpSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that counts spans and keeps nothing."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def Export(self, request: Any, context: Any) -> Any:
        count = sum(
            len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans
        )
        with self._lock:
            self.spans += count
        return trace_service_pb2.ExportTraceServiceResponse()

    def __enter__(self) -> OtlpSink:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop(0)


def cpu_ms_per_call(result: Result) -> float | None:
    if not result.server_cpu or not result.calls_per_s:
        return None
    return result.server_cpu / result.calls_per_s * 1000


def run_tracing(bench: Bench, backend: Backend) -> None:
    config, name = bench.config, backend.name
    if not config.wants(TRACED):
        return
    bench.block = f"{name} tracing"
    request = pb.GetUserRequest(id=backend.seed.middle_id)
    with OtlpSink() as sink:
        untraced = bench.server(f"service-{name}-untraced", backend.url)
        port = free_port()
        target = f"127.0.0.1:{port}"
        otel = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink.port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_TRACES_SAMPLER": "always_on",
        }
        traced = ServerProcess(
            f"service-{name}-traced",
            bench.service_argv(target, backend.url),
            bench.work / f"service-{name}-traced.log",
            port,
            env={**os.environ, **otel},
        )
        untraced.start(health=True)
        traced.start(health=True)
        try:
            untraced_runs: list[Result] = []
            traced_runs: list[Result] = []

            def off(r: Result) -> None:
                bench.h2(r, untraced, "GetUser", request)
                untraced_runs.append(r)

            def on(r: Result) -> None:
                before = sink.spans
                bench.h2(r, traced, "GetUser", request)
                r.extra["spans_exported"] = sink.spans - before
                traced_runs.append(r)

            # Off and on in turns, starting and ending off, so that the load of
            # the shared machine weighs on both alike.
            for round_ in range(ROUNDS):
                bench.scenario(
                    UNTRACED, f"GetUser, tracing off ({round_ + 1})", name, off, force=True
                )
                bench.scenario(TRACED, f"GetUser, traced ({round_ + 1}), OTLP every call", name, on)
            bench.scenario(UNTRACED, f"GetUser, tracing off ({ROUNDS + 1})", name, off, force=True)
            for result in traced_runs:
                _versus_untraced(result, untraced_runs)
            if traced_runs:
                bench.say(f"trace overhead [{name}]: {_summary(traced_runs)}")
        finally:
            traced.stop()
            untraced.stop()


def _versus_untraced(result: Result, untraced: list[Result]) -> None:
    """Compare with the median of the untraced runs (all of them, before and after)."""
    rates = [r.calls_per_s for r in untraced if r.calls_per_s]
    costs = [c for c in (cpu_ms_per_call(r) for r in untraced) if c is not None]
    if not rates or result.calls_per_s is None:
        return
    result.baseline = UNTRACED
    result.ratio = result.calls_per_s / statistics.median(rates)
    result.ratio_kind = "throughput"
    result.ratio_text = f"{result.ratio:.0%} of untraced"
    traced_cost = cpu_ms_per_call(result)
    if costs and traced_cost is not None:
        overhead = traced_cost - statistics.median(costs)
        result.extra["trace_overhead_cpu_ms_per_call"] = round(overhead, 4)
        result.ratio_text += f", {overhead:+.3f} ms CPU/call"


def _summary(traced: list[Result]) -> str:
    overheads = [r.extra.get("trace_overhead_cpu_ms_per_call") for r in traced]
    shown = ", ".join(f"{o:+.3f}" for o in overheads if o is not None)
    ratios = ", ".join(f"{r.ratio:.0%}" for r in traced if r.ratio is not None)
    return f"CPU per call {shown} ms; throughput {ratios} of untraced"
