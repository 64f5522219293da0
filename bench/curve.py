"""``python -m bench.curve``: GetUser (and LookupUser, BatchGetUsers) calls/s against a bare
grpc.aio handler, from 1 to 512 calls in flight, as a table and a PNG.

One service process per backend on a database seeded with 10,000 users
(bench.seed), one bare server (bench/bare_server.py: canned reply, no
database), both driven by the same h2load command at each level: ``-c`` up
to 4 connections, ``-m`` streams each, calls in flight = c x m. At each level
the bare server is measured right before the service, so that both see the
same machine. ``BENCH_SCALE_BASELINE=<git ref>`` adds the service of that
commit (exported with ``git archive``) at every level: before and after.
Each level is measured ``BENCH_CURVE_REPEATS`` times, bare and services
taking turns, and each figure is the median of its runs: on this shared
2-core machine one run of a few seconds can be off by a third.

Settings: ``BENCH_CURVE_LEVELS`` (``1,4,16,32,64,128,256,512``),
``BENCH_CURVE_SECONDS`` (3), ``BENCH_CURVE_REPEATS`` (3),
``BENCH_CURVE_METHODS`` (``GetUser``; add
``LookupUser,BatchGetUsers``), ``BENCH_BACKENDS``, ``BENCH_RESULTS_DIR``
(``curve.json``, ``curve.png``).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from users.v1 import user_service_pb2 as pb

from bench.config import ROOT, BenchConfig
from bench.h2load import grpc_frame, probe, run_h2load
from bench.scale import _export, _start
from bench.seed import (
    SeedInfo,
    password_hash,
    recreate_postgres_database,
    seed_postgres,
    seed_sqlite,
)
from bench.server import ServerProcess, free_port, service_argv

__all__ = ["main"]

SERVICE = "/users.v1.UserService/"


def _shape(in_flight: int) -> tuple[int, int]:
    clients = min(in_flight, 4)
    return clients, max(in_flight // clients, 1)


def main() -> None:
    config = BenchConfig.from_env()
    levels = [
        int(x) for x in os.environ.get("BENCH_CURVE_LEVELS", "1,4,16,32,64,128,256,512").split(",")
    ]
    seconds = float(os.environ.get("BENCH_CURVE_SECONDS", "3"))
    repeats = max(int(os.environ.get("BENCH_CURVE_REPEATS", "3")), 1)
    methods = [m.strip() for m in os.environ.get("BENCH_CURVE_METHODS", "GetUser").split(",")]
    hashed = password_hash()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-curve-") as tmp:
        work = Path(tmp)
        versions: list[tuple[str, Path]] = [("this", ROOT)]
        ref = os.environ.get("BENCH_SCALE_BASELINE", "")
        if ref:
            versions.insert(0, (f"baseline-{ref[:12]}", _export(ref, work / "baseline")))
        bare_port = free_port()
        bare = ServerProcess(
            "bare",
            [config.python, "-m", "bench.bare_server", "--listen", f"127.0.0.1:{bare_port}"],
            work / "bare.log",
            bare_port,
        )
        bare.start(health=False)
        try:
            for backend in config.backends:
                servers = {}
                for version, source in versions:
                    servers[version] = _service(config, work, backend, version, source, hashed)
                try:
                    _measure(
                        config,
                        work,
                        backend,
                        levels,
                        seconds,
                        repeats,
                        methods,
                        bare,
                        servers,
                        rows,
                    )
                finally:
                    for server, _ in servers.values():
                        server.stop()
        finally:
            bare.stop()
        config.results_dir.mkdir(parents=True, exist_ok=True)
        (config.results_dir / "curve.json").write_text(json.dumps(rows, indent=2))
        _print(rows)
        _chart(config.results_dir / "curve.png", rows)


def _service(
    config: BenchConfig, work: Path, backend: str, version: str, source: Path, hashed: str
) -> tuple[ServerProcess, SeedInfo]:
    if backend == "sqlite":
        path = work / f"curve-{version}.sqlite3"
        url = f"sqlite://{path}"
    else:
        base = urlsplit(config.postgres_url)
        name = base.path.lstrip("/") + "_curve_" + version.replace("-", "_")
        url = urlunsplit(base._replace(path="/" + name, query=""))
        asyncio.run(recreate_postgres_database(url))
    port = free_port()
    argv = service_argv(config.python, port, url, *config.server_args)
    schema = ServerProcess(f"curve-{backend}-{version}-schema", argv, work / "schema.log", port)
    _start(schema, source)
    schema.stop()
    if backend == "sqlite":
        seed = seed_sqlite(str(path), 10_000, 10, hashed)
    else:
        seed = asyncio.run(seed_postgres(url, 10_000, 10, hashed))
    server = ServerProcess(
        f"curve-{backend}-{version}", argv, work / f"curve-{backend}-{version}.log", port
    )
    _start(server, source)
    return server, seed


def _request(method: str, seed: SeedInfo) -> bytes:
    middle = seed.middle_id
    if method == "GetUser":
        return pb.GetUserRequest(id=middle).SerializeToString()
    if method == "LookupUser":
        return pb.LookupUserRequest(username=seed.username(middle).upper()).SerializeToString()
    ids = [middle + i for i in range(-50, 50)]
    return pb.BatchGetUsersRequest(ids=ids).SerializeToString()


def _measure(config, work, backend, levels, seconds, repeats, methods, bare, servers, rows) -> None:  # type: ignore[no-untyped-def]
    bare_payload = work / "bare.bin"
    bare_payload.write_bytes(grpc_frame(pb.GetUserRequest(id=42).SerializeToString()))
    for method in methods:
        for level in levels:
            clients, streams = _shape(level)

            def rate(
                target: str,
                payload: Path,
                call: str,
                clients: int = clients,
                streams: int = streams,
            ) -> float:
                run = run_h2load(
                    target=target,
                    method=SERVICE + call,
                    payload=payload,
                    log_file=work / "h2load.log",
                    clients=clients,
                    streams=streams,
                    threads=1,
                    duration=seconds,
                    warmup=min(1.0, seconds / 3),
                    rps=None,
                )
                return run.calls_per_s or 0.0

            payloads: dict[str, Path] = {}
            for version, (server, seed) in servers.items():
                raw = _request(method, seed)
                code, details = probe(server.target, SERVICE + method, raw)
                if code != "OK":
                    raise RuntimeError(f"{method} on {version}: {code} {details}")
                payloads[version] = work / f"{backend}-{version}-{method}.bin"
                payloads[version].write_bytes(grpc_frame(raw))
            runs: dict[str, list[float]] = {"bare": [], **{v: [] for v in servers}}
            for _ in range(repeats):
                runs["bare"].append(rate(bare.target, bare_payload, "GetUser"))
                for version, (server, _seed) in servers.items():
                    runs[version].append(rate(server.target, payloads[version], method))
            row: dict[str, object] = {
                "backend": backend,
                "method": method,
                "in_flight": level,
                **{name: statistics.median(rates) for name, rates in runs.items()},
            }
            rows.append(row)
            print(f"[curve] {json.dumps(row)}", file=sys.stderr, flush=True)


def _print(rows: list[dict[str, object]]) -> None:
    versions = (
        [k for k in rows[0] if k not in {"backend", "method", "in_flight", "bare"}] if rows else []
    )
    print(
        "\nbackend | method | in flight | bare calls/s | "
        + " | ".join(f"{v} calls/s | {v} / bare" for v in versions)
    )
    print(" | ".join("---" for _ in range(4 + 2 * len(versions))))
    for row in rows:
        bare = float(row["bare"])  # type: ignore[arg-type]
        cells = []
        for v in versions:
            ours = float(row[v])  # type: ignore[arg-type]
            cells += [f"{ours:.0f}", f"{ours / bare:.0%}" if bare else "-"]
        print(
            f"{row['backend']} | {row['method']} | {row['in_flight']} | {bare:.0f} | "
            + " | ".join(cells)
        )


def _chart(path: Path, rows: list[dict[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    versions = [k for k in rows[0] if k not in {"backend", "method", "in_flight", "bare"}]
    groups = sorted({(str(r["backend"]), str(r["method"])) for r in rows})
    figure, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    for ax, (backend, method) in zip(axes[0], groups, strict=True):
        shown = [r for r in rows if r["backend"] == backend and r["method"] == method]
        x = [int(r["in_flight"]) for r in shown]  # type: ignore[call-overload]
        ax.plot(x, [float(r["bare"]) for r in shown], "k--", label="bare grpc.aio")  # type: ignore[arg-type]
        for v in versions:
            ax.plot(x, [float(r[v]) for r in shown], marker="o", label=v)  # type: ignore[arg-type]
        ax.set_xscale("log", base=2)
        ax.set_xlabel("calls in flight")
        ax.set_ylabel("calls/s")
        ax.set_title(f"{method} [{backend}]")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
