"""A throwaway PostgreSQL cluster that a test may stop, crash and restart at will.

The machine's shared PostgreSQL (127.0.0.1:5432) serves other people's tests,
so fault tests never touch it: they ``initdb`` a private cluster in a temporary
directory, on a free port of 127.0.0.1, with trust authentication and its
socket in that directory, and remove it afterwards.

initdb and postgres refuse to run as root; as root every command runs as the
``postgres`` user through ``runuser``, and the directory is handed to it.
``fsync`` is off: the faults simulated are process crashes and restarts, after
which the kernel still holds every write; power loss is out of scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "ClusterUnavailable",
    "PostgresCluster",
    "check_available",
    "find_binaries",
    "throwaway_cluster",
]

RUN_AS = "postgres"
# pg_ctl's own wait for start-up and shutdown; crash recovery after an
# immediate stop of a small cluster takes well under a second.
PG_CTL_TIMEOUT = 60


class ClusterUnavailable(RuntimeError):
    """This machine cannot run a private PostgreSQL cluster (the reason says why)."""


def find_binaries() -> Path:
    """The bin directory of the newest PostgreSQL installed under /usr/lib/postgresql."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(path.split("/")[-2]) if path.split("/")[-2].isdigit() else 0,
    )
    for directory in reversed(candidates):
        if all(os.access(Path(directory, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(directory)
    raise ClusterUnavailable("no initdb/pg_ctl under /usr/lib/postgresql/*/bin")


def check_available() -> None:
    """Raise ClusterUnavailable, saying why, unless this machine can run a private cluster."""
    find_binaries()
    _as_cluster_owner()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_cluster_owner() -> list[str]:
    """The command prefix that runs a PostgreSQL tool as a user it accepts."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterUnavailable("running as root, and runuser is missing to drop to postgres")
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        raise ClusterUnavailable(f"running as root, and there is no {RUN_AS!r} user") from None
    return [runuser, "-u", RUN_AS, "--"]


class PostgresCluster:
    """One private cluster: ``create()`` it, then start, stop and restart it."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = port or _free_port()
        self.bin = find_binaries()
        self._prefix = _as_cluster_owner()

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _command(self, tool: str, *args: str) -> list[str]:
        return [*self._prefix, str(self.bin / tool), *args]

    def _pg_ctl(self, action: str, *extra: str) -> list[str]:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c max_connections=100"
        )
        return self._command(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(PG_CTL_TIMEOUT), "-o", options, *extra,
        )  # fmt: skip

    def create(self) -> None:
        """initdb the cluster (blocking: done once, before any load)."""
        if self._prefix:
            os.chown(self.directory, pwd.getpwnam(RUN_AS).pw_uid, -1)
        done = subprocess.run(
            self._command(
                "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "--no-sync", "--no-instructions", "-E", "UTF8", "--locale", "C",
            ),
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb exited {done.returncode}: {done.stderr or done.stdout}")

    async def _run(self, command: list[str]) -> None:
        # Through asyncio, never blocking: the service under test may share this loop.
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command[-12:])} exited {process.returncode}: {out.decode()}"
                f"\n{self.tail_log()}"
            )

    async def start(self) -> None:
        await self._run(self._pg_ctl("start"))

    async def stop(self, mode: str = "fast") -> None:
        """Stop: ``fast`` disconnects clients cleanly, ``immediate`` is a crash."""
        await self._run(self._command("pg_ctl", "stop", "-D", str(self.data), "-w", "-m", mode))

    async def restart(self, mode: str = "fast") -> None:
        """Stop with ``mode`` and start again; returns once the cluster accepts connections."""
        await self._run(self._pg_ctl("restart", "-m", mode))

    def _processes(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The parent pid is the 2nd field after the parenthesised command.
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        """Hang the server (SIGSTOP): connections stay open and nothing answers."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    async def running(self) -> bool:
        try:
            connection = await asyncpg.connect(self.url(), timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await connection.close()
        return True

    async def create_database(self, name: str) -> str:
        """Create a database; its URL."""
        admin = await asyncpg.connect(self.url())
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        return self.url(name)

    def tail_log(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def destroy(self) -> None:
        """Stop the cluster if it runs (as a crash: nothing in it matters) and remove it."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                self._command("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w"),
                capture_output=True,
                check=False,
            )
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def throwaway_cluster(*, start: bool = True) -> AsyncIterator[PostgresCluster]:
    """A new cluster in a new temporary directory, destroyed on exit.

    Raises ClusterUnavailable when the machine cannot run one.
    """
    check_available()
    directory = Path(tempfile.mkdtemp(prefix="users-pg-"))
    cluster = PostgresCluster(directory)
    try:
        await asyncio.to_thread(cluster.create)
        if start:
            await cluster.start()
        yield cluster
    finally:
        await asyncio.to_thread(cluster.destroy)
