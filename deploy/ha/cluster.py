"""A highly available users deployment on loopback: etcd, Patroni, PgBouncer and N replicas.

    python deploy/ha/cluster.py up --dir DIR [--replicas N]
    python deploy/ha/cluster.py switchover|failover|kill-patroni|rejoin|status|down --dir DIR

``up`` returns once every replica is SERVING and prints one JSON line
(``{"grpc": [...], "primary": NAME, ...}``). ``switchover`` asks Patroni to
hand the primary over to the synchronous standby; ``failover`` kills the
primary's PostgreSQL and Patroni with SIGKILL; ``kill-patroni`` kills only
the primary's Patroni (its PostgreSQL runs on, orphaned). Each prints
``{"old": NAME, "new": NAME, "seconds": S}`` once the new primary accepts a
write through PgBouncer. ``rejoin`` restarts the Patroni of a node whose
Patroni is gone: it rewinds (pg_rewind) and follows the new primary, and the
command returns once that node is the synchronous standby again. ``down``
stops everything it started. Every wait is bounded.

Any python3 runs it: without the service's dependencies it runs itself again
on the project's virtual environment (``make setup``). Run it as root
or as a user who may run the ``postgres`` account's daemons; see README.md.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults
import members
import processes
from faults import START_WITHIN, STOP_WITHIN, emit
from layout import DATABASE, PACKAGES, PG_BIN, Layout, load, write_configs
from members import NotReady, wait_for

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent.parent
# The services' side of a failover: a query to a hung primary is abandoned
# after this long (UNAVAILABLE), and health is probed every second.
SERVICE_FLAGS = ["--db-command-timeout", "5", "--health-probe-interval", "1"]


def _on_project_python() -> None:
    """Run again on the project's .venv (``make setup``) when this python lacks the service's deps.

    The replicas run on ``sys.executable`` and the readiness check speaks gRPC,
    so ``python deploy/ha/cluster.py`` works with any python3 once .venv exists.
    """
    venv = REPOSITORY / ".venv" / "bin" / "python"
    if importlib.util.find_spec("grpc") is None and venv.exists():
        os.execv(venv, [str(venv), str(Path(__file__).resolve()), *sys.argv[1:]])


def ensure_packages() -> None:
    """Install Debian's patroni, etcd-server and pgbouncer if any is missing."""
    missing = [name for name, path in PACKAGES.items() if not Path(path).exists()]
    if not Path(PG_BIN, "postgres").exists():
        missing.append("postgresql-15")
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"cluster: missing {', '.join(missing)}; run `make ha` as root to install them")
    print(f"cluster: installing {' '.join(missing)}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, "python3-etcd"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def _give_to_owner(root: Path) -> None:
    if os.geteuid() != 0:
        return
    account = pwd.getpwnam(processes.RUN_AS)
    for path in [root, *root.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid)
    # The owner must be able to reach the directory itself.
    probe = subprocess.run(
        ["runuser", "-u", processes.RUN_AS, "--", "test", "-w", str(root)],
        check=False,
    )
    if probe.returncode != 0:
        sys.exit(f"cluster: {processes.RUN_AS} cannot reach {root}; use a directory under /tmp")


def _psql_as_owner(layout: Layout, port: int, sql: str) -> None:
    node_dir = next(n for n in layout.nodes if n.pg_port == port).directory(layout.path)
    command = [f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(node_dir),
               "-p", str(port), "-U", "postgres", "-d", "postgres", "-c", sql]  # fmt: skip
    if os.geteuid() == 0:
        command = ["runuser", "-u", processes.RUN_AS, "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def _service_ready(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="users.v1.UserService"), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def up(root: Path, replicas: int) -> None:
    ensure_packages()
    if (root / "state.json").exists() and _running(load(root)):
        sys.exit(f"cluster: {root} already runs a cluster; `down --dir {root}` first")
    if root.exists() and any(root.iterdir()):
        if not (root / "state.json").exists():
            sys.exit(f"cluster: {root} is not empty and holds no cluster; choose another --dir")
        shutil.rmtree(root)  # a stopped cluster of ours: start afresh
    root.mkdir(parents=True, exist_ok=True)
    layout = Layout.new(root.resolve(), replicas)
    write_configs(layout)
    shutil.copy(HERE / "route_pgbouncer.py", root / "bin" / "route_pgbouncer.py")
    layout.save()
    _give_to_owner(root)
    etcd, peer = layout.etcd_client_port, layout.etcd_peer_port
    processes.start(root, "etcd", [
        PACKAGES["etcd-server"], "--name", "ha", "--data-dir", str(root / "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{etcd}",
        "--advertise-client-urls", f"http://127.0.0.1:{etcd}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"ha=http://127.0.0.1:{peer}",
    ])  # fmt: skip
    first, second = layout.nodes
    faults.start_patroni(layout, first.name)
    wait_for("the first node bootstraps and leads", lambda: members.leader(layout), START_WITHIN)
    faults.start_patroni(layout, second.name)
    primary = wait_for("a synchronous standby", lambda: members.leader(layout), START_WITHIN)
    wait_for("a synchronous standby", lambda: members.sync_standby(layout), START_WITHIN)
    port = layout.node(primary).pg_port
    app = layout.passwords["app"]
    _psql_as_owner(layout, port, f"CREATE ROLE users LOGIN PASSWORD '{app}'")
    _psql_as_owner(layout, port, f"CREATE DATABASE {DATABASE} OWNER users")
    processes.start(
        root, "pgbouncer", [PACKAGES["pgbouncer"], str(root / "pgbouncer/pgbouncer.ini")]
    )
    wait_for("PgBouncer reaches the primary", lambda: members.accepts_writes(layout), START_WITHIN)
    service_env = {k: v for k, v in os.environ.items() if not k.startswith("USERS_")}
    migrate = subprocess.run(
        [sys.executable, "-m", "service", "migrate", "--database-url", layout.app_url()],
        cwd=REPOSITORY, env=service_env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if migrate.returncode != 0:
        sys.exit(f"cluster: migrate failed: {migrate.stderr.strip()}")
    grpc = []
    for index, grpc_port in enumerate(layout.grpc_ports):
        address = f"127.0.0.1:{grpc_port}"
        processes.start(root, f"service-{index}", [
            sys.executable, "-m", "service", "--listen", address,
            "--database-url", layout.app_url(), "--migrate-on-start", "false",
            "--events-direct-url", layout.events_direct_url(),
            "--access-log", "false", *SERVICE_FLAGS,
        ], as_owner=False, env=service_env, cwd=REPOSITORY)  # fmt: skip
        grpc.append(address)
    for address in grpc:
        ready = functools.partial(_service_ready, address)
        wait_for(f"the replica on {address} is SERVING", ready, START_WITHIN)
    standby = members.sync_standby(layout)
    emit({
        "grpc": grpc, "primary": primary, "standby": standby,
        "pgbouncer": f"127.0.0.1:{layout.bouncer_port}",
        "postgres": {node.name: f"127.0.0.1:{node.pg_port}" for node in layout.nodes},
        "etcd": f"127.0.0.1:{etcd}", "dir": str(root), "state": str(root / "state.json"),
    })  # fmt: skip


def _running(layout: Layout) -> list[int]:
    pids = [processes.read_pid(p) for p in (layout.path / "pids").glob("*.pid")]
    pids += [processes.read_pid(n.data_dir(layout.path) / "postmaster.pid") for n in layout.nodes]
    return [pid for pid in pids if pid is not None and processes.alive(pid)]


def down(root: Path) -> None:
    layout = load(root)
    pids = root / "pids"
    stopped = []
    for pid_file in sorted(pids.glob("service-*.pid")):
        if processes.stop(processes.read_pid(pid_file), signal.SIGTERM, STOP_WITHIN):
            stopped.append(pid_file.stem)
    for name in ("pgbouncer", *(f"patroni-{n.name}" for n in layout.nodes)):
        # Patroni stops its PostgreSQL (fast) on SIGTERM.
        if processes.stop(processes.read_pid(pids / f"{name}.pid"), signal.SIGTERM, STOP_WITHIN):
            stopped.append(name)
    for node in layout.nodes:
        # An orphaned PostgreSQL (its Patroni was killed) stops on its own signal.
        postmaster = processes.postmaster_pid(node.data_dir(root))
        if processes.stop(postmaster, signal.SIGINT, STOP_WITHIN):
            stopped.append(f"postgres-{node.name}")
    if processes.stop(processes.read_pid(pids / "etcd.pid"), signal.SIGTERM, STOP_WITHIN):
        stopped.append("etcd")
    left = _running(layout)
    emit({"stopped": stopped, "still_running": left})
    if left:
        sys.exit(1)


def main() -> None:
    _on_project_python()
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", choices=[
        "up", "switchover", "failover", "kill-patroni", "rejoin", "status", "down",
    ])  # fmt: skip
    parser.add_argument("--dir", type=Path, required=True, help="where everything lives")
    parser.add_argument("--replicas", type=int, default=2, help="service replicas (up)")
    parser.add_argument("--node", help="the node to rejoin (default: the one without Patroni)")
    args = parser.parse_args()
    root: Path = args.dir.resolve()
    try:
        if args.command == "up":
            up(root, max(args.replicas, 1))
            return
        if not (root / "state.json").exists():
            sys.exit(f"cluster: no cluster in {root}")
        layout = load(root)
        if args.command == "switchover":
            faults.switchover(layout)
        elif args.command == "failover":
            faults.failover(layout, postgres_too=True)
        elif args.command == "kill-patroni":
            faults.failover(layout, postgres_too=False)
        elif args.command == "rejoin":
            faults.rejoin(layout, args.node)
        elif args.command == "status":
            emit({"members": list(members.members(layout).values()), "running": _running(layout)})
        else:
            down(root)
    except NotReady as error:
        sys.exit(f"cluster: {error}; logs in {root / 'logs'}")


if __name__ == "__main__":
    main()
