"""Access log and Prometheus metrics for every call.

The access log is one JSON object per line on stderr: method, status code,
duration, peer and process id. Requests and responses are never logged, so a
password, hash or page token cannot end up in it. Metric names follow the
conventions of go-grpc-prometheus so that existing dashboards work.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    Handler = grpc.RpcMethodHandler[Any, Any]

__all__ = ["Metrics", "ObservabilityInterceptor", "configure_access_log", "silence_query_logs"]

access_log = logging.getLogger("service.access")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


# Libraries that log every query or call with its parameters at DEBUG; those
# parameters include password hashes, so they never log below INFO.
_CHATTY_LOGGERS = ("tortoise", "tortoise.db_client", "aiosqlite", "asyncpg", "passlib")


def silence_query_logs() -> None:
    """Keep SQL parameters (password hashes among them) out of every log."""
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def configure_access_log() -> None:
    """Send access-log lines, already JSON, to stderr as they are."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.handlers[:] = [handler]
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


class Metrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self, pool_stats: Callable[[], dict[str, int] | None]) -> None:
        self.registry = CollectorRegistry()
        labels = ("grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started_total", "Calls started.", labels, registry=self.registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Calls completed, by status code.",
            (*labels, "grpc_code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of a call to its status.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "grpc_server_in_flight_calls", "Calls being served now.", registry=self.registry
        )
        self.database_up = Gauge(
            "users_database_up",
            "1 while the database answers the health probe, 0 otherwise.",
            registry=self.registry,
        )
        self.registry.register(_PoolCollector(pool_stats))


class _PoolCollector:
    """Reads the database pool's use at scrape time."""

    def __init__(self, pool_stats: Callable[[], dict[str, int] | None]) -> None:
        self._pool_stats = pool_stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._pool_stats()
        if stats is None:
            return
        family = GaugeMetricFamily(
            "users_db_pool_connections", "Database pool connections by state.", labels=["state"]
        )
        for state, value in stats.items():
            family.add_metric([state], value)
        yield family


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Times every unary call and records its outcome in the access log and metrics."""

    def __init__(self, metrics: Metrics | None, *, log_calls: bool) -> None:
        self._metrics = metrics
        self._log_calls = log_calls

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        full_method: str = handler_call_details.method
        service, _, method = full_method.lstrip("/").rpartition("/")
        metrics, log_calls, pid = self._metrics, self._log_calls, os.getpid()

        async def observed(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            if metrics is not None:
                metrics.started.labels(service, method).inc()
                metrics.in_flight.inc()
            try:
                response = await behavior(request, context)
                code = grpc.StatusCode.OK
                return response
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except BaseException:
                code = grpc.StatusCode.CANCELLED if context.cancelled() else code
                raise
            finally:
                elapsed = time.perf_counter() - start
                if metrics is not None:
                    metrics.in_flight.dec()
                    metrics.handled.labels(service, method, code.name).inc()
                    metrics.latency.labels(service, method).observe(elapsed)
                if log_calls:
                    access_log.info(
                        json.dumps(
                            {
                                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "method": full_method,
                                "code": code.name,
                                "duration_ms": round(elapsed * 1000, 3),
                                "peer": context.peer(),
                                "pid": pid,
                            }
                        )
                    )

        wrapped: Handler = handler._replace(unary_unary=observed)  # type: ignore[attr-defined]
        return wrapped
