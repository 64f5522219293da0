"""Server subprocesses: start, wait until they answer, read their memory, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["ServerError", "ServerProcess", "cpu_seconds", "free_port", "rss_kib"]


class ServerError(RuntimeError):
    """A server did not start, or died while it was measured."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _status_kib(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/PID/status, in KiB (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (the workers of a multi-process server)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                # The command name may hold spaces: the ppid follows its closing parenthesis.
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
        parents[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its live descendants."""
    ticks = sum(_cpu_ticks(p) for p in [pid, *_descendants(pid)])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its descendants, in KiB."""
    return sum(_status_kib(p, "VmRSS") for p in [pid, *_descendants(pid)])


def service_argv(python: str, port: int, url: str, *extra: str) -> list[str]:
    """The command line of ``python -m service`` on 127.0.0.1:``port`` over ``url``."""
    return [python, "-m", "service", "--listen", f"127.0.0.1:{port}", "--database-url", url, *extra]


class ServerProcess:
    """One server subprocess, its output going to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        port: int,
        *,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env  # None: this process's environment
        self.log_path = log_path
        self.port = port
        self.target = f"127.0.0.1:{port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "server not started"
        return self._process.pid

    def start(self, *, health: bool, timeout: float = 60.0) -> None:
        """Start and wait until it serves: Health/Check SERVING, or the port accepting calls."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        try:
            with grpc.insecure_channel(self.target) as channel:
                while not self._ready(channel, health):
                    self.check_alive()
                    if time.monotonic() > deadline:
                        raise ServerError(
                            f"{self.name} did not serve within {timeout:.0f}s\n{self.log_tail()}"
                        )
                    time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _ready(channel: grpc.Channel, health: bool) -> bool:
        """Health/Check says SERVING; without health, any answer (even UNIMPLEMENTED) will do."""
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.RpcError as error:
            code = error.code()
            return not health and code not in {
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            }
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            code = self._process.returncode
            self._process = None
            raise ServerError(f"{self.name} exited with status {code}\n{self.log_tail()}")

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def reset_peak_rss(self) -> bool:
        """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False if refused."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w", encoding="ascii") as refs:
                refs.write("5")
        except OSError:
            return False
        return True

    def peak_rss_kib(self) -> int:
        return _status_kib(self.pid, "VmHWM")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, wait for the graceful exit, SIGKILL the process group if it hangs."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(log.tell() - 64 * 1024, 0))
                tail = log.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no server log)"
        return "\n".join(f"    | {line}" for line in tail)
