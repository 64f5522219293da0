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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from bench.config import ROOT

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CLoad", "binary", "transfer_load"]

SOURCE = ROOT / "bench" / "grpcload.c"
BINARY = ROOT / "build" / "grpcload"
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


@dataclass
class CLoad:
    calls_per_s: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: int = 0
    codes: dict[str, int] = field(default_factory=dict)


def binary() -> str:
    """The compiled client, built now if it is missing or older than its source."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return str(BINARY)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler: apt-get install gcc libnghttp2-dev")
    BINARY.parent.mkdir(exist_ok=True)
    built = subprocess.run(
        [compiler, "-O2", "-o", str(BINARY), str(SOURCE), "-lnghttp2"],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(f"cannot build grpcload (libnghttp2-dev?): {built.stderr[-400:]}")
    return str(BINARY)


def transfer_load(
    target: str,
    *,
    in_flight: int,
    seconds: float,
    warmup: float,
    funded_ids: Sequence[int],
    tag: str,
) -> CLoad:
    """TransferFunds between random pairs of ``funded_ids``, ``in_flight`` calls at a time."""
    # Up to 4 connections with the same number of calls each: exactly in_flight in all.
    connections = next(c for c in (4, 3, 2, 1) if in_flight % c == 0)
    host, _, port = target.rpartition(":")
    done = subprocess.run(
        [
            binary(),
            host,
            port,
            str(connections),
            str(in_flight // connections),
            str(seconds),
            str(warmup),
            tag,
            ",".join(map(str, funded_ids)),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + warmup + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"grpcload failed (exit {done.returncode}): {done.stderr[-300:]}")
    report = json.loads(done.stdout)
    codes = {
        CODE_NAMES.get(int(code), "NO_STATUS"): count for code, count in report["codes"].items()
    }
    return CLoad(
        calls_per_s=report["calls_per_s"],
        p50_ms=report["p50_ms"],
        p99_ms=report["p99_ms"],
        errors=sum(count for name, count in codes.items() if name != "OK"),
        codes=codes,
    )
