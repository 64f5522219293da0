"""The hashing ceiling: argon2id hashes per second with the service's parameters.

``threads`` threads hash in a loop for ``seconds`` (argon2-cffi releases the
GIL, so they run in parallel). CreateUser cannot go faster than this on the
same machine with the same --hash-threads: each call hashes once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from bench.h2load import percentile

__all__ = ["HashRate", "hashing_rate"]


@dataclass(frozen=True, slots=True)
class HashRate:
    per_s: float
    hashes: int
    p50_ms: float
    p99_ms: float
    scheme: str


def hashing_rate(threads: int, seconds: float, password: str) -> HashRate:
    from service.domain.passwords import default_context

    context = default_context()
    sample = context.hash(password)  # warm up, and name the parameters in the report
    scheme = sample.rsplit("$", 2)[0]
    durations: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds

    def loop() -> None:
        mine: list[float] = []
        while True:
            began = time.perf_counter()
            if began >= deadline:
                break
            context.hash(password)
            mine.append(time.perf_counter() - began)
        with lock:
            durations.extend(mine)

    workers = [threading.Thread(target=loop, name=f"hash-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    durations.sort()
    return HashRate(
        per_s=len(durations) / elapsed,
        hashes=len(durations),
        p50_ms=percentile(durations, 50) * 1000,
        p99_ms=percentile(durations, 99) * 1000,
        scheme=scheme,
    )
