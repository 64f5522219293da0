"""What the cluster looks like now: Patroni's REST API, and a write through PgBouncer.

Every wait here is bounded: it raises ``NotReady`` naming what it waited for.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from layout import APP_USER, DATABASE, PG_BIN

if TYPE_CHECKING:
    from collections.abc import Callable

    from layout import Layout, Node

__all__ = ["NotReady", "accepts_writes", "members", "switchover", "wait_for"]


class NotReady(RuntimeError):
    """Something the cluster should reach did not happen in time."""


def wait_for(what: str, check: Callable[[], Any], within: float, interval: float = 0.2) -> Any:
    """Call ``check`` until it returns something true; that value. NotReady after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise NotReady(f"not within {within:g}s: {what}")
        time.sleep(interval)


def _get(node: Node, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{node.api_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except (OSError, ValueError):
        return 0, None


def members(layout: Layout) -> dict[str, dict[str, Any]]:
    """Patroni's view, by member name (role: leader, sync_standby, replica), from any node."""
    for node in layout.nodes:
        status, body = _get(node, "/cluster")
        if status == 200 and isinstance(body, dict):
            return {member["name"]: member for member in body.get("members", [])}
    return {}


def leader(layout: Layout) -> str | None:
    for name, member in members(layout).items():
        if member.get("role") == "leader" and member.get("state") == "running":
            return name
    return None


def sync_standby(layout: Layout) -> str | None:
    """The synchronous standby, once it streams."""
    for name, member in members(layout).items():
        if member.get("role") == "sync_standby" and member.get("state") in {
            "running",
            "streaming",
        }:
            return name
    return None


def switchover(layout: Layout, old: Node, new: Node) -> None:
    """Ask Patroni for a switchover now; raises NotReady when it refuses."""
    token = base64.b64encode(f"patroni:{layout.passwords['restapi']}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{old.api_port}/switchover",
        data=json.dumps({"leader": old.name, "candidate": new.name}).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            reply.read()
    except urllib.error.HTTPError as error:
        raise NotReady(f"Patroni refused the switchover: {error.read().decode()}") from error


def accepts_writes(layout: Layout) -> bool:
    """True when a transaction that takes a transaction id commits through PgBouncer."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
        "PGPASSWORD": layout.passwords["app"],
        "PGCONNECT_TIMEOUT": "2",
    }
    command = [
        f"{PG_BIN}/psql", "-X", "-q", "-At", "-h", "127.0.0.1",
        "-p", str(layout.bouncer_port), "-U", APP_USER, "-d", DATABASE,
        "-c", "SET statement_timeout = 2000; SELECT txid_current()",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, env=env, capture_output=True, timeout=5, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0
