"""``make ha-soak``: bank load through every replica of the HA cluster while its primary moves.

``deploy/ha/cluster.py`` starts etcd, two Patroni nodes (synchronous
standby), PgBouncer and the service replicas; clients sign up, deposit and
transfer through all replicas without pause. Between phases of
``HA_SOAK_SECONDS`` the soak injects, in turn: a switchover, a failover
(SIGKILL of the primary's PostgreSQL and Patroni), the rejoin of that node
(pg_rewind), a SIGKILL of the primary's Patroni alone (its PostgreSQL runs on
until the leader key expires), and the rejoin of that node. Replicas are never
restarted.

Printed per fault: what cluster.py measured (seconds to a write through
PgBouncer on the new primary), the first OK call after the fault was injected
and after the command returned, the longest stretch without any OK call, and
calls by code. Then: acknowledged writes lost, invariant violations (before
and after every UNAVAILABLE call is resent with its request_id), malformed
failures (a code other than OK/UNAVAILABLE, a status without our details),
tracebacks in the replicas' logs, and whether each replica still runs.

Exit status 1 unless writes lost, violations, malformed failures and
tracebacks are all 0 and every replica survived.

Settings (environment): HA_SOAK_SECONDS (phase length, default 20),
HA_SOAK_CLIENTS (per replica, default 6), HA_SOAK_REPLICAS (default 2).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from tests.bank_load import OK, Audit, BankLoad, Call, audit
from tests.ha_cluster import HaCluster, HaUnavailable, ha_cluster
from tests.ops_helpers import health_status

FAULTS = ("switchover", "failover", "rejoin", "kill-patroni", "rejoin")
# The soak waits this long after the last fault for an OK call before it stops.
RECOVERY_LIMIT = 60.0


@dataclass
class FaultRecord:
    name: str
    injected: float
    returned: float = 0.0
    reply: dict[str, object] = field(default_factory=dict)
    first_ok: float | None = None
    first_ok_after_return: float | None = None
    longest_gap: float = 0.0
    codes: Counter[str] = field(default_factory=Counter)


@dataclass
class Outcome:
    faults: list[FaultRecord]
    calls: list[Call]
    bad: list[str]
    before: Audit
    after: Audit
    retried: int
    tracebacks: list[str]
    replicas_alive: list[bool]
    seconds: float
    # Feed listeners (LISTEN over --events-direct-url) on the final primary, one per replica.
    listeners_on_primary: int
    replicas: int

    @property
    def failed(self) -> bool:
        return bool(
            self.before.lost
            or self.after.lost
            or self.before.violations
            or self.after.violations
            or self.bad
            or self.tracebacks
            or not all(self.replicas_alive)
            or self.listeners_on_primary != self.replicas
            or any(f.first_ok is None for f in self.faults)
        )


def _setting(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        sys.exit(f"ha-soak: {name} must be a number, got {value!r}")


def _first_ok(calls: list[Call], moment: float) -> float | None:
    ends = [c.ended for c in calls if c.code == OK and c.started >= moment]
    return min(ends) - moment if ends else None


def _longest_gap(calls: list[Call], start: float, end: float) -> float:
    """The longest time in [start, end] in which no call ended OK."""
    oks = sorted(c.ended for c in calls if c.code == OK and start <= c.ended <= end)
    edges = [start, *oks, end]
    return max(b - a for a, b in itertools.pairwise(edges))


async def run_soak(phase: float, clients: int, replicas: int) -> Outcome:
    async with ha_cluster(replicas) as cluster:
        loads = [BankLoad(address, clients=clients) for address in cluster.addresses]
        pids = cluster.service_pids()
        stop = asyncio.Event()
        running = [asyncio.create_task(load.run(stop)) for load in loads]
        started = time.monotonic()
        faults: list[FaultRecord] = []
        try:
            await asyncio.sleep(phase)
            for name in FAULTS:
                record = FaultRecord(name, time.monotonic())
                record.reply = await cluster.command(name)
                record.returned = time.monotonic()
                # When the fault itself happened, as cluster.py saw it (same clock).
                injected = record.reply.get("injected_monotonic")
                if isinstance(injected, float):
                    record.injected = injected
                faults.append(record)
                await asyncio.sleep(phase)
            await _wait_for_ok(loads, faults[-1].returned)
        finally:
            stop.set()
            await asyncio.gather(*running, return_exceptions=True)
        ended = time.monotonic()
        calls = sorted((c for load in loads for c in load.calls), key=lambda c: c.started)
        _measure(faults, calls, ended)
        url = await cluster.primary_url()
        before = await audit(url, calls)
        retried = sum([await load.retry_unavailable() for load in loads])
        calls = [c for load in loads for c in load.calls]
        after = await audit(url, calls, converged=True)
        alive = [await health_status(a) is not None for a in cluster.addresses]
        alive = [a and _running(pid) for a, pid in zip(alive, pids, strict=True)]
        tracebacks = _tracebacks(cluster)
        listeners = await _listeners_on(url, replicas)
    bad = [line for load in loads for line in load.bad]
    return Outcome(
        faults, calls, bad, before, after, retried, tracebacks, alive, ended - started,
        listeners, replicas,
    )  # fmt: skip


# deploy/ha/layout.py names the services' direct connections so.
EVENTS_APPLICATION_NAME = "users-events"


async def _listeners_on(url: str, expected: int, within: float = 20.0) -> int:
    """How many feed listeners the primary has, once ``expected`` are there or time is up.

    Each replica's listener lost its node when that node was demoted or
    fenced, and must have found the primary again among both nodes.
    """
    deadline = time.monotonic() + within
    while True:
        connection = await asyncpg.connect(url)
        try:
            found = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = $1 AND query ~ '^(LISTEN|NOTIFY) '",
                EVENTS_APPLICATION_NAME,
            )
        finally:
            await connection.close()
        if found == expected or time.monotonic() > deadline:
            return int(found)
        await asyncio.sleep(0.5)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


async def _wait_for_ok(loads: list[BankLoad], moment: float) -> None:
    deadline = time.monotonic() + RECOVERY_LIMIT
    while time.monotonic() < deadline:
        if all(load.first_ok_after(moment) is not None for load in loads):
            return
        await asyncio.sleep(0.2)


def _measure(faults: list[FaultRecord], calls: list[Call], ended: float) -> None:
    for index, fault in enumerate(faults):
        until = faults[index + 1].injected if index + 1 < len(faults) else ended
        fault.first_ok = _first_ok(calls, fault.injected)
        fault.first_ok_after_return = _first_ok(calls, fault.returned)
        fault.longest_gap = _longest_gap(calls, fault.injected, until)
        fault.codes = Counter(c.code.name for c in calls if fault.injected <= c.started < until)


def _tracebacks(cluster: HaCluster) -> list[str]:
    lines = cluster.service_logs().splitlines()
    return [lines[i + 1] if i + 1 < len(lines) else line for i, line in enumerate(lines)
            if line.startswith("Traceback")]  # fmt: skip


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"


def report(outcome: Outcome) -> int:
    codes = Counter(c.code.name for c in outcome.calls)
    print(f"\nha-soak: {outcome.seconds:.0f}s, {sum(codes.values())} calls")
    print("calls by code: " + ", ".join(f"{code} {n}" for code, n in codes.most_common()))
    for number, fault in enumerate(outcome.faults, 1):
        print(f"  {number}. {fault.name:<13} cluster.py: {fault.reply}")
        print(
            f"     first OK after the fault: {_ms(fault.first_ok)}, after the command"
            f" returned: {_ms(fault.first_ok_after_return)}, longest stretch without an OK"
            f" call: {_ms(fault.longest_gap)}"
        )
        print("     calls: " + ", ".join(f"{c} {n}" for c, n in fault.codes.most_common()))
    print(f"UNAVAILABLE calls resent after the run with the same request_id: {outcome.retried}")
    lost = outcome.before.lost + outcome.after.lost
    violations = outcome.before.violations + outcome.after.violations
    print(f"acknowledged writes lost: {len(lost)}")
    print(f"invariant violations: {len(violations)}")
    print(f"malformed or unexpected failures: {len(outcome.bad)}")
    print(f"tracebacks in the replicas' logs: {len(outcome.tracebacks)}")
    print(f"replicas still running, never restarted: {outcome.replicas_alive}")
    print(
        f"feed listeners on the final primary: {outcome.listeners_on_primary} of {outcome.replicas}"
    )
    for line in (lost + violations + outcome.bad + outcome.tracebacks)[:20]:
        print("  " + line)
    print("ha-soak: FAILED" if outcome.failed else "ha-soak: passed")
    return 1 if outcome.failed else 0


def main() -> None:
    phase = _setting("HA_SOAK_SECONDS", 20)
    clients = int(_setting("HA_SOAK_CLIENTS", 6))
    replicas = int(_setting("HA_SOAK_REPLICAS", 2))
    print(f"ha-soak: {replicas} replicas, {clients} clients each, {phase:g}s between faults")
    try:
        outcome = asyncio.run(run_soak(phase, clients, replicas))
    except HaUnavailable as error:
        sys.exit(f"ha-soak: cannot run the HA cluster here: {error}")
    sys.exit(report(outcome))


if __name__ == "__main__":
    main()
