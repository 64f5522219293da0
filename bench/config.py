"""Benchmark settings, read from ``BENCH_*`` environment variables.

``BENCH_QUICK=1`` is a smoke run of about a minute; the defaults aim at well
under ten minutes on a 2-core machine. Every number can be overridden.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from service.config import Settings

__all__ = ["BenchConfig"]

ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"bench: {name} must be a number, got {raw!r}") from None


def _int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"bench: {name} must be an integer, got {raw!r}") from None


def _flag(name: str) -> bool:
    return _env(name, "0").lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class BenchConfig:
    quick: bool
    # Measured seconds per scenario, after `warmup` seconds that are not measured.
    duration: float
    warmup: float
    hash_seconds: float
    users: int
    funded: int
    burst: int
    # h2load: connections, streams per connection, threads.
    h2_clients: int
    h2_streams: int
    h2_threads: int
    # Python load generator: processes and calls in flight over all of them.
    client_procs: int
    concurrency: int
    transfer_clients: int
    storm_concurrency: int
    # Fixed-rate GetUser used for the p99 comparison (idle vs sign-up storm).
    latency_clients: int
    latency_streams: int
    latency_rps: int
    hash_threads: int
    workers: int
    backends: tuple[str, ...]
    postgres_url: str
    server_args: tuple[str, ...]
    only: tuple[str, ...]
    results_dir: Path
    python: str

    @classmethod
    def from_env(cls) -> BenchConfig:
        quick = _flag("BENCH_QUICK")
        return cls(
            quick=quick,
            duration=_float("BENCH_DURATION", 1.5 if quick else 10.0),
            warmup=_float("BENCH_WARMUP", 0.3 if quick else 1.0),
            hash_seconds=_float("BENCH_HASH_SECONDS", 1.0 if quick else 5.0),
            users=_int("BENCH_USERS", 10_000),
            funded=_int("BENCH_FUNDED", 100),
            burst=_int("BENCH_BURST", 100 if quick else 1000),
            h2_clients=_int("BENCH_H2LOAD_CLIENTS", 4),
            h2_streams=_int("BENCH_H2LOAD_STREAMS", 8),
            h2_threads=_int("BENCH_H2LOAD_THREADS", 1),
            client_procs=max(_int("BENCH_CLIENT_PROCS", 2), 1),
            concurrency=_int("BENCH_CONCURRENCY", 32),
            transfer_clients=_int("BENCH_TRANSFER_CLIENTS", 32),
            storm_concurrency=_int("BENCH_STORM_CONCURRENCY", 32),
            latency_clients=_int("BENCH_LATENCY_CLIENTS", 2),
            latency_streams=_int("BENCH_LATENCY_STREAMS", 8),
            latency_rps=_int("BENCH_LATENCY_RPS", 100),
            # The server's own default, so that the bench measures what runs.
            hash_threads=_int("BENCH_HASH_THREADS", Settings().hash_threads),
            workers=_int("BENCH_WORKERS", 2),
            backends=tuple(
                b.strip() for b in _env("BENCH_BACKENDS", "sqlite,postgres").split(",") if b.strip()
            ),
            postgres_url=_env(
                "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/users_bench"
            ),
            server_args=tuple(shlex.split(_env("BENCH_SERVER_ARGS", ""))),
            only=tuple(s.strip().lower() for s in _env("BENCH_ONLY", "").split(",") if s.strip()),
            results_dir=Path(_env("BENCH_RESULTS_DIR", str(ROOT / "bench" / "results"))),
            python=sys.executable,
        )

    def wants(self, key: str) -> bool:
        """Whether scenario ``key`` runs (``BENCH_ONLY`` keeps those whose key contains a word)."""
        return not self.only or any(word in key.lower() for word in self.only)
