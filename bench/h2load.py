"""Driving gRPC unary calls with h2load, and checking the gRPC status h2load cannot see.

A gRPC unary request is an HTTP/2 POST with ``content-type: application/grpc``
and ``te: trailers`` whose body is one flag byte (0: not compressed), a 4-byte
big-endian length and the serialized message. h2load reports HTTP statuses
only; a gRPC error is an HTTP 200 with a non-zero ``grpc-status`` trailer, so
every payload is also sent through a real gRPC client before and after the
run (`probe`): the requests are identical, so a failing probe means every
call failed.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import grpc

__all__ = ["H2Result", "grpc_frame", "h2load_path", "percentile", "probe", "run_h2load"]


def h2load_path() -> str | None:
    return shutil.which("h2load")


def grpc_frame(message: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(message)) + message


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(int(-(-q * len(sorted_values) // 100)), 1)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def probe(target: str, method: str, message: bytes, timeout: float = 30.0) -> tuple[str, str]:
    """Send ``message`` to ``method`` once; the status code name and details."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(message, timeout=timeout)
        except grpc.RpcError as error:
            return error.code().name, str(error.details())
    return "OK", ""


@dataclass
class H2Result:
    calls: int = 0
    calls_per_s: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: int = 0
    notes: list[str] = field(default_factory=list)


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def run_h2load(
    *,
    target: str,
    method: str,
    payload: Path,
    log_file: Path,
    clients: int,
    streams: int,
    threads: int,
    duration: float,
    warmup: float,
    rps: int | None = None,
) -> H2Result:
    """One timed h2load run; latencies come from its per-request log."""
    h2load = h2load_path()
    if h2load is None:
        raise FileNotFoundError("h2load is not installed (Debian package nghttp2-client)")
    argv = [
        h2load,
        f"--threads={max(min(threads, clients), 1)}",
        f"--clients={clients}",
        f"--max-concurrent-streams={streams}",
        f"--duration={max(round(duration * 1000), 1)}ms",
        f"--warm-up-time={max(round(warmup * 1000), 1)}ms",
        f"--data={payload}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        f"--log-file={log_file}",
        f"http://{target}{method}",
    ]
    if rps is not None:
        argv.insert(4, f"--rps={rps}")
    log_file.unlink(missing_ok=True)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + warmup + 120, check=False
    )
    result = H2Result()
    output = done.stdout
    finished, requests, statuses = (
        _FINISHED.search(output),
        _REQUESTS.search(output),
        _STATUS.search(output),
    )
    if done.returncode != 0 or not (finished and requests and statuses):
        result.notes.append(f"h2load failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
        result.errors = 1
        return result
    _, _, done_calls, succeeded, failed, errored, timeouts = map(int, requests.groups())
    non_2xx = sum(map(int, statuses.groups()[1:]))
    result.calls = done_calls
    result.calls_per_s = float(finished.group(3))
    # "succeeded" counts 2xx responses among those done; streams still open when
    # the duration ends are neither done nor errors.
    result.errors = max(done_calls - succeeded, 0)
    if failed or errored or timeouts or non_2xx:
        result.notes.append(
            f"h2load: {failed} failed, {errored} errored, {timeouts} timeout, {non_2xx} non-2xx"
        )
    latencies: list[float] = []
    if log_file.exists():
        with open(log_file, encoding="ascii") as log:
            for line in log:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1] != "-1":
                    latencies.append(int(parts[2]) / 1000.0)
        log_file.unlink()
    latencies.sort()
    result.p50_ms = percentile(latencies, 50)
    result.p99_ms = percentile(latencies, 99)
    return result
