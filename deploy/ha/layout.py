"""What the HA deployment writes: the ports, secrets and configuration files of one cluster.

Everything lives under one directory (``--dir``) so that ``down`` can find
every process it started and nothing else. The files written here are the
reference deployment (``deploy/ha/README.md``): two Patroni nodes with a
synchronous standby, etcd as their lock, PgBouncer in transaction mode in
front of whichever node is the primary, and service replicas behind PgBouncer.

Standard library only, like ``route_pgbouncer.py``, which Patroni runs as
the ``postgres`` user with the system Python.
"""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "EVENTS_APPLICATION_NAME",
    "PACKAGES",
    "PG_BIN",
    "Layout",
    "Node",
    "free_port",
    "load",
    "write_configs",
]

SCOPE = "users"
NAMESPACE = "/users-ha/"
DATABASE = "users"
APP_USER = "users"
# How the services' direct connections (feed LISTEN, relay lock) show in pg_stat_activity.
EVENTS_APPLICATION_NAME = "users-events"
PG_BIN = "/usr/lib/postgresql/15/bin"
# Debian package -> the binary it installs.
PACKAGES = {
    "patroni": "/usr/bin/patroni",
    "etcd-server": "/usr/bin/etcd",
    "pgbouncer": "/usr/sbin/pgbouncer",
}

# Patroni's clock. A primary whose Patroni is gone keeps the leader key for
# TTL seconds; loop_wait + 2 * retry_timeout must stay within it. Shorter
# than Patroni's defaults (30/10/10) so that a failover takes seconds, which
# is what loopback can afford; across a real network keep the defaults.
TTL = 10
LOOP_WAIT = 1
RETRY_TIMEOUT = 4

# Strict mode would stop every write while the only standby is away: with two
# nodes a single failure would then take writes down. Non-strict keeps writing
# on the primary alone until the standby is back, and Patroni still promotes
# only the node recorded as synchronous, so no acknowledged write is lost by a
# failover; what it gives up is a second copy during that time.
SYNCHRONOUS_MODE_STRICT = False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Node:
    name: str
    pg_port: int
    api_port: int

    def directory(self, root: Path) -> Path:
        return root / self.name

    def data_dir(self, root: Path) -> Path:
        return root / self.name / "data"


@dataclass
class Layout:
    """The ports and secrets of one cluster, saved as ``state.json`` in its directory."""

    root: str
    etcd_client_port: int
    etcd_peer_port: int
    bouncer_port: int
    nodes: list[Node]
    grpc_ports: list[int]
    passwords: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls, root: Path, replicas: int) -> Layout:
        return cls(
            root=str(root),
            etcd_client_port=free_port(),
            etcd_peer_port=free_port(),
            bouncer_port=free_port(),
            nodes=[Node(f"pg{i}", free_port(), free_port()) for i in (1, 2)],
            grpc_ports=[free_port() for _ in range(replicas)],
            passwords={
                role: secrets.token_urlsafe(18)
                for role in ("superuser", "replication", "rewind", "app", "restapi")
            },
        )

    @property
    def path(self) -> Path:
        return Path(self.root)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def app_url(self) -> str:
        """The services' database URL: PgBouncer, with asyncpg's statement cache off.

        PgBouncer 1.18 in transaction mode hands each transaction any server
        connection: a named prepared statement made on one is unknown on the
        next, so asyncpg must use unnamed statements only.
        """
        return (
            f"postgres://{APP_USER}:{self.passwords['app']}@127.0.0.1:{self.bouncer_port}"
            f"/{DATABASE}?statement_cache_size=0"
        )

    def events_direct_url(self) -> str:
        """The services' ``--events-direct-url``: both nodes, whichever is the primary.

        The feed's LISTEN and the relay's advisory lock are session state, which
        PgBouncer's transaction mode does not keep: they go to PostgreSQL
        itself. asyncpg tries the nodes in turn on every (re)connect and takes
        the one that accepts writes, so they follow a failover without routing.
        """
        nodes = ",".join(f"127.0.0.1:{node.pg_port}" for node in self.nodes)
        return (
            f"postgresql://{APP_USER}:{self.passwords['app']}@{nodes}/{DATABASE}"
            f"?target_session_attrs=read-write&application_name={EVENTS_APPLICATION_NAME}"
        )

    def direct_url(self, node: Node, database: str = DATABASE) -> str:
        return (
            f"postgres://postgres:{self.passwords['superuser']}@127.0.0.1:{node.pg_port}/{database}"
        )

    def save(self) -> None:
        state = self.path / "state.json"
        state.write_text(json.dumps(asdict(self), indent=2) + "\n")
        state.chmod(0o640)


def load(root: Path) -> Layout:
    raw = json.loads((root / "state.json").read_text())
    raw["nodes"] = [Node(**node) for node in raw["nodes"]]
    return Layout(**raw)


def _patroni_config(layout: Layout, node: Node) -> dict[str, object]:
    root = layout.path
    # Patroni appends the action, the role and the scope.
    route = f"/usr/bin/python3 {root / 'bin' / 'route_pgbouncer.py'} {root} {node.name}"
    allowed = "127.0.0.1/32"
    return {
        "scope": SCOPE,
        "namespace": NAMESPACE,
        "name": node.name,
        "restapi": {
            "listen": f"127.0.0.1:{node.api_port}",
            "connect_address": f"127.0.0.1:{node.api_port}",
            # Changes (switchover, restart) need the password; reads do not.
            "authentication": {"username": "patroni", "password": layout.passwords["restapi"]},
        },
        "etcd3": {"hosts": [f"127.0.0.1:{layout.etcd_client_port}"]},
        "bootstrap": {
            "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": 1048576,
                "synchronous_mode": True,
                "synchronous_mode_strict": SYNCHRONOUS_MODE_STRICT,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_connections": 100,
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "synchronous_commit": "on",
                        "password_encryption": "scram-sha-256",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{node.pg_port}",
            "connect_address": f"127.0.0.1:{node.pg_port}",
            "data_dir": str(node.data_dir(root)),
            "bin_dir": PG_BIN,
            "pgpass": str(node.directory(root) / "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": layout.passwords["superuser"]},
                "replication": {
                    "username": "replicator",
                    "password": layout.passwords["replication"],
                },
                "rewind": {"username": "rewinder", "password": layout.passwords["rewind"]},
            },
            "parameters": {"unix_socket_directories": str(node.directory(root))},
            "pg_hba": [
                "local all postgres peer",
                f"host replication replicator {allowed} scram-sha-256",
                f"host all all {allowed} scram-sha-256",
            ],
            "callbacks": {"on_start": route, "on_role_change": route},
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def _pgbouncer_ini(layout: Layout) -> str:
    run = layout.path / "pgbouncer"
    return f"""\
;; PgBouncer in front of the Patroni primary (written by deploy/ha/cluster.py).
;; [databases] is an include that route_pgbouncer.py rewrites, then reloads
;; PgBouncer, whenever Patroni promotes a node.
[databases]
%include {run / "databases.ini"}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {layout.bouncer_port}
unix_socket_dir = {run}
pidfile = {run / "pgbouncer.pid"}
auth_type = scram-sha-256
auth_file = {run / "userlist.txt"}
admin_users = postgres
;; Transaction pooling: a server connection is lent for one transaction.
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 40
;; Failover: give up on a dead server quickly, and do not refuse every
;; client for the default 15 s after one failed login to a starting node.
server_connect_timeout = 3
server_login_retry = 1
query_wait_timeout = 10
server_check_delay = 5
;; A client that was told to wait must not wait longer than the service does.
client_login_timeout = 10
log_connections = 0
log_disconnections = 0
"""


def databases_ini(layout: Layout, primary: Node) -> str:
    return (
        "; Rewritten on every promotion by route_pgbouncer.py.\n"
        f"{DATABASE} = host=127.0.0.1 port={primary.pg_port} dbname={DATABASE}\n"
    )


def write_configs(layout: Layout) -> None:
    """Write every configuration file (JSON is valid YAML, which Patroni reads)."""
    root = layout.path
    for node in layout.nodes:
        node.directory(root).mkdir(parents=True, exist_ok=True)
        node.directory(root).chmod(0o700)
        config = node.directory(root) / "patroni.yml"
        config.write_text(json.dumps(_patroni_config(layout, node), indent=2) + "\n")
        config.chmod(0o600)
    run = root / "pgbouncer"
    run.mkdir(exist_ok=True)
    (run / "pgbouncer.ini").write_text(_pgbouncer_ini(layout))
    (run / "databases.ini").write_text(databases_ini(layout, layout.nodes[0]))
    userlist = run / "userlist.txt"
    userlist.write_text(f'"{APP_USER}" "{layout.passwords["app"]}"\n')
    userlist.chmod(0o600)
    (root / "etcd").mkdir(exist_ok=True)
    (root / "etcd").chmod(0o700)
    (root / "bin").mkdir(exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
