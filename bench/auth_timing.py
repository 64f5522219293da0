"""Does AuthenticateUser take longer for an existing name than for an unknown one?

    python -m bench.auth_timing [--names 300] [--backends sqlite,postgres]

For each backend: a fresh database, ``--names`` users, then one AuthenticateUser
with a wrong password per existing name and per never-created name (so that
no throttle state exists for either), in a shuffled interleaved order, one
call at a time through the generated stubs. Prints the median and mean of
each kind, the difference of medians with a bootstrap 95 % interval, and the
share of pairs where the existing name was slower (0.5: no tell).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import time
import uuid

import asyncpg
import grpc.aio
from users.v1 import user_service_pb2

from service.testing import running_service

PASSWORD = "correct horse battery"
WRONG = "wrong horse battery"
PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


async def measure(url: str, names: int) -> tuple[list[float], list[float]]:
    async with running_service(url, auth_max_failures=0, access_log=False) as running:
        stub = running.stub
        existing = [f"known{i}x{uuid.uuid4().hex[:6]}" for i in range(names)]
        for name in existing:
            await stub.CreateUser(
                user_service_pb2.CreateUserRequest(
                    username=name, password=PASSWORD, email=f"{name}@example.com"
                )
            )
        unknown = [f"unknown{i}x{uuid.uuid4().hex[:6]}" for i in range(names)]
        calls = [(True, n) for n in existing] + [(False, n) for n in unknown]
        random.shuffle(calls)
        for warm in range(20):  # warm the pool, the hasher and the caches
            await _attempt(stub, f"warm{warm}")
        times: dict[bool, list[float]] = {True: [], False: []}
        for kind, name in calls:
            times[kind].append(await _attempt(stub, name))
        return times[True], times[False]


async def _attempt(stub: object, name: str) -> float:
    request = user_service_pb2.AuthenticateUserRequest(username=name, password=WRONG)
    start = time.perf_counter()
    with contextlib.suppress(grpc.aio.AioRpcError):  # INVALID_CREDENTIALS, as expected
        await stub.AuthenticateUser(request)  # type: ignore[attr-defined]
    return (time.perf_counter() - start) * 1000


def report(backend: str, known: list[float], unknown: list[float]) -> None:
    rng = random.Random(7)
    diffs = []
    for _ in range(2000):
        a = statistics.median(rng.choices(known, k=len(known)))
        b = statistics.median(rng.choices(unknown, k=len(unknown)))
        diffs.append(a - b)
    diffs.sort()
    low, high = diffs[50], diffs[1949]
    pairs = sum(k > u for k in known for u in unknown) / (len(known) * len(unknown))
    print(
        f"{backend:8} n={len(known)}+{len(unknown)}  "
        f"existing median {statistics.median(known):.2f} ms mean {statistics.mean(known):.2f}  "
        f"unknown median {statistics.median(unknown):.2f} ms mean {statistics.mean(unknown):.2f}  "
        f"diff of medians {statistics.median(known) - statistics.median(unknown):+.2f} ms "
        f"[95% {low:+.2f}, {high:+.2f}]  P(existing slower) {pairs:.3f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=300)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        if backend == "sqlite":
            path = f"/tmp/auth-timing-{uuid.uuid4().hex[:8]}.sqlite3"
            known, unknown = await measure(f"sqlite://{path}", args.names)
            os.unlink(path)
        else:
            name = f"auth_timing_{uuid.uuid4().hex[:8]}"
            admin = await asyncpg.connect(PG_ADMIN)
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
                known, unknown = await measure(url, args.names)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await admin.close()
        report(backend, known, unknown)


if __name__ == "__main__":
    asyncio.run(main())
