"""Benchmark of the change feed: ``python -m bench.feed`` (``make bench-feed``).

Prints, on SQLite and on PostgreSQL:

* writes/s with and without the outbox, in the same run: the same load
  against this tree's server and against a server built from the commit
  before the feed (``--baseline REV``, extracted with ``git archive``),
  alternating rounds so that the machine's noise hits both alike;
* the feed's lag, commit to watcher: from the response of a write to the
  arrival of its event on a WatchEvents stream (and from the request, an
  upper bound that includes the commit);
* on PostgreSQL, what a long transaction elsewhere in the database costs:
  the lag of events committed while it holds a transaction id.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import grpc.aio
from users.v1 import events_pb2, user_service_pb2, user_service_pb2_grpc

from bench.server import ServerProcess, free_port

POSTGRES_ADMIN = os.environ.get(
    "USERS_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"
)
E = events_pb2
U = user_service_pb2
HERE = Path(__file__).resolve().parent.parent


def server(name: str, tree: Path, database_url: str, log: Path) -> ServerProcess:
    port = free_port()
    command = (
        f"cd {tree} && exec {sys.executable} -m service --listen 127.0.0.1:{port}"
        f" --database-url '{database_url}' --access-log false --db-pool-size 16"
    )
    return ServerProcess(name, ["sh", "-c", command], log, port)


async def make_users(stub: user_service_pb2_grpc.UserServiceStub, count: int) -> list[int]:
    ids = []
    for _ in range(count):
        name = "b" + uuid.uuid4().hex[:12]
        user = await stub.CreateUser(
            U.CreateUserRequest(username=name, email=f"{name}@example.com", password="pw-" * 4)
        )
        ids.append(user.id)
    return ids


async def write_load(target: str, seconds: float, clients: int) -> float:
    """Deposits and UpdateUsers from ``clients`` concurrent callers; writes per second."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        users = await make_users(stub, clients)
        done = 0
        stop = time.monotonic() + seconds

        async def caller(user_id: int) -> None:
            nonlocal done
            n = 0
            while time.monotonic() < stop:
                n += 1
                if n % 2:
                    await stub.Deposit(
                        U.DepositRequest(user_id=user_id, amount=1, request_id=uuid.uuid4().hex)
                    )
                else:
                    await stub.UpdateUser(
                        U.UpdateUserRequest(
                            user={"id": user_id, "display_name": f"n{n}"},
                            update_mask={"paths": ["display_name"]},
                        )
                    )
                done += 1

        start = time.monotonic()
        await asyncio.gather(*(caller(u) for u in users))
        return done / (time.monotonic() - start)


async def lag(target: str, writes: int, hold: asyncpg.Connection | None = None) -> list[float]:
    """Seconds from each write's response to its event on a watch (negative: event first)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        (user_id,) = await make_users(stub, 1)
        arrived: dict[int, float] = {}
        call = stub.WatchEvents(E.WatchEventsRequest(user_id=user_id, types=[E.POST_CREATED]))
        await call.initial_metadata()

        async def watch() -> None:
            async for event in call:
                if event.type == E.POST_CREATED:
                    arrived[event.post.id] = time.monotonic()

        watching = asyncio.create_task(watch())
        answered: dict[int, float] = {}
        transaction = None
        if hold is not None:
            transaction = hold.transaction()
            await transaction.start()
            await hold.fetchval("SELECT pg_current_xact_id()")
        started = time.monotonic()
        for n in range(writes):
            post = await stub.CreatePost(
                U.CreatePostRequest(user_id=user_id, title=f"{n}", body="b")
            )
            answered[post.id] = time.monotonic()
            await asyncio.sleep(0.01)
        if transaction is not None:
            # Held for as long as the writes took; release it and see the backlog go.
            await transaction.rollback()
            print(
                f"    (a transaction held a transaction id for {time.monotonic() - started:.1f} s)"
            )
        for _ in range(3000):  # at most 30 s for the rest to arrive
            if len(arrived) >= len(answered):
                break
            await asyncio.sleep(0.01)
        call.cancel()
        watching.cancel()
        return [arrived[p] - answered[p] for p in answered if p in arrived]


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
        f" max {ordered[-1] * 1000:.1f} ms (n={len(ordered)})"
    )


async def postgres_database() -> tuple[str, str]:
    name = "bench_feed_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(POSTGRES_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return name, POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(POSTGRES_ADMIN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def run_backend(backend: str, baseline: Path, work: Path, args: argparse.Namespace) -> None:
    print(f"== {backend}")
    urls, names = [], []
    for label in ("feed", "base"):
        if backend == "sqlite":
            urls.append(f"sqlite://{work / f'{label}.sqlite3'}")
        else:
            name, url = await postgres_database()
            names.append(name)
            urls.append(url)
    servers = [
        server("with outbox", HERE, urls[0], work / f"{backend}-feed.log"),
        server("without outbox", baseline, urls[1], work / f"{backend}-base.log"),
    ]
    try:
        for s in servers:
            s.start(health=True)
        rates: dict[str, list[float]] = {s.name: [] for s in servers}
        for _ in range(args.rounds):
            for s in servers:
                rates[s.name].append(await write_load(s.target, args.seconds, args.clients))
        with_feed = statistics.median(rates["with outbox"])
        without = statistics.median(rates["without outbox"])
        print(
            f"  writes/s ({args.clients} clients, Deposit + UpdateUser, median of {args.rounds}):"
            f" with outbox {with_feed:.0f}, without {without:.0f},"
            f" ratio {with_feed / without:.2f}"
        )
        print(f"  lag, response -> watcher: {summary(await lag(servers[0].target, args.writes))}")
        if backend == "postgres":
            hold = await asyncpg.connect(urls[0])
            try:
                held = await lag(servers[0].target, args.writes, hold)
            finally:
                await hold.close()
            print(f"  lag while another transaction of the database is open: {summary(held)}")
    finally:
        for s in servers:
            s.stop()
        for name in names:
            await drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.feed")
    parser.add_argument("--baseline", default="f68673f", help="commit before the change feed")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-feed-") as temp:
        work = Path(temp)
        baseline = work / "baseline"
        baseline.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.baseline], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        for backend in args.backends.split(","):
            asyncio.run(run_backend(backend, baseline, work, args))


if __name__ == "__main__":
    main()
