"""Starting, finding and stopping the processes of one HA cluster, all under its directory.

Every process started is recorded in ``DIR/pids/NAME.pid``; PostgreSQL's own
pid is in its data directory. Stopping touches those pids (and their
children) only, so that two clusters, or the machine's own PostgreSQL, are
never hit. PostgreSQL, PgBouncer, Patroni and etcd run as ``postgres``:
PostgreSQL refuses to run as root, and the others need not.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

__all__ = [
    "RUN_AS",
    "alive",
    "children",
    "kill_tree",
    "postmaster_pid",
    "read_pid",
    "start",
    "stop",
    "wait_gone",
]

RUN_AS = "postgres"


def _owner_env() -> tuple[dict[str, str], int | None, int | None]:
    """The environment, uid and gid that run a command as RUN_AS (None, None: as we are)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USERS_", "PG"))}
    if os.geteuid() != 0:
        return env, None, None
    account = pwd.getpwnam(RUN_AS)
    env.update(HOME=account.pw_dir, USER=RUN_AS, LOGNAME=RUN_AS)
    return env, account.pw_uid, account.pw_gid


def start(
    root: Path,
    name: str,
    command: list[str],
    *,
    as_owner: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``command`` in a session of its own, logging to DIR/logs/NAME.log; its pid."""
    owner_env, uid, gid = _owner_env() if as_owner else ({}, None, None)
    environment = dict(env if env is not None else os.environ)
    if as_owner:
        environment = {**owner_env, **(env or {})}
    log = (root / "logs" / f"{name}.log").open("ab")
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd or root,
            start_new_session=True,
            user=uid,
            group=gid,
            extra_groups=None if uid is None else [],
        )
    finally:
        log.close()
    pids = root / "pids"
    pids.mkdir(exist_ok=True)
    pid: int = process.pid
    (pids / f"{name}.pid").write_text(f"{pid}\n")
    return pid


def read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None


def postmaster_pid(data_dir: Path) -> int | None:
    pid = read_pid(data_dir / "postmaster.pid")
    return pid if pid is not None and alive(pid) else None


def alive(pid: int) -> bool:
    """True while ``pid`` runs and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            parents.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int, signum: int = signal.SIGKILL) -> list[int]:
    """Signal ``pid`` and all its descendants (children first found, then signalled)."""
    targets = [pid, *children(pid)]
    for target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signum)
    return targets


def _reap(pid: int) -> None:
    # Our own children (started by this process) become zombies until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_gone(pids: list[int], within: float) -> list[int]:
    """Wait up to ``within`` seconds for ``pids`` to exit; those still running."""
    deadline = time.monotonic() + within
    while True:
        for pid in pids:
            _reap(pid)
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def stop(pid: int | None, signum: int, within: float) -> bool:
    """Send ``signum``, wait up to ``within`` s, then SIGKILL the tree; True if it was running."""
    if pid is None or not alive(pid):
        return False
    tree = [pid, *children(pid)]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
    left = wait_gone([pid], within)
    for leftover in left + [p for p in tree if alive(p)]:
        kill_tree(leftover)
    wait_gone(tree, 5)
    return True
