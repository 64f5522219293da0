"""Driving ``deploy/ha/cluster.py`` from tests: one JSON line per command, every wait bounded.

The cluster runs as operators would run it (its own processes, its own
directory); tests only call its commands and read ``state.json`` for the
superuser password that the audit needs on the current primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["HaCluster", "HaUnavailable", "check_ha_available", "ha_cluster"]

REPOSITORY = Path(__file__).resolve().parent.parent
CLUSTER = REPOSITORY / "deploy" / "ha" / "cluster.py"
ENGINES = {
    "patroni": "/usr/bin/patroni",
    "etcd-server": "/usr/bin/etcd",
    "pgbouncer": "/usr/sbin/pgbouncer",
    "postgresql-15": "/usr/lib/postgresql/15/bin/postgres",
}
# A command that has not answered in this long is a finding, not a slow machine.
COMMAND_TIMEOUT = 240.0


class HaUnavailable(RuntimeError):
    """This machine cannot run the HA cluster (the reason says which engine is missing)."""


def check_ha_available() -> None:
    missing = [name for name, path in ENGINES.items() if not Path(path).exists()]
    if missing:
        raise HaUnavailable(f"missing {', '.join(missing)} (make ha installs them)")
    if os.geteuid() != 0:
        raise HaUnavailable("the cluster runs its daemons as postgres, which needs root")


@dataclass
class HaCluster:
    directory: Path
    up: dict[str, Any]

    async def command(self, name: str, *args: str) -> dict[str, Any]:
        """Run ``cluster.py NAME --dir DIR ARGS``; its JSON line. RuntimeError if it failed."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(CLUSTER), name, "--dir", str(self.directory), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=REPOSITORY, start_new_session=True,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise RuntimeError(
                f"cluster.py {name} did not finish in {COMMAND_TIMEOUT:g}s"
            ) from None
        if process.returncode != 0:
            raise RuntimeError(f"cluster.py {name} exited {process.returncode}: {err.decode()}")
        lines = out.decode().strip().splitlines()
        reply: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        return reply

    @property
    def addresses(self) -> list[str]:
        return list(self.up["grpc"])

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.directory / "state.json").read_text())
        return state

    async def primary_url(self) -> str:
        """The superuser URL of the users database on the current primary (for audits)."""
        status = await self.command("status")
        leader = next(m for m in status["members"] if m["role"] == "leader")
        password = self.state()["passwords"]["superuser"]
        return f"postgres://postgres:{password}@127.0.0.1:{leader['port']}/users"

    def service_pids(self) -> list[int]:
        pids = sorted((self.directory / "pids").glob("service-*.pid"))
        return [int(path.read_text().split()[0]) for path in pids]

    def service_logs(self) -> str:
        logs = sorted((self.directory / "logs").glob("service-*.log"))
        return "\n".join(path.read_text(errors="replace") for path in logs)


@contextlib.asynccontextmanager
async def ha_cluster(replicas: int = 2) -> AsyncIterator[HaCluster]:
    """``up`` a cluster in a new directory under /tmp; ``down`` and remove it on exit."""
    check_ha_available()
    directory = Path(tempfile.mkdtemp(prefix="users-ha-", dir="/tmp"))
    cluster = HaCluster(directory, {})
    try:
        cluster.up = await cluster.command("up", "--replicas", str(replicas))
        yield cluster
    finally:
        try:
            if (directory / "state.json").exists():
                await cluster.command("down")
        finally:
            if not os.environ.get("HA_KEEP_DIR"):
                shutil.rmtree(directory, ignore_errors=True)
