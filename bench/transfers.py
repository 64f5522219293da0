"""``python -m bench.transfers``: TransferFunds against pgbench's TPC-B, in the same run.

pgbench (Debian ``postgresql-contrib``; installed by ``make bench`` if
missing) runs its built-in TPC-B (5 statements a transaction: three
UPDATEs, a SELECT and an INSERT) at scale 10 with ``BENCH_TRANSFER_CLIENTS``
clients (32) on a database of its own, once before and once after the
service is measured; their mean is the baseline. TransferFunds is then driven
with 32 calls in flight over random pairs of 100 funded accounts, on a fresh
PostgreSQL database and on SQLite, by two clients in turn: ``bench/grpcload.c``
(C, like pgbench's own client; the ratio to pgbench is taken from it; skipped
when it cannot be compiled), then the bench's Python load generator on the
same server, which on a 2-core machine takes a third of a core or more from
the server (the client earlier runs used).

``BENCH_SCALE_BASELINE=<git ref>`` also measures the service of that commit
(exported with ``git archive``), so that before and after are both ratios
to the same pgbench run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.config import ROOT, BenchConfig
from bench.grpcload import ClientUnavailable, transfer_load
from bench.pyclient import LoadSpec, run_load
from bench.scale import _export, _start
from bench.seed import password_hash, recreate_postgres_database, seed_postgres, seed_sqlite
from bench.server import ServerProcess, free_port, service_argv

__all__ = ["main", "pgbench_tps"]


def _url_with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name, query=""))


def pgbench_tps(url: str, clients: int, seconds: float) -> float:
    """TPC-B transactions per second (excluding connection time) on the database of ``url``."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise RuntimeError("pgbench is missing: apt-get install postgresql-contrib")
    parts = urlsplit(url)
    threads = str(min(clients, os.cpu_count() or 2))
    out = subprocess.run(
        [pgbench, "-n", "-c", str(clients), "-j", threads, "-T", str(int(seconds)), parts.path[1:]],
        env={
            **os.environ,
            "PGHOST": parts.hostname or "127.0.0.1",
            "PGPORT": str(parts.port or 5432),
            "PGUSER": parts.username or "postgres",
        },
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([0-9.]+) \((?:without initial connection time|excluding)", out)
    if match is None:
        raise RuntimeError(f"unexpected pgbench output: {out[-300:]}")
    return float(match.group(1))


def pgbench_init(url: str) -> None:
    parts = urlsplit(url)
    env = {
        **os.environ,
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": parts.username or "postgres",
    }
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", "10", parts.path[1:]],
        env=env,
        check=True,
        capture_output=True,
    )


class Transfers:
    def __init__(self, config: BenchConfig, work: Path) -> None:
        self.config = config
        self.work = work
        self.hashed = password_hash()
        self.seconds = config.duration

    def say(self, message: str) -> None:
        print(f"[transfers] {message}", file=sys.stderr, flush=True)

    def service(self, name: str, url: str, source: Path) -> tuple[ServerProcess, tuple[int, ...]]:
        """A started service on a fresh, seeded database, and its funded account ids."""
        port = free_port()
        argv = service_argv(self.config.python, port, url, "--access-log", "false")
        schema = ServerProcess(f"{name}-schema", argv, self.work / f"{name}-schema.log", port)
        _start(schema, source)
        schema.stop()
        if url.startswith("sqlite"):
            seed = seed_sqlite(url[len("sqlite://") :], 10_000, 100, self.hashed)
        else:
            seed = asyncio.run(seed_postgres(url, 10_000, 100, self.hashed))
        server = ServerProcess(name, argv, self.work / f"{name}.log", port)
        _start(server, source)
        return server, seed.funded_ids

    def transfers_per_s(
        self, backend: str, version: str, source: Path
    ) -> list[tuple[str, float, float, int]]:
        """Per client (C, then Python): calls/s, p50 ms and errors of TransferFunds."""
        if backend == "sqlite":
            url = f"sqlite://{self.work / f'transfers-{version}.sqlite3'}"
        else:
            name = urlsplit(self.config.postgres_url).path.lstrip("/")
            url = _url_with_database(self.config.postgres_url, f"{name}_transfers")
            asyncio.run(recreate_postgres_database(url))
        server, funded = self.service(f"transfers-{backend}-{version}", url, source)
        spec = LoadSpec(
            target=server.target,
            kind="transfer",
            concurrency=self.config.transfer_clients,
            duration=self.seconds,
            warmup=self.config.warmup,
            procs=self.config.client_procs,
            funded_ids=funded,
            tag=os.urandom(3).hex(),
        )
        measured: list[tuple[str, float, float, int]] = []
        try:
            for client, drive in (("C", transfer_load), ("Python", run_load)):
                try:
                    load = drive(spec)
                except ClientUnavailable as error:
                    self.say(f"{backend} {version}: no {client} client ({error})")
                    continue
                measured.append((client, load.calls_per_s, load.p50_ms, load.errors))
                self.say(
                    f"{backend} {version} ({client} client): {load.calls_per_s:.0f} "
                    f"transfers/s, p50 {load.p50_ms:.2f} ms, {load.errors} errors {load.codes}"
                )
        finally:
            server.stop()
        return measured


def main() -> None:
    config = BenchConfig.from_env()
    clients = config.transfer_clients
    with tempfile.TemporaryDirectory(prefix="bench-transfers-") as tmp:
        work = Path(tmp)
        bench = Transfers(config, work)
        versions: list[tuple[str, Path]] = [("this", ROOT)]
        ref = os.environ.get("BENCH_SCALE_BASELINE", "")
        if ref:
            versions.insert(0, (f"baseline-{ref[:12]}", _export(ref, work / "baseline")))
        name = urlsplit(config.postgres_url).path.lstrip("/")
        pgbench_url = _url_with_database(config.postgres_url, f"{name}_pgbench")
        tps: list[float] = []
        results: list[tuple[str, str, str, float, float, int]] = []
        postgres = "postgres" in config.backends
        if postgres:
            asyncio.run(recreate_postgres_database(pgbench_url))
            pgbench_init(pgbench_url)
            tps.append(pgbench_tps(pgbench_url, clients, bench.seconds))
            bench.say(f"pgbench TPC-B, {clients} clients: {tps[-1]:.0f} tps")
        for backend in config.backends:
            for version, source in versions:
                for client, rate, p50, errors in bench.transfers_per_s(backend, version, source):
                    results.append((backend, version, client, rate, p50, errors))
        if postgres:
            tps.append(pgbench_tps(pgbench_url, clients, bench.seconds))
            bench.say(f"pgbench TPC-B, {clients} clients: {tps[-1]:.0f} tps")
        baseline = sum(tps) / len(tps) if tps else float("nan")
        print(
            f"\nTransferFunds, {clients} in flight (pgbench TPC-B {clients} clients: "
            f"{' / '.join(f'{t:.0f}' for t in tps)} tps, mean {baseline:.0f})"
        )
        print("backend | version | client | transfers/s | p50 ms | errors | vs pgbench")
        print("--- | --- | --- | --- | --- | --- | ---")
        for backend, version, client, rate, p50, errors in results:
            ratio = f"{rate / baseline:.2f}" if backend == "postgres" and tps else "-"
            print(f"{backend} | {version} | {client} | {rate:.0f} | {p50:.2f} | {errors} | {ratio}")


if __name__ == "__main__":
    began = time.monotonic()
    main()
    print(f"[transfers] done in {time.monotonic() - began:.0f}s", file=sys.stderr)
