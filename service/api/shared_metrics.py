"""One Prometheus endpoint for all ``--workers``: prometheus_client's multiprocess mode.

Before forking, the parent points ``PROMETHEUS_MULTIPROC_DIR`` at an empty
directory; every worker then writes its metrics to memory-mapped files there,
and the parent alone serves ``--metrics-listen``, adding the workers' counters
and histograms up at each scrape (gauges as their ``multiprocess_mode`` says:
calls in flight and pool connections summed, ``users_database_up`` the
lowest). Without workers nothing here runs and metrics stay in-process.

The directory is the operator's when ``PROMETHEUS_MULTIPROC_DIR`` is already
set (its stale ``*.db`` files are removed at start, as prometheus_client asks),
otherwise a private temporary one, removed at exit.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, multiprocess, start_http_server, values

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = ["MetricsBindError", "SharedMetricsEndpoint"]

ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger("service.metrics")


class MetricsBindError(RuntimeError):
    """The metrics address could not be bound."""


class SharedMetricsEndpoint:
    """The parent's side: prepare the directory, serve the sum, forget dead workers."""

    def __init__(self, listen: str) -> None:
        self._listen = listen
        self._owned = ENV not in os.environ
        if self._owned:
            os.environ[ENV] = tempfile.mkdtemp(prefix="users-metrics-")
        self.directory = Path(os.environ[ENV])
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.db"):
            stale.unlink()
        # prometheus_client picks its value class when it is first imported,
        # which happened before the variable was set: pick again, so that the
        # metrics the workers create write to the directory.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        self._http: WSGIServer | None = None
        self.port: int | None = None

    def serve(self) -> None:
        """Start the HTTP endpoint; after forking, so that no worker inherits its socket."""
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        host, _, port = self._listen.rpartition(":")
        try:
            self._http, _ = start_http_server(int(port), host, registry=registry)
        except OSError as error:
            raise MetricsBindError(f"cannot serve metrics on {self._listen}: {error}") from None
        self.port = self._http.server_port
        log.info("metrics of all workers on http://%s:%d/metrics", host, self.port)

    def worker_exited(self, pid: int) -> None:
        """Drop the live gauges of a worker that is gone (its counters stay counted)."""
        multiprocess.mark_process_dead(pid, str(self.directory))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)
