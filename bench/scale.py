"""``python -m bench.scale``: each read RPC's latency as the tables grow to 10k, 100k and 1M users.

Per backend, one fresh database is created by the service and then grown
straight in SQL (SQLite ``executemany`` in one transaction, PostgreSQL
``COPY``, then ``ANALYZE``), never through the RPCs: 1M users take seconds.
With the users grow the posts (one per 10 users) and the ledger (one
transfer per 10 users, one deposit per 100), a tenth of each on one busy
user, whose ListPosts and ListTransfers therefore also grow with the table.

At each size the service is started on the database and every read below is
called one at a time (``BENCH_SCALE_CALLS`` calls, at most
``BENCH_SCALE_SECONDS`` each); the table prints the median latency in ms at
each size and the ratio of the largest size to the smallest: O(page) reads
stay near 1.

``BENCH_SCALE_BASELINE=<git ref>`` also runs the service of that commit
(exported with ``git archive`` into the work directory) on a database of its
own, seeded the same, in the same run: the before/after comparison.

Settings: ``BENCH_SCALE_SIZES`` (default ``10000,100000,1000000``),
``BENCH_BACKENDS``, ``BENCH_POSTGRES_URL`` (its database name gets
``_scale`` appended; dropped and re-created), ``BENCH_RESULTS_DIR``
(``scale.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from users.v1 import user_service_pb2 as pb
from users.v1 import user_service_pb2_grpc

from bench.config import ROOT, BenchConfig
from bench.scale_seed import Growth, created, grow_postgres, grow_sqlite, name
from bench.seed import password_hash, recreate_postgres_database
from bench.server import ServerProcess, free_port, service_argv

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["main"]


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _stamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def reads(size: int) -> dict[str, Callable[[Any], Any]]:
    """Each read RPC, as a call on a stub, shaped so that its answer is one page at any size."""
    middle = size // 2
    spread = [1 + (i * size) // 50 for i in range(50)]
    recent = created(size - 1000)

    def listing(**fields: Any) -> Callable[[Any], Any]:
        return lambda stub: stub.ListUsers(pb.ListUsersRequest(page_size=50, **fields))

    def second_page(order_by: str) -> Callable[[Any], Any]:
        tokens: dict[str, str] = {}

        def call(stub: Any) -> Any:
            if order_by not in tokens:
                first = stub.ListUsers(pb.ListUsersRequest(page_size=50, order_by=order_by))
                tokens[order_by] = first.next_page_token
            request = pb.ListUsersRequest(
                page_size=50, order_by=order_by, page_token=tokens[order_by]
            )
            return stub.ListUsers(request)

        return call

    return {
        "GetUser": lambda stub: stub.GetUser(pb.GetUserRequest(id=middle)),
        "LookupUser": lambda stub: stub.LookupUser(
            pb.LookupUserRequest(username=name(middle).upper())
        ),
        "BatchGetUsers (50 ids)": lambda stub: stub.BatchGetUsers(
            pb.BatchGetUsersRequest(ids=spread)
        ),
        "ListUsers id": listing(),
        "ListUsers id desc": listing(order_by="id desc"),
        "ListUsers create_time": listing(order_by="create_time"),
        "ListUsers create_time desc": listing(order_by="create_time desc"),
        "ListUsers username": listing(order_by="username"),
        "ListUsers username desc": listing(order_by="username desc"),
        "ListUsers page 2, create_time desc": second_page("create_time desc"),
        "ListUsers page 2, username": second_page("username"),
        "ListUsers prefix (100 match)": listing(username_prefix="user00012"),
        "ListUsers prefix (10k match), username": listing(
            username_prefix="user000", order_by="username"
        ),
        "ListUsers created_after (1k match)": listing(created_after=_stamp(recent)),
        "ListPosts (busy user)": lambda stub: stub.ListPosts(
            pb.ListPostsRequest(user_id=1, page_size=50)
        ),
        "ListTransfers (busy user)": lambda stub: stub.ListTransfers(
            pb.ListTransfersRequest(user_id=1, page_size=50)
        ),
    }


def time_calls(call: Callable[[Any], Any], stub: Any, calls: int, seconds: float) -> float:
    """Median latency in ms of calls made one at a time (after one warm-up call)."""
    call(stub)
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while len(samples) < calls and (len(samples) < 3 or time.monotonic() < deadline):
        began = time.perf_counter()
        call(stub)
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


@dataclass
class Series:
    """Latencies of one code version on one backend: RPC -> size -> ms."""

    backend: str
    version: str
    ms: dict[str, dict[int, float]] = field(default_factory=dict)


class Scale:
    def __init__(self, config: BenchConfig, work: Path) -> None:
        self.config = config
        self.work = work
        self.sizes = sorted(
            int(s) for s in os.environ.get("BENCH_SCALE_SIZES", "10000,100000,1000000").split(",")
        )
        self.calls = _env_int("BENCH_SCALE_CALLS", 60)
        self.seconds = float(os.environ.get("BENCH_SCALE_SECONDS", "1.5"))
        self.hashed = password_hash()
        self.series: list[Series] = []

    def say(self, message: str) -> None:
        print(f"[scale] {message}", file=sys.stderr, flush=True)

    def server(self, name: str, url: str, source: Path) -> ServerProcess:
        port = free_port()
        argv = service_argv(self.config.python, port, url, "--access-log", "false")
        return ServerProcess(name, argv, self.work / f"{name}.log", port)

    def run(self, backend: str, version: str, source: Path) -> None:
        series = Series(backend, version)
        self.series.append(series)
        tag = f"{backend}-{version}"
        if backend == "sqlite":
            path = self.work / f"scale-{version}.sqlite3"
            url = f"sqlite://{path}"
        else:
            base = urlsplit(self.config.postgres_url)
            name = base.path.lstrip("/") + "_scale_" + version.replace("-", "_")
            url = urlunsplit(base._replace(path="/" + name))
            asyncio.run(recreate_postgres_database(url))
        growth = Growth()
        for size in self.sizes:
            schema = self.server(f"scale-{tag}-{size}", url, source)
            _start(schema, source)
            schema.stop()
            began = time.monotonic()
            if backend == "sqlite":
                grow_sqlite(path, growth, size, self.hashed)
            else:
                asyncio.run(grow_postgres(url, growth, size, self.hashed))
            self.say(f"{tag}: grew to {size:,} users in {time.monotonic() - began:.1f}s")
            server = self.server(f"scale-{tag}-{size}-reads", url, source)
            _start(server, source)
            try:
                with grpc.insecure_channel(server.target) as channel:
                    stub = user_service_pb2_grpc.UserServiceStub(channel)
                    for rpc, call in reads(size).items():
                        ms = time_calls(call, stub, self.calls, self.seconds)
                        series.ms.setdefault(rpc, {})[size] = ms
                self.say(f"{tag}: {size:,} users measured")
            finally:
                server.stop()

    def table(self) -> str:
        lines = []
        sizes = self.sizes
        head = ["RPC (median ms, one at a time)", *(f"{s:,}" for s in sizes), "last/first"]
        for series in self.series:
            lines.append(f"\n{series.backend}, {series.version}")
            lines.append(" | ".join(head))
            lines.append(" | ".join("---" for _ in head))
            for rpc, by_size in series.ms.items():
                cells = [f"{by_size.get(s, float('nan')):.2f}" for s in sizes]
                first, last = by_size.get(sizes[0]), by_size.get(sizes[-1])
                ratio = f"{last / first:.2f}x" if first and last else "-"
                lines.append(" | ".join([rpc, *cells, ratio]))
        before = {
            (s.backend, rpc): v
            for s in self.series
            if s.version != "this"
            for rpc, v in s.ms.items()
        }
        if before:
            lines.append(f"\nat {sizes[-1]:,} users: baseline ms / this ms (same run)")
            for series in self.series:
                if series.version != "this":
                    continue
                for rpc, by_size in series.ms.items():
                    old = before.get((series.backend, rpc), {}).get(sizes[-1])
                    new = by_size.get(sizes[-1])
                    if old and new:
                        lines.append(
                            f"{series.backend} | {rpc} | {old:.2f} / {new:.2f} = {old / new:.1f}x"
                        )
        return "\n".join(lines)


def _start(server: ServerProcess, source: Path) -> None:
    """Start a server process with ``source`` as its working directory (its code)."""
    previous = Path.cwd()
    os.chdir(source)
    try:
        server.start(health=True, timeout=120)
    finally:
        os.chdir(previous)


def _export(ref: str, into: Path) -> Path:
    """The service's code at ``ref``, exported (no checkout, no worktree)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "service"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    config = BenchConfig.from_env()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        scale = Scale(config, work)
        baseline_ref = os.environ.get("BENCH_SCALE_BASELINE", "")
        versions: list[tuple[str, Path]] = [("this", ROOT)]
        if baseline_ref:
            versions.insert(
                0, (f"baseline-{baseline_ref[:12]}", _export(baseline_ref, work / "baseline"))
            )
        for backend in config.backends:
            for version, source in versions:
                try:
                    scale.run(backend, version, source)
                except Exception as error:  # one backend down must not hide the other
                    scale.say(f"{backend} {version} failed: {type(error).__name__}: {error}")
        print(scale.table())
        config.results_dir.mkdir(parents=True, exist_ok=True)
        (config.results_dir / "scale.json").write_text(
            json.dumps(
                [{"backend": s.backend, "version": s.version, "ms": s.ms} for s in scale.series],
                indent=2,
            )
        )


if __name__ == "__main__":
    random.seed(12)
    main()
