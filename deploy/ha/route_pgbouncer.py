"""Patroni callback: point PgBouncer at this node when it becomes the primary.

Patroni runs it (as ``postgres``, with the system Python) on start and on
every role change as ``route_pgbouncer.py ROOT NODE ACTION ROLE SCOPE``. When
ROLE is the primary and this node holds the leader lock, it rewrites
PgBouncer's ``[databases]`` include to this node's port and sends PgBouncer
SIGHUP: PgBouncer reloads, closes its idle server connections to the old node
and closes busy ones as they are released; clients stay connected. Other
roles change nothing: only a promotion moves the writes, and the demoted node
refuses them (read-only) until then.

The lock matters: a Patroni restarted next to an orphaned primary (its
Patroni was killed, another node has been promoted since) reports ``on_start``
with role master before it demotes that PostgreSQL. Routing then would send
writes to a node about to be rewound. Patroni's ``/primary`` answers 200 only
on the lock holder, so the callback waits for it (bounded) or does nothing.

Standard library only. Patroni kills a callback still running when the next
one starts, which is what we want: the newer event wins.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PRIMARY_ROLES = {"master", "primary", "promoted"}
# How long a promoted node may take to report itself as the lock holder.
LEADER_WAIT = 10.0


def holds_leader_lock(api_port: int) -> bool:
    """Wait (bounded) until Patroni on this node says it holds the leader lock."""
    deadline = time.monotonic() + LEADER_WAIT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/primary", timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return False


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print("usage: route_pgbouncer.py ROOT NODE ACTION ROLE [SCOPE]", file=sys.stderr)
        return 2
    root, name, action, role = Path(argv[0]), argv[1], argv[2], argv[3]
    if role not in PRIMARY_ROLES or action not in {"on_start", "on_role_change"}:
        return 0
    state = json.loads((root / "state.json").read_text())
    node = next(n for n in state["nodes"] if n["name"] == name)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    if not holds_leader_lock(node["api_port"]):
        with (root / "logs" / "routing.log").open("a") as log:
            log.write(f"{stamp} {name} {action} {role}: not the lock holder, PgBouncer unchanged\n")
        return 0
    run = root / "pgbouncer"
    include = run / "databases.ini"
    text = (
        "; Rewritten on every promotion by route_pgbouncer.py.\n"
        f"users = host=127.0.0.1 port={node['pg_port']} dbname=users\n"
    )
    # Write then rename: PgBouncer never reads half a file.
    partial = include.with_suffix(".tmp")
    partial.write_text(text)
    os.replace(partial, include)
    with (root / "logs" / "routing.log").open("a") as log:
        log.write(f"{stamp} {name} {action} {role}: PgBouncer -> port {node['pg_port']}\n")
    try:
        pid = int((run / "pgbouncer.pid").read_text().split()[0])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError):
        pass  # PgBouncer not started yet: it reads the file when it starts.
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
