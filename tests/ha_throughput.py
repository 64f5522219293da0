"""``make ha-bench``: bank throughput through one replica against two, behind PgBouncer.

One HA cluster (``deploy/ha/cluster.py up --replicas 2``); the same clients
call deposits and transfers (2 % sign-ups) for ``HA_BENCH_SECONDS`` per round,
first all through replica 0, then split over both replicas, alternating
``HA_BENCH_ROUNDS`` times so that the machine's noise hits both alike. Prints
OK calls per second of each round and the ratio of two replicas to one.
Everything (etcd, two PostgreSQL nodes, PgBouncer, replicas, clients) shares
this machine's cores: the ratio says what a second replica buys when the
database and the pooler are on the same cores, not on their own machines.

Settings (environment): HA_BENCH_SECONDS (default 10), HA_BENCH_ROUNDS (2),
HA_BENCH_CLIENTS (total, default 16).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

from tests.bank_load import OK, BankLoad
from tests.ha_cluster import HaUnavailable, ha_cluster

# Mostly money: 2 % sign-ups (argon2 would otherwise measure the hashing), 30 % deposits.
MIX = (0.02, 0.3)
WARM_UP = 3.0


async def _round(addresses: list[str], clients: int, seconds: float) -> float:
    """OK calls per second with ``clients`` spread over ``addresses``."""
    share = max(clients // len(addresses), 1)
    loads = [BankLoad(address, clients=share) for address in addresses]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(load.run(stop, MIX)) for load in loads]
    await asyncio.sleep(WARM_UP)
    start = time.monotonic()
    await asyncio.sleep(seconds)
    end = time.monotonic()
    stop.set()
    await asyncio.gather(*tasks)
    ok = sum(1 for load in loads for c in load.calls if c.code == OK and start <= c.ended < end)
    return ok / (end - start)


async def bench(seconds: float, rounds: int, clients: int) -> None:
    async with ha_cluster(replicas=2) as cluster:
        first, second = cluster.addresses
        one: list[float] = []
        two: list[float] = []
        for number in range(1, rounds + 1):
            one.append(await _round([first], clients, seconds))
            two.append(await _round([first, second], clients, seconds))
            print(f"round {number}: 1 replica {one[-1]:.0f} OK/s, 2 replicas {two[-1]:.0f} OK/s")
    ratio = statistics.median(two) / statistics.median(one)
    print(
        f"ha-bench: {clients} clients, {seconds:g}s rounds; median 1 replica"
        f" {statistics.median(one):.0f} OK/s, 2 replicas {statistics.median(two):.0f} OK/s,"
        f" ratio {ratio:.2f}"
    )


def main() -> None:
    seconds = float(os.environ.get("HA_BENCH_SECONDS") or 10)
    rounds = int(os.environ.get("HA_BENCH_ROUNDS") or 2)
    clients = int(os.environ.get("HA_BENCH_CLIENTS") or 16)
    try:
        asyncio.run(bench(seconds, rounds, clients))
    except HaUnavailable as error:
        sys.exit(f"ha-bench: cannot run the HA cluster here: {error}")


if __name__ == "__main__":
    main()
