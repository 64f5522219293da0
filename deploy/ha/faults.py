"""Moving the primary: switchover, SIGKILL of a primary (and of its Patroni), rejoin.

Each returns, printing one JSON line, once the cluster is writable again
through PgBouncer (or, for a rejoin, once the node is the synchronous standby).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import members
import processes
from layout import PACKAGES, Layout
from members import wait_for

__all__ = [
    "START_WITHIN",
    "STOP_WITHIN",
    "emit",
    "failover",
    "rejoin",
    "start_patroni",
    "switchover",
]

# Bounded waits, generous for a loaded 2-core machine.
START_WITHIN = 120.0
PROMOTE_WITHIN = 90.0
STOP_WITHIN = 30.0


def emit(value: dict[str, object]) -> None:
    print(json.dumps(value), flush=True)


def start_patroni(layout: Layout, name: str) -> int:
    config = layout.node(name).directory(layout.path) / "patroni.yml"
    return processes.start(layout.path, f"patroni-{name}", [PACKAGES["patroni"], str(config)])


def patroni_pid(layout: Layout, name: str) -> int | None:
    pid = processes.read_pid(layout.path / "pids" / f"patroni-{name}.pid")
    return pid if pid is not None and processes.alive(pid) else None


def _new_primary(layout: Layout, old: str, started: float) -> None:
    new = wait_for(
        "another node becomes the primary",
        lambda: (lambda name: name if name and name != old else None)(members.leader(layout)),
        PROMOTE_WITHIN,
    )
    wait_for(f"{new} accepts writes through PgBouncer", lambda: members.accepts_writes(layout),
             PROMOTE_WITHIN)  # fmt: skip
    # CLOCK_MONOTONIC is shared by every process of the machine: callers can
    # line the fault up with their own timings.
    emit({
        "old": old, "new": new, "seconds": round(time.monotonic() - started, 3),
        "injected_monotonic": round(started, 6),
    })  # fmt: skip


def _current(layout: Layout) -> tuple[str, str]:
    """The primary and its synchronous standby, waiting (bounded) for a standby still rejoining."""

    def both() -> tuple[str, str] | None:
        primary, standby = members.leader(layout), members.sync_standby(layout)
        return (primary, standby) if primary and standby else None

    found: tuple[str, str] = wait_for("a primary with a synchronous standby", both, START_WITHIN)
    return found


def switchover(layout: Layout) -> None:
    primary, standby = _current(layout)
    started = time.monotonic()
    members.switchover(layout, layout.node(primary), layout.node(standby))
    _new_primary(layout, primary, started)


def failover(layout: Layout, *, postgres_too: bool) -> None:
    primary, _ = _current(layout)
    node = layout.node(primary)
    started = time.monotonic()
    patroni = patroni_pid(layout, primary)
    if patroni is not None:
        os.kill(patroni, signal.SIGKILL)
    postmaster = processes.postmaster_pid(node.data_dir(layout.path))
    if postgres_too and postmaster is not None:
        processes.kill_tree(postmaster)
    _new_primary(layout, primary, started)


def rejoin(layout: Layout, name: str | None) -> None:
    gone = [n.name for n in layout.nodes if patroni_pid(layout, n.name) is None]
    name = name or (gone[0] if gone else None)
    if name is None or name not in gone:
        sys.exit(f"cluster: no node without Patroni to rejoin (asked for {name})")
    log = layout.path / "logs" / f"patroni-{name}.log"
    offset = log.stat().st_size if log.exists() else 0
    started = time.monotonic()
    # Fence an orphaned PostgreSQL (its Patroni was killed) first, as Patroni's
    # watchdog would have: a Patroni 3.0 that starts next to a running primary
    # rewrites postgresql.conf without synchronous_standby_names and reloads it
    # before it demotes, and in that moment commits still waiting for the old
    # standby are released and acknowledged, then rewound away.
    postmaster = processes.postmaster_pid(layout.node(name).data_dir(layout.path))
    fenced = postmaster is not None
    if postmaster is not None:
        processes.wait_gone(processes.kill_tree(postmaster), STOP_WITHIN)
    start_patroni(layout, name)
    wait_for(f"{name} is the synchronous standby again",
             lambda: members.sync_standby(layout) == name, START_WITHIN)  # fmt: skip
    with log.open("rb") as text:
        text.seek(offset)
        rewound = b"pg_rewind" in text.read()
    seconds = round(time.monotonic() - started, 3)
    emit({"node": name, "fenced": fenced, "rewound": rewound, "seconds": seconds})
