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
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from users.v1 import user_service_pb2 as pb
from users.v1 import user_service_pb2_grpc

from bench.config import ROOT, BenchConfig
from bench.seed import USER_COLUMNS, password_hash, recreate_postgres_database
from bench.server import ServerProcess, free_port

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["main"]

_LEDGER_COLUMNS = ["kind", "from_user_id", "to_user_id", "amount", "request_id", "create_time"]
_POST_COLUMNS = ["user_id", "title", "body", "create_time"]
# Seeded users were created one millisecond apart, ending a day ago.
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _name(n: int) -> str:
    return f"user{n:07d}"


def _created(n: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=n)


@dataclass
class Growth:
    """What is in a scale database so far (user n has id n: the table starts empty)."""

    users: int = 0
    posts: int = 0
    ledger: int = 0
    busy_user: int = 1

    def users_up_to(self, size: int, hashed: str) -> list[tuple[Any, ...]]:
        rows = []
        for n in range(self.users + 1, size + 1):
            name = _name(n)
            created = _created(n)
            email = f"{name}@example.com"
            rows.append((name, name, email, email, f"Scale User {n}", hashed, 0, created, created))
        return rows

    def posts_up_to(self, size: int) -> list[tuple[Any, ...]]:
        rows = []
        for n in range(self.posts + 1, size // 10 + 1):
            author = self.busy_user if n % 10 == 0 else 1 + (n * 7919) % size
            rows.append((author, f"Post {n}", "Some text of a post.", _created(n)))
        return rows

    def ledger_up_to(self, size: int) -> list[tuple[Any, ...]]:
        """Transfers of 1 between seeded users (balances are left at 0: nothing here is spent)."""
        rows: list[tuple[Any, ...]] = []
        for n in range(self.ledger + 1, size // 10 + 1):
            when = _created(n)
            if n % 10 == 0:
                rows.append(("deposit", None, self.busy_user, 1, f"scale-d-{n}", when))
            elif n % 10 < 3:
                other = 2 + (n * 7919) % (size - 1)
                sender, receiver = (self.busy_user, other) if n % 2 else (other, self.busy_user)
                rows.append(("transfer", sender, receiver, 1, f"scale-t-{n}", when))
            else:
                sender = 2 + (n * 104729) % (size - 1)
                receiver = 2 + (n * 7919) % (size - 1)
                if receiver == sender:
                    receiver = 2 + (receiver - 1) % (size - 1)
                rows.append(("transfer", sender, receiver, 1, f"scale-t-{n}", when))
        return rows


def _sqlite_value(value: Any) -> Any:
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value


def grow_sqlite(path: Path, growth: Growth, size: int, hashed: str) -> None:
    connection = sqlite3.connect(path)
    try:
        with connection:
            for table, columns, rows in (
                ("users", USER_COLUMNS, growth.users_up_to(size, hashed)),
                ("posts", _POST_COLUMNS, growth.posts_up_to(size)),
                ("ledger", _LEDGER_COLUMNS, growth.ledger_up_to(size)),
            ):
                marks = ", ".join("?" for _ in columns)
                connection.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                    [tuple(_sqlite_value(v) for v in row) for row in rows],
                )
    finally:
        connection.close()
    growth.users, growth.posts, growth.ledger = size, size // 10, size // 10


async def grow_postgres(url: str, growth: Growth, size: int, hashed: str) -> None:
    connection = await asyncpg.connect(_dsn(url))
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "users", records=growth.users_up_to(size, hashed), columns=list(USER_COLUMNS)
            )
            await connection.copy_records_to_table(
                "posts", records=growth.posts_up_to(size), columns=_POST_COLUMNS
            )
            await connection.copy_records_to_table(
                "ledger", records=growth.ledger_up_to(size), columns=_LEDGER_COLUMNS
            )
        await connection.execute("ANALYZE users")
        await connection.execute("ANALYZE posts")
        await connection.execute("ANALYZE ledger")
    finally:
        await connection.close()
    growth.users, growth.posts, growth.ledger = size, size // 10, size // 10


def _dsn(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql", query=""))


def _stamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def reads(size: int) -> dict[str, Callable[[Any], Any]]:
    """Each read RPC, as a call on a stub, shaped so that its answer is one page at any size."""
    middle = size // 2
    spread = [1 + (i * size) // 50 for i in range(50)]
    recent = _created(size - 1000)

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
            pb.LookupUserRequest(username=_name(middle).upper())
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
        argv = [
            self.config.python,
            "-m",
            "service",
            "--listen",
            f"127.0.0.1:{port}",
            "--database-url",
            url,
            "--access-log",
            "false",
        ]
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
