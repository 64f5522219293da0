"""Time BatchCreateUsers importing 1,000 pre-hashed users, on SQLite and PostgreSQL.

    python -m bench.import_users [--runs 3] [--postgres-url URL]

Each run imports 1,000 new users with bcrypt hashes (no hashing in the
service: this measures validation, the bulk insert and the read-back) into a
fresh database through a real in-process server, then, for comparison, 1,000
CreateUser calls carrying the same kind of hash, one after another. PostgreSQL
is skipped when it cannot be reached. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from passlib.hash import bcrypt
from users.v1 import user_service_pb2

from service.testing import running_service

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BATCH = 1000
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/test"


def entries(prefix: str, stored: str) -> list[user_service_pb2.CreateUserRequest]:
    return [
        user_service_pb2.CreateUserRequest(
            username=f"{prefix}{i:04d}", email=f"{prefix}{i:04d}@example.com", password_hash=stored
        )
        for i in range(BATCH)
    ]


@contextlib.asynccontextmanager
async def fresh_database(backend: str, postgres_url: str) -> AsyncIterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite://{Path(directory) / 'users.sqlite3'}"
        return
    name = f"users_import_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(postgres_url)._replace(path="/" + name))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def one_run(backend: str, postgres_url: str, stored: str) -> tuple[float, float]:
    """Seconds for one 1,000-user batch, and for 1,000 single CreateUser calls."""
    async with (
        fresh_database(backend, postgres_url) as url,
        running_service(url, hash_threads=1) as service,
    ):
        request = user_service_pb2.BatchCreateUsersRequest(requests=entries("batch", stored))
        started = time.perf_counter()
        response = await service.stub.BatchCreateUsers(request, timeout=120)
        batch_seconds = time.perf_counter() - started
        assert len(response.users) == BATCH
        started = time.perf_counter()
        for single in entries("single", stored):
            await service.stub.CreateUser(single, timeout=30)
        return batch_seconds, time.perf_counter() - started


async def postgres_reachable(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


async def main(runs: int, postgres_url: str) -> None:
    stored = bcrypt.using(rounds=4).hash("legacy-password")
    backends = ["sqlite"]
    if await postgres_reachable(postgres_url):
        backends.append("postgres")
    else:
        print(f"postgres: skipped, {postgres_url} cannot be reached")
    print(f"{'backend':<10} {'BatchCreateUsers x1000':>24} {'1000 x CreateUser':>20}")
    for backend in backends:
        results = [await one_run(backend, postgres_url, stored) for _ in range(runs)]
        batch = statistics.median(r[0] for r in results)
        single = statistics.median(r[1] for r in results)
        print(f"{backend:<10} {batch * 1000:>21.0f} ms {single * 1000:>17.0f} ms")
    print(f"(median of {runs} runs, each on a fresh database; bcrypt hashes imported as is)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.postgres_url))
