"""``make soak``: minutes of bank load while PostgreSQL is restarted and crashed, then an audit.

The service runs as operators run it (``python -m service``, its own process)
against a throwaway PostgreSQL cluster (``tests/pg_cluster.py``), never the
shared one. Clients sign users up, deposit and transfer without pause; every
``SOAK_INTERVAL`` seconds the cluster is restarted (``pg_ctl restart -m fast``),
crashed and restarted (``-m immediate``), or crashed and left down for
``SOAK_OUTAGE`` seconds, in turn. The service itself is never restarted.

Printed: calls by code, each fault with the time to the first OK call after
the cluster was back, writes lost (calls that returned OK but left nothing in
the database), invariant violations of the bank, and malformed failures (any
code but UNAVAILABLE during the outage, or a status without our details).
Unanswered calls are then resent with the same request_id and the audit runs
again: each request must be applied exactly once.

Exit status 1 when a write was lost, an invariant broke, a failure was
malformed or the service did not recover after a fault; 0 otherwise.

Settings (environment): SOAK_SECONDS (default 120), SOAK_INTERVAL (8),
SOAK_OUTAGE (2), SOAK_CLIENTS (16).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.bank_load import OK, UNAVAILABLE, Audit, BankLoad, audit
from tests.ops_helpers import free_port, service_process
from tests.pg_cluster import ClusterUnavailable, PostgresCluster, throwaway_cluster

# A fault the service has not recovered from within this long counts as not survived.
RECOVERY_LIMIT = 30.0
FAULTS = ("restart -m fast", "restart -m immediate", "crash, down {outage:g}s")


@dataclass
class Fault:
    name: str
    back: float
    recovery: float | None = None


def _setting(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        sys.exit(f"soak: {name} must be a number, got {value!r}")


async def _inject(cluster: PostgresCluster, kind: int, outage: float) -> None:
    if kind == 0:
        await cluster.restart("fast")
    elif kind == 1:
        await cluster.restart("immediate")
    else:
        await cluster.stop("immediate")
        await asyncio.sleep(outage)
        await cluster.start()


async def soak(seconds: float, interval: float, outage: float, clients: int) -> int:
    async with throwaway_cluster() as cluster:
        url = await cluster.create_database("users")
        address = f"127.0.0.1:{free_port()}"
        with tempfile.TemporaryDirectory(prefix="users-soak-") as cwd:
            async with service_process(
                "--database-url", url, "--hash-threads", "1", "--access-log", "false",
                "--health-probe-interval", "1", "--log-level", "ERROR",
                listen=address, cwd=Path(cwd),
            ) as server:  # fmt: skip
                await server.wait_serving()
                print(f"soak: {seconds:g}s of load, {clients} clients, a fault every {interval:g}s")
                load = BankLoad(address, clients=clients)
                stop = asyncio.Event()
                calls = asyncio.create_task(load.run(stop))
                faults: list[Fault] = []
                started = time.monotonic()
                while time.monotonic() - started + interval < seconds:
                    await asyncio.sleep(interval)
                    kind = len(faults) % len(FAULTS)
                    await _inject(cluster, kind, outage)
                    faults.append(Fault(FAULTS[kind].format(outage=outage), time.monotonic()))
                await asyncio.sleep(max(seconds - (time.monotonic() - started), 0))
                # Give the last fault time to show a recovery before the clients stop.
                await _wait_for_recovery(load, faults[-1] if faults else None)
                stop.set()
                await calls
                elapsed = time.monotonic() - started
                for fault in faults:
                    first_ok = load.first_ok_after(fault.back)
                    fault.recovery = None if first_ok is None else first_ok - fault.back
                before = await audit(url, load.calls)
                retried = await load.retry_unavailable()
                after = await audit(url, load.calls, converged=True)
                alive = server.process.returncode is None
    return _report(load, faults, before, after, retried, elapsed, alive)


async def _wait_for_recovery(load: BankLoad, fault: Fault | None) -> None:
    if fault is None:
        return
    deadline = fault.back + RECOVERY_LIMIT
    while time.monotonic() < deadline:
        if load.first_ok_after(fault.back) is not None:
            return
        await asyncio.sleep(0.1)


def _report(
    load: BankLoad,
    faults: list[Fault],
    before: Audit,
    after: Audit,
    retried: int,
    elapsed: float,
    alive: bool,
) -> int:
    codes = load.codes
    survived = [f for f in faults if f.recovery is not None and f.recovery <= RECOVERY_LIMIT]
    recoveries = [f.recovery for f in survived if f.recovery is not None]
    print(f"\nsoak: {elapsed:.0f}s, {sum(codes.values())} calls, {len(load.users)} users")
    print("calls by code: " + ", ".join(f"{code} {n}" for code, n in codes.most_common()))
    others = {c: n for c, n in codes.items() if c not in {"OK", "UNAVAILABLE"}}
    print(
        f"  OK {codes['OK']}, UNAVAILABLE {codes['UNAVAILABLE']}, other codes {others or 0}"
        " (FAILED_PRECONDITION: a transfer beyond the balance, INSUFFICIENT_FUNDS)"
    )
    sign_ups = [c for c in load.calls if c.method == "CreateUser"]
    unavailable = {c.request.request_id for c in sign_ups if c.code == UNAVAILABLE}
    replayed = {c.request.request_id for c in sign_ups if c.code == OK} & unavailable
    print(
        f"sign-ups answered OK on a resend after UNAVAILABLE: {len(replayed)}"
        " (same request_id: the first attempt's user, or a new one if it was lost)"
    )
    print(f"faults survived: {len(survived)} of {len(faults)}")
    for number, fault in enumerate(faults, 1):
        shown = "never" if fault.recovery is None else f"{fault.recovery * 1000:.0f} ms"
        print(f"  {number:2d}. {fault.name:<22} first OK after the cluster was back: {shown}")
    if recoveries:
        print(
            f"recovery: min {min(recoveries) * 1000:.0f} ms, median"
            f" {statistics.median(recoveries) * 1000:.0f} ms, max {max(recoveries) * 1000:.0f} ms"
        )
    print(
        f"UNAVAILABLE calls resent after the run with the same request_id: {retried}"
        " (then audited again: each request applied exactly once)"
    )
    lost = before.lost + after.lost
    violations = before.violations + after.violations
    print(f"writes lost: {len(lost)}")
    print(f"invariant violations: {len(violations)}")
    print(f"malformed or unexpected failures: {len(load.bad)}")
    print(f"service process still running: {'yes' if alive else 'NO'}")
    for line in (lost + violations + load.bad)[:20]:
        print("  " + line)
    failed = lost or violations or load.bad or len(survived) < len(faults) or not alive
    print("soak: FAILED" if failed else "soak: passed")
    return 1 if failed else 0


def main() -> None:
    seconds = _setting("SOAK_SECONDS", 120)
    interval = _setting("SOAK_INTERVAL", 8)
    outage = _setting("SOAK_OUTAGE", 2)
    clients = int(_setting("SOAK_CLIENTS", 16))
    try:
        status = asyncio.run(soak(seconds, interval, outage, clients))
    except ClusterUnavailable as error:
        sys.exit(f"soak: cannot run a private PostgreSQL cluster: {error}")
    sys.exit(status)


if __name__ == "__main__":
    main()
