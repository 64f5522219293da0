"""Several server processes on one port, as grpc's multiprocessing example does.

The parent forks the workers before any gRPC object exists (gRPC's core does
not survive a fork with live channels or servers), then only relays signals
and waits. Each worker binds the same port with SO_REUSEPORT and the kernel
spreads new connections across them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from typing import TYPE_CHECKING

from service.api.shared_metrics import MetricsBindError

if TYPE_CHECKING:
    from collections.abc import Callable

    from service.api.shared_metrics import SharedMetricsEndpoint
    from service.config import Settings

__all__ = ["run_workers"]

log = logging.getLogger("service.workers")


def run_workers(
    settings: Settings,
    serve_worker: Callable[[Settings, int], None],
    metrics: SharedMetricsEndpoint | None = None,
) -> int:
    """Run ``settings.workers`` processes of ``serve_worker``; the exit status for the parent.

    With ``metrics``, the parent serves the one metrics endpoint of all workers.
    """
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=serve_worker, args=(settings, index), name=f"users-worker-{index}")
        for index in range(settings.workers)
    ]
    for worker in workers:
        worker.start()
    log.info("started %d workers: %s", len(workers), ", ".join(str(w.pid) for w in workers))

    def relay(signum: int, _frame: object) -> None:
        # SIGHUP (reload the authorization policy) goes on as it is; the others stop the workers.
        forwarded = signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, forwarded)

    signal.signal(signal.SIGTERM, relay)
    signal.signal(signal.SIGINT, relay)
    signal.signal(signal.SIGHUP, relay)
    status = 0
    if metrics is not None:
        try:
            metrics.serve()
        except MetricsBindError as error:
            log.error("cannot start: %s", error)
            relay(signal.SIGTERM, None)
            status = 1
    for worker in workers:
        worker.join()
        if metrics is not None and worker.pid is not None:
            metrics.worker_exited(worker.pid)
    if metrics is not None:
        metrics.close()
    failed = [w for w in workers if w.exitcode != 0]
    for worker in failed:
        log.error("worker %s exited with status %s", worker.pid, worker.exitcode)
    return 1 if failed or status else 0
