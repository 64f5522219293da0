"""Patroni callback: point PgBouncer at this node when it becomes the primary.

Patroni runs it (as ``postgres``, with the system Python) on start and on
every role change as ``route_pgbouncer.py ROOT NODE ACTION ROLE SCOPE``. When
ROLE is the primary, it rewrites PgBouncer's ``[databases]`` include to this
node's port and sends PgBouncer SIGHUP: PgBouncer reloads, closes its idle
server connections to the old node and closes busy ones as they are released;
clients stay connected. Other roles change nothing: only a promotion moves
the writes, and the demoted node refuses them (read-only) until then.

Standard library only; it must return within a second or two, since Patroni
kills a callback still running when the next one starts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

PRIMARY_ROLES = {"master", "primary", "promoted"}


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print("usage: route_pgbouncer.py ROOT NODE ACTION ROLE [SCOPE]", file=sys.stderr)
        return 2
    root, name, action, role = Path(argv[0]), argv[1], argv[2], argv[3]
    if role not in PRIMARY_ROLES or action not in {"on_start", "on_role_change"}:
        return 0
    state = json.loads((root / "state.json").read_text())
    node = next(n for n in state["nodes"] if n["name"] == name)
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
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
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
