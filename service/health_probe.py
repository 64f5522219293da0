"""The database probe that keeps grpc.health.v1 in step with the database.

While the server serves, a task probes the database every
``health_probe_interval`` seconds: a probe that fails (or outlasts the
interval) turns health NOT_SERVING, so that a load balancer sends calls
elsewhere; the next one that answers turns it SERVING again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from service.api.assembly import SERVICE_NAME
from service.api.health import NOT_SERVING, SERVING

if TYPE_CHECKING:
    from service.api.health import HealthServicer
    from service.api.observability import Metrics
    from service.db.database import Database

__all__ = ["watch_database"]

# The server's logger: its health changes have always been logged under it.
log = logging.getLogger("service.server")


async def watch_database(
    database: Database, health: HealthServicer, metrics: Metrics, *, interval: float
) -> None:
    """Probe ``database`` every ``interval`` s, forever; NOT_SERVING while probes fail."""
    healthy = True
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.wait_for(database.probe(), timeout=interval)
            ok = True
        except Exception as error:
            ok = False
            if healthy:
                log.error("database probe failed: %s", type(error).__name__)
        metrics.database_up.set(int(ok))
        metrics.sample_pool()
        if ok != healthy:
            healthy = ok
            for name in ("", SERVICE_NAME):
                await health.set(name, SERVING if ok else NOT_SERVING)
            log.warning("health is now %s", "SERVING" if ok else "NOT_SERVING")
