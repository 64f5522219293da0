"""Access log and Prometheus metrics (recorded per call by ``service.api.calls``).

The access log is one JSON object per line on stderr: method, status code,
duration, peer and process id. Requests and responses are never logged, so a
password, hash or page token cannot end up in it. Metric names follow the
conventions of go-grpc-prometheus so that existing dashboards work.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    Handler = grpc.RpcMethodHandler[Any, Any]

__all__ = ["Metrics", "configure_access_log", "silence_query_logs"]

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
    """Send access-log lines, already JSON, to stderr as they are.

    A call only enqueues its line; a thread writes it. Writing (a syscall per
    line) on the event loop cost about as much CPU as a whole database read.
    """
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter("%(message)s"))
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(lines, writer)
    listener.start()
    # Flush what is queued when the process exits.
    atexit.register(listener.stop)
    access_log.handlers[:] = [logging.handlers.QueueHandler(lines)]
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
