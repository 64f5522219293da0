"""Resource bounds: a sign-up storm, oversized messages and idle connections.

These are correctness checks, not benchmarks: each bound is loose enough for a
loaded 2-core machine and tight enough to fail if the property is lost (hashing
on the event loop, one thread or one 19 MiB argon2 buffer per call, a server
that falls over on a huge message or starves active callers behind idle
ones). The figures observed are printed (``pytest -s`` shows them).

The server runs in this process, so its threads and memory are this
process's: ``threading.enumerate()`` and ``/proc/self/status``.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.testing import running_service
from tests.helpers import PASSWORD, create_user, failure
from tests.ops_helpers import stub_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

MIB = 1024 * 1024
STORM = 1000
HASH_THREADS = 2
# argon2id with the OWASP parameters the service uses: 19 MiB per hash in progress.
ARGON2_MEMORY = 19 * MIB
# What one queued call may cost while it waits for a hashing slot (its request,
# its grpc and asyncio state): far less than this.
PER_WAITING_CALL = 64 * 1024
# Allocator and interpreter noise (arenas, caches, the access log's queue).
SLACK = 96 * MIB
# A read must answer within this or this many times the idle latency, whichever
# is larger. Hashing on the event loop would hold a read behind ~1000 hashes
# (about 17 s at 17 ms each); fair sharing keeps it well under a second.
READ_FLOOR_SECONDS = 5.0
READ_IDLE_FACTOR = 50


def rss_bytes() -> int:
    """This process's resident set size (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def hash_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("password-hash"))


@dataclass
class Sampler:
    """Samples RSS and thread counts every few milliseconds until stopped."""

    interval: float = 0.01
    peak_rss: int = 0
    peak_hash_threads: int = 0
    peak_threads: int = 0
    peak_in_flight: int = 0
    samples: int = 0
    in_flight: Callable[[], float] = lambda: 0.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, rss_bytes())
            self.peak_hash_threads = max(self.peak_hash_threads, hash_threads())
            self.peak_threads = max(self.peak_threads, threading.active_count())
            self.peak_in_flight = max(self.peak_in_flight, int(self.in_flight()))
            self.samples += 1
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()


async def timed_get(stub: UserServiceAsyncStub, user_id: int) -> float:
    started = time.perf_counter()
    got = await stub.GetUser(user_service_pb2.GetUserRequest(id=user_id), timeout=60)
    assert got.id == user_id
    return time.perf_counter() - started


async def idle_latency(stub: UserServiceAsyncStub, user_id: int, calls: int = 30) -> float:
    """The median GetUser latency with nothing else going on."""
    return statistics.median([await timed_get(stub, user_id) for _ in range(calls)])


def sign_up(i: int) -> user_service_pb2.CreateUserRequest:
    return user_service_pb2.CreateUserRequest(
        username=f"storm{i}", password=f"{PASSWORD} {i}", email=f"storm{i}@example.com"
    )


async def test_a_sign_up_storm_keeps_threads_and_memory_bounded_and_reads_answered(
    database_url,
):
    async with running_service(
        database_url, hash_threads=HASH_THREADS, max_concurrent_rpcs=0, access_log=False
    ) as running:
        stub = stub_of(running)
        reader = await create_user(stub, "reader")  # also warms the hashing pool up
        async with grpc.aio.insecure_channel(running.address) as read_channel:
            reads = user_service_pb2_grpc.UserServiceStub(read_channel)
            idle = await idle_latency(reads, reader.id)
            baseline_rss, baseline_threads = rss_bytes(), threading.active_count()
            # The server's own count of calls being served (the sampler's reads included).
            registry = running.server.metrics.registry
            sampler = Sampler(
                in_flight=lambda: registry.get_sample_value("grpc_server_in_flight_calls") or 0
            )
            sampling = asyncio.create_task(sampler.run())

            started = time.perf_counter()
            storm = asyncio.gather(
                *(stub.CreateUser(sign_up(i), timeout=300) for i in range(STORM))
            )
            storm_task = asyncio.ensure_future(storm)
            read_latencies: list[float] = []
            while not storm_task.done():
                read_latencies.append(await timed_get(reads, reader.id))
                await asyncio.sleep(0.05)
            created = await storm_task
            storm_seconds = time.perf_counter() - started
            sampler.stop()
            await sampling

        assert len({u.id for u in created}) == STORM
        listed = await stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=1))
        assert listed.total_size == STORM + 1

    growth = sampler.peak_rss - baseline_rss
    rss_bound = HASH_THREADS * ARGON2_MEMORY + STORM * PER_WAITING_CALL + SLACK
    read_bound = max(READ_FLOOR_SECONDS, READ_IDLE_FACTOR * idle)
    print(
        f"\n[{database_url.split(':')[0]}] {STORM} sign-ups in {storm_seconds:.1f} s;"
        f" RSS {baseline_rss / MIB:.0f} MiB -> peak {sampler.peak_rss / MIB:.0f} MiB"
        f" (+{growth / MIB:.0f} MiB, bound {rss_bound / MIB:.0f} MiB);"
        f" hashing threads peak {sampler.peak_hash_threads} (configured {HASH_THREADS});"
        f" threads {baseline_threads} -> peak {sampler.peak_threads};"
        f" calls in flight peak {sampler.peak_in_flight};"
        f" GetUser idle median {idle * 1000:.1f} ms, during the storm {len(read_latencies)}"
        f" calls, median {statistics.median(read_latencies) * 1000:.1f} ms,"
        f" max {max(read_latencies) * 1000:.0f} ms (bound {read_bound * 1000:.0f} ms);"
        f" {sampler.samples} samples"
    )
    # The storm really was most of 1,000 calls in the server at once (the first
    # ones finish while the last ones still arrive).
    assert sampler.peak_in_flight >= STORM * 3 // 4
    # The pool queues: never more hashing threads than configured, and no other thread per call.
    assert sampler.peak_hash_threads == HASH_THREADS
    assert sampler.peak_threads <= baseline_threads + 4
    assert growth <= rss_bound
    # Reads were answered all along, each promptly: the storm did not starve them.
    assert len(read_latencies) >= 5, "the storm lasted long enough to read during it"
    assert max(read_latencies) <= read_bound


# -- messages over the limit ----------------------------------------------------------


async def test_requests_over_the_default_4_mib_limit_are_resource_exhausted(stub, subtests):
    huge_text = "x" * (5 * 1000 * 1000)
    # 500,000 ids of 9 bytes each are over 4 MiB on the wire: refused before any
    # validation could count them.
    huge_ids = [2**62 + i for i in range(500_000)]
    owner = await create_user(stub, "owner")
    calls = {
        "CreateUser display_name": stub.CreateUser(
            user_service_pb2.CreateUserRequest(
                username="big", password=PASSWORD, email="big@example.com", display_name=huge_text
            )
        ),
        "CreateUser password": stub.CreateUser(
            user_service_pb2.CreateUserRequest(
                username="big2", password=huge_text, email="big2@example.com"
            )
        ),
        "BatchGetUsers ids": stub.BatchGetUsers(
            user_service_pb2.BatchGetUsersRequest(ids=huge_ids)
        ),
        "AuthenticateUser password": stub.AuthenticateUser(
            user_service_pb2.AuthenticateUserRequest(username="owner", password=huge_text)
        ),
        "ListUsers username_prefix": stub.ListUsers(
            user_service_pb2.ListUsersRequest(username_prefix=huge_text)
        ),
    }
    for name, call in calls.items():
        with subtests.test(call=name):
            got = await failure(call)
            assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED, got

    # The server is still up and nothing was created by the refused calls.
    page = await stub.ListUsers(user_service_pb2.ListUsersRequest())
    assert [u.username for u in page.users] == ["owner"]
    batch = await stub.BatchGetUsers(user_service_pb2.BatchGetUsersRequest(ids=[owner.id] * 1000))
    assert len(batch.users) == 1000
    login = await stub.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(username="owner", password=PASSWORD)
    )
    assert login.user.id == owner.id


async def test_a_request_just_under_the_limit_is_judged_on_its_fields(stub):
    # Under 4 MiB it reaches the service, which refuses it by its own rules.
    got = await failure(
        stub.CreateUser(
            user_service_pb2.CreateUserRequest(
                username="under",
                password=PASSWORD,
                email="under@example.com",
                display_name="x" * (4 * MIB - 1024),
            )
        )
    )
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(got.violations) == {"display_name"}


# -- idle connections --------------------------------------------------------------------

IDLE_CHANNELS = 200


async def test_many_idle_connections_do_not_starve_an_active_one(database_url):
    async with running_service(database_url, access_log=False) as running:
        stub = stub_of(running)
        user = await create_user(stub, "active")
        idle = await idle_latency(stub, user.id)
        baseline_threads, baseline_rss = threading.active_count(), rss_bytes()

        channels = [grpc.aio.insecure_channel(running.address) for _ in range(IDLE_CHANNELS)]
        try:
            # Each makes one call (so that its connection is really open) and then sits idle.
            stubs = [user_service_pb2_grpc.UserServiceStub(c) for c in channels]
            await asyncio.gather(
                *(s.GetUser(user_service_pb2.GetUserRequest(id=user.id)) for s in stubs)
            )
            assert all(c.get_state() == grpc.ChannelConnectivity.READY for c in channels), (
                "every idle channel holds an open connection"
            )

            latencies = [await timed_get(stub, user.id) for _ in range(100)]
            # The active channel can also still write.
            later = await create_user(stub, "latecomer")
            # And an idle channel, woken up, still answers.
            woken = await stubs[0].GetUser(user_service_pb2.GetUserRequest(id=later.id))
            assert woken.username == "latecomer"
            threads, rss = threading.active_count(), rss_bytes()
        finally:
            await asyncio.gather(*(c.close(None) for c in channels))

    bound = max(READ_FLOOR_SECONDS / 5, READ_IDLE_FACTOR * idle)
    print(
        f"\n[{database_url.split(':')[0]}] {IDLE_CHANNELS} idle connections:"
        f" GetUser idle median {idle * 1000:.1f} ms -> median"
        f" {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.0f} ms"
        f" (bound {bound * 1000:.0f} ms); threads {baseline_threads} -> {threads};"
        f" RSS +{(rss - baseline_rss) / MIB:.0f} MiB"
    )
    assert max(latencies) <= bound
    # Connections are served by the event loop, not by a thread each.
    assert threads <= baseline_threads + 4


async def test_idle_connections_take_no_slot_of_the_concurrent_call_limit(database_url):
    """max_concurrent_rpcs counts calls, not connections."""
    calls = 50
    async with running_service(
        database_url, max_concurrent_rpcs=calls, access_log=False
    ) as running:
        stub = stub_of(running)
        user = await create_user(stub, "counted")
        channels = [grpc.aio.insecure_channel(running.address) for _ in range(IDLE_CHANNELS)]
        try:
            stubs = [user_service_pb2_grpc.UserServiceStub(c) for c in channels]
            for s in stubs:  # one at a time: never more than one call in flight
                await s.GetUser(user_service_pb2.GetUserRequest(id=user.id))
            got = await asyncio.gather(
                *(
                    stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))
                    for _ in range(calls // 2)
                )
            )
            assert len(got) == calls // 2
        finally:
            await asyncio.gather(*(c.close(None) for c in channels))
