"""Multi-process grpc.aio load generator for scenarios whose requests vary.

Each process has its own event loop (uvloop when present) and its own channel,
and runs ``concurrency`` callers that loop until the deadline (or, for a
burst, make exactly one call each, all at once). Processes are spawned, not
forked, so that no gRPC object crosses a fork; all of them wait on one start
event so that they load the server together.

Calls that complete within ``[start + warmup, start + warmup + duration]``
are measured; the others only warm up or drain.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.h2load import percentile

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from multiprocessing.process import BaseProcess
    from multiprocessing.synchronize import Event

__all__ = ["LoadResult", "LoadRun", "LoadSpec", "run_load"]

# Generous: a burst of 1000 sign-ups queues on the hashing pool for a while.
CALL_TIMEOUT = 300.0
KINDS = ("get", "create", "transfer", "mix")


@dataclass(frozen=True, slots=True)
class LoadSpec:
    target: str
    kind: str  # one of KINDS
    concurrency: int  # callers over all processes
    duration: float
    warmup: float
    procs: int = 2
    first_id: int = 1
    last_id: int = 1
    funded_ids: tuple[int, ...] = ()
    password: str = "bench-password-1"
    tag: str = ""
    burst: bool = False  # each caller makes one call, all at once; no deadline
    write_share: float = 0.1  # mix: share of TransferFunds among the calls


@dataclass
class LoadResult:
    calls: int = 0
    calls_per_s: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    sample_error: str = ""
    wall_s: float = 0.0
    failed_workers: list[str] = field(default_factory=list)


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class LoadRun:
    """Spawned load processes: ``start()`` returns once they all run; ``join()`` collects."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self._context = multiprocessing.get_context("spawn")
        self._results: Any = self._context.Queue()
        self._ready: Any = self._context.Queue()
        self._go: Event = self._context.Event()
        self._processes: list[BaseProcess] = []

    def start(self, timeout: float = 60.0) -> None:
        procs = max(min(self.spec.procs, self.spec.concurrency), 1)
        for index, share in enumerate(_split(self.spec.concurrency, procs)):
            process = self._context.Process(
                target=_worker_main,
                args=(self.spec, index, share, self._ready, self._go, self._results),
                name=f"bench-load-{index}",
                daemon=True,
            )
            process.start()
            self._processes.append(process)
        deadline = time.monotonic() + timeout
        for _ in self._processes:
            try:
                self._ready.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                self.kill()
                raise RuntimeError("load processes did not get ready in time") from None
        self._go.set()
        self._started = time.monotonic()

    def join(self) -> LoadResult:
        spec = self.spec
        limit = CALL_TIMEOUT + 30 + (0 if spec.burst else spec.warmup + spec.duration)
        parts: list[dict[str, Any]] = []
        failed: list[str] = []
        for process in self._processes:
            try:
                parts.append(self._results.get(timeout=limit))
            except queue.Empty:
                failed.append(f"{process.name}: no result")
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        self._processes.clear()
        return _aggregate(spec, parts, failed, time.monotonic() - self._started)

    def kill(self) -> None:
        for process in self._processes:
            if process.is_alive():
                process.kill()
        self._processes.clear()


def run_load(spec: LoadSpec) -> LoadResult:
    run = LoadRun(spec)
    run.start()
    return run.join()


def _aggregate(
    spec: LoadSpec, parts: list[dict[str, Any]], failed: list[str], wall: float
) -> LoadResult:
    result = LoadResult(wall_s=wall, failed_workers=failed)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    first_start, last_end = float("inf"), 0.0
    for part in parts:
        if part.get("crash"):
            result.failed_workers.append(part["crash"])
            continue
        latencies.extend(part["latencies"])
        codes.update(part["codes"])
        result.sample_error = result.sample_error or part["sample_error"]
        first_start = min(first_start, part["first_start"])
        last_end = max(last_end, part["last_end"])
    latencies.sort()
    result.calls = sum(codes.values())
    result.codes = dict(codes)
    result.errors = result.calls - codes.get("OK", 0)
    if spec.burst:
        span = last_end - first_start if result.calls else 0.0
        result.calls_per_s = result.calls / span if span > 0 else 0.0
    else:
        result.calls_per_s = result.calls / spec.duration if spec.duration > 0 else 0.0
    result.p50_ms = percentile(latencies, 50) * 1000
    result.p99_ms = percentile(latencies, 99) * 1000
    return result


# --- inside the load processes -------------------------------------------------------


def _worker_main(
    spec: LoadSpec, index: int, concurrency: int, ready: Any, go: Event, results: Any
) -> None:
    work = _worker(spec, index, concurrency, ready, go)
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - same fallback as the service
            outcome = asyncio.run(work)
        else:
            outcome = uvloop.run(work)
        results.put(outcome)
    except BaseException as error:
        results.put({"crash": f"bench-load-{index}: {type(error).__name__}: {error}"})
        raise


async def _worker(
    spec: LoadSpec, index: int, concurrency: int, ready: Any, go: Event
) -> dict[str, Any]:
    import grpc
    import grpc.aio
    from users.v1 import user_service_pb2 as pb
    from users.v1 import user_service_pb2_grpc

    rng = random.Random(f"{spec.tag}-{index}")
    counter = iter(range(1_000_000_000))
    prefix = f"c{spec.tag}p{index}n"

    async with grpc.aio.insecure_channel(spec.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
        stub = user_service_pb2_grpc.UserServiceStub(channel)

        def get() -> Awaitable[Any]:
            user_id = rng.randint(spec.first_id, spec.last_id)
            return stub.GetUser(pb.GetUserRequest(id=user_id), timeout=CALL_TIMEOUT)

        def create() -> Awaitable[Any]:
            name = f"{prefix}{next(counter)}"
            request = pb.CreateUserRequest(
                username=name,
                password=spec.password,
                email=f"{name}@example.com",
                display_name="Bench Signup",
            )
            return stub.CreateUser(request, timeout=CALL_TIMEOUT)

        def transfer() -> Awaitable[Any]:
            source, dest = rng.sample(spec.funded_ids, 2)
            request = pb.TransferFundsRequest(
                from_user_id=source,
                to_user_id=dest,
                amount=rng.randint(1, 100),
                request_id=uuid.uuid4().hex,
            )
            return stub.TransferFunds(request, timeout=CALL_TIMEOUT)

        def mix() -> Awaitable[Any]:
            return transfer() if rng.random() < spec.write_share else get()

        make = {"get": get, "create": create, "transfer": transfer, "mix": mix}[spec.kind]

        latencies: list[float] = []
        codes: Counter[str] = Counter()
        sample_error = ""
        span = [float("inf"), 0.0]
        loop = asyncio.get_running_loop()
        ready.put(index)
        await loop.run_in_executor(None, go.wait)
        start = time.perf_counter()
        measure_from = start + spec.warmup
        measure_to = measure_from + spec.duration

        async def one() -> None:
            nonlocal sample_error
            began = time.perf_counter()
            try:
                await make()
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
                if not sample_error:
                    sample_error = f"{code}: {error.details()}"
            ended = time.perf_counter()
            if spec.burst or measure_from <= ended <= measure_to:
                latencies.append(ended - began)
                codes[code] += 1
                span[0] = min(span[0], began)
                span[1] = max(span[1], ended)

        async def caller() -> None:
            if spec.burst:
                await one()
                return
            while time.perf_counter() < measure_to:
                await one()

        tasks = [asyncio.create_task(caller()) for _ in range(concurrency)]
        if spec.burst:
            await asyncio.gather(*tasks)
        else:
            # Calls still in flight a second after the window would not be counted:
            # cancel them rather than wait for a queue of sign-ups to drain.
            _, late = await asyncio.wait(tasks, timeout=measure_to - time.perf_counter() + 1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
    return {
        "latencies": latencies,
        "codes": dict(codes),
        "sample_error": sample_error,
        "first_start": span[0],
        "last_end": span[1],
    }
