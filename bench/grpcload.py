"""TransferFunds driven by ``bench/grpcload.c``, a C HTTP/2 client (nghttp2).

h2load repeats one request body, and a TransferFunds that repeats a
request_id is a replay, so the transfer bench needs a client that writes a
new request per call. The Python client can, but it takes a third of a core
or more of a 2-core machine away from the server, where pgbench's client is
C. The binary is compiled on first use into ``build/`` (``cc``, Debian
``libnghttp2-dev``: ``make bench`` installs both).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import grpc

from bench.config import ROOT
from bench.pyclient import LoadResult, LoadSpec

__all__ = ["ClientUnavailable", "binary", "transfer_load"]

SOURCE = ROOT / "bench" / "grpcload.c"
BINARY = ROOT / "build" / "grpcload"
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class ClientUnavailable(RuntimeError):
    """The client cannot be built here (no C compiler, or no nghttp2 headers)."""


def binary() -> str:
    """The compiled client, built now if it is missing or older than its source."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return str(BINARY)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ClientUnavailable("no C compiler: apt-get install gcc libnghttp2-dev")
    BINARY.parent.mkdir(exist_ok=True)
    built = subprocess.run(
        [compiler, "-O2", "-o", str(BINARY), str(SOURCE), "-lnghttp2"],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise ClientUnavailable(f"cannot build grpcload (libnghttp2-dev?): {built.stderr[-400:]}")
    return str(BINARY)


def transfer_load(spec: LoadSpec) -> LoadResult:
    """TransferFunds between random pairs of ``spec.funded_ids``, ``spec.concurrency`` at a time.

    The same spec as the Python client's (``bench.pyclient.run_load``), kind
    ``transfer``; ``procs`` does not apply (one thread is enough).
    """
    # Up to 4 connections with the same number of calls each: exactly the concurrency in all.
    connections = next(c for c in (4, 3, 2, 1) if spec.concurrency % c == 0)
    host, _, port = spec.target.rpartition(":")
    done = subprocess.run(
        [
            binary(),
            host,
            port,
            str(connections),
            str(spec.concurrency // connections),
            str(spec.duration),
            str(spec.warmup),
            spec.tag,
            ",".join(map(str, spec.funded_ids)),
        ],
        capture_output=True,
        text=True,
        timeout=spec.duration + spec.warmup + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"grpcload failed (exit {done.returncode}): {done.stderr[-300:]}")
    report = json.loads(done.stdout)
    codes = {
        CODE_NAMES.get(int(code), "NO_STATUS"): count for code, count in report["codes"].items()
    }
    return LoadResult(
        calls=report["calls"],
        calls_per_s=report["calls_per_s"],
        p50_ms=report["p50_ms"],
        p99_ms=report["p99_ms"],
        errors=sum(count for name, count in codes.items() if name != "OK"),
        codes=codes,
        wall_s=spec.duration,
    )
