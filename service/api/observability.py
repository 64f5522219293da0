"""Access log and Prometheus metrics (recorded per call by ``service.api.calls``).

The access log is one JSON object per line on stderr: method, status code,
duration, peer and process id. Requests and responses are never logged, so a
password, hash or page token cannot end up in it. Metric names follow the
conventions of go-grpc-prometheus so that existing dashboards work.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    Handler = grpc.RpcMethodHandler[Any, Any]

__all__ = ["Metrics", "configure_access_log", "multiprocess_mode", "silence_query_logs"]

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
    """Send access-log lines, already JSON, to stderr as they are, in batches."""
    writer = _BatchWriter(sys.stderr)
    atexit.register(writer.flush)
    access_log.handlers[:] = [writer]
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


class _BatchWriter(logging.Handler):
    """Collects lines and writes them together, at least every ``interval`` seconds.

    A write (and flush) per call, or a hand-over to a writer thread per call,
    cost about 0.3 ms of CPU per call here, as much as the rest of a GetUser.
    Batching makes it one write per batch; a crash loses at most the last
    ``interval`` of lines.
    """

    def __init__(self, stream: TextIO, interval: float = 0.2, max_lines: int = 512) -> None:
        super().__init__()
        self._stream = stream
        self._lines: list[str] = []
        self._max_lines = max_lines
        self._interval = interval
        threading.Thread(target=self._flush_often, name="access-log", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        # handle() holds self.lock around emit().
        self._lines.append(record.getMessage())
        if len(self._lines) >= self._max_lines:
            self._write()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        if self._lines:
            self._stream.write("\n".join(self._lines) + "\n")
            self._stream.flush()
            self._lines.clear()

    def _flush_often(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()


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
        # How gauges add up over workers in multiprocess mode (ignored otherwise).
        self.in_flight = Gauge(
            "grpc_server_in_flight_calls",
            "Calls being served now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.database_up = Gauge(
            "users_database_up",
            "1 while the database answers the health probe, 0 otherwise.",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self._pool_stats = pool_stats
        self._pool: Gauge | None = None
        if multiprocess_mode():
            # A scrape reaches the parent, which cannot ask the workers: each
            # worker writes its pool's use at every health probe instead.
            self._pool = Gauge(
                "users_db_pool_connections",
                "Database pool connections by state, summed over workers.",
                ["state"],
                registry=self.registry,
                multiprocess_mode="livesum",
            )
        else:
            self.registry.register(_PoolCollector(pool_stats))

    def sample_pool(self) -> None:
        """Record the pool's use now; only multiprocess mode needs it (else read at scrape)."""
        if self._pool is None:
            return
        for state, count in (self._pool_stats() or {}).items():
            self._pool.labels(state).set(count)


def multiprocess_mode() -> bool:
    """True in a worker whose metrics go to files that one endpoint sums (``shared_metrics``)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


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
