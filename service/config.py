"""One frozen settings object, read from flags with ``USERS_*`` environment defaults.

Precedence: a flag beats its environment variable, which beats the default.
A bad value stops start-up with one line naming the setting.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "COMMANDS",
    "DEFAULT_DATABASE_URL",
    "SettingError",
    "Settings",
    "parse_command",
    "parse_settings",
]

DEFAULT_DATABASE_URL = "sqlite://data/users.sqlite3"
ENV_PREFIX = "USERS_"
COMMANDS = ("serve", "migrate", "purge")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = 10
    db_command_timeout: float = 30.0
    # Forever by default: while the database is away the service answers
    # health checks (NOT_SERVING) and calls (UNAVAILABLE) instead of exiting.
    database_wait: float = math.inf
    # One core is left to the event loop, so that a storm of sign-ups cannot
    # starve reads of CPU; on one core there is no choice.
    hash_threads: int = max((os.cpu_count() or 1) - 1, 1)
    workers: int = 1
    # grpc.aio accepts a method's calls one at a time (a new one only after the
    # loop has handled the last): several servers on the port, in this one
    # process, accept in parallel (service.listening).
    accept_loops: int = 8
    grace_period: float = 10.0
    migrate_on_start: bool = True
    metrics_listen: str = ""
    access_log: bool = True
    log_level: str = "INFO"
    health_probe_interval: float = 5.0
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_rpcs: int = 1000
    max_connection_age: float = 0.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    deleted_retention_days: float = 30.0
    auth_max_failures: int = 5
    auth_failure_window: float = 3600.0
    auth_lockout_base: float = 1.0
    auth_lockout_max: float = 900.0
    # -- who may call what (authorization) --
    authz_policy: str = ""
    authz_jwks: str = ""
    authz_jwt_issuer: str = ""
    authz_jwt_audience: str = ""
    # --- change feed (ListEvents, WatchEvents, the NATS relay) ---
    events_retention_days: float = 7.0
    events_bookmark_interval: float = 10.0
    events_poll_interval: float = 1.0
    events_nats_url: str = ""
    events_nats_stream: str = "USERS_EVENTS"
    events_nats_subject: str = "users.v1.events"
    # PostgreSQL straight to the primary for the feed's session-bound
    # connections (LISTEN, the relay's lock), when --database-url is a pooler.
    events_direct_url: str = ""

    def __post_init__(self) -> None:
        _check_address(self.listen, "listen")
        _check_database_url(self.database_url)
        _check(self.db_pool_size >= 1, "db_pool_size", "must be at least 1")
        _check(self.db_command_timeout >= 0, "db_command_timeout", "must not be negative")
        _check(self.database_wait >= 0, "database_wait", "must be 0 or more seconds, or inf")
        _check(self.hash_threads >= 1, "hash_threads", "must be at least 1")
        _check(self.workers >= 1, "workers", "must be at least 1")
        _check(
            self.workers == 1 or not self.listen.endswith(":0"),
            "workers",
            "several workers need a fixed port to share, not port 0",
        )
        _check(1 <= self.accept_loops <= 64, "accept_loops", "must be 1 to 64")
        _check(self.grace_period >= 0, "grace_period", "must not be negative")
        if self.metrics_listen:
            _check_address(self.metrics_listen, "metrics_listen")
        _check(
            self.log_level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"},
            "log_level",
            "must be DEBUG, INFO, WARNING or ERROR",
        )
        _check(self.health_probe_interval > 0, "health_probe_interval", "must be positive")
        _check(self.max_message_bytes >= 1024, "max_message_bytes", "must be at least 1024")
        _check(self.max_concurrent_rpcs >= 0, "max_concurrent_rpcs", "must not be negative")
        _check(self.max_connection_age >= 0, "max_connection_age", "must not be negative")
        _check_tls(self)
        _check(
            0 <= self.deleted_retention_days <= 36500,
            "deleted_retention_days",
            "must be between 0 and 36500 days",
        )
        _check(self.auth_max_failures >= 0, "auth_max_failures", "must not be negative")
        _check(self.auth_failure_window > 0, "auth_failure_window", "must be positive")
        _check(self.auth_lockout_base > 0, "auth_lockout_base", "must be positive")
        _check(
            self.auth_lockout_max >= self.auth_lockout_base,
            "auth_lockout_max",
            "must be at least --auth-lockout-base",
        )
        _check_authz(self)
        _check_events(self)
        _check_events_direct(self.events_direct_url, self.database_url)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


class SettingError(ValueError):
    def __init__(self, name: str, problem: str) -> None:
        flag = "--" + name.replace("_", "-")
        super().__init__(f"{flag} ({ENV_PREFIX}{name.upper()}): {problem}")


def _check(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise SettingError(name, problem)


def _check_address(address: str, name: str) -> None:
    host, sep, port = address.rpartition(":")
    _check(bool(sep and host), name, f"expected HOST:PORT, got {address!r}")
    _check(port.isdigit() and 0 <= int(port) <= 65535, name, f"bad port in {address!r}")


def _check_database_url(url: str) -> None:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    _check(
        scheme in {"sqlite", "postgres", "postgresql", "asyncpg"},
        "database_url",
        "expected sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB",
    )


def _check_tls(settings: Settings) -> None:
    _check(
        bool(settings.tls_cert) == bool(settings.tls_key),
        "tls_key" if settings.tls_cert else "tls_cert",
        "--tls-cert and --tls-key go together",
    )
    _check(
        not settings.tls_client_ca or settings.tls,
        "tls_client_ca",
        "client certificates need TLS: set --tls-cert and --tls-key too",
    )
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(settings, name)
        _check(not path or Path(path).is_file(), name, f"no such file: {path}")


def _check_authz(settings: Settings) -> None:
    jwt = bool(settings.authz_jwks)
    for name in ("authz_jwt_issuer", "authz_jwt_audience"):
        _check(jwt or not getattr(settings, name), name, "goes with --authz-jwks")
        _check(not jwt or bool(getattr(settings, name)), name, "--authz-jwks needs it")
    if jwt:
        _check(bool(settings.authz_policy), "authz_jwks", "bearer tokens need --authz-policy")
        url = settings.authz_jwks.startswith(("http://", "https://"))
        jwks_file = url or Path(settings.authz_jwks).is_file()
        _check(jwks_file, "authz_jwks", f"no such file: {settings.authz_jwks}")
    if settings.authz_policy:
        policy_file = Path(settings.authz_policy).is_file()
        _check(policy_file, "authz_policy", f"no such file: {settings.authz_policy}")
        _check(
            bool(settings.tls_client_ca) or jwt,
            "authz_policy",
            "callers need an identity: set --tls-client-ca (mTLS) or --authz-jwks (JWT)",
        )


def _check_events(settings: Settings) -> None:
    _check(
        0 < settings.events_retention_days <= 36500,
        "events_retention_days",
        "must be more than 0 and at most 36500 days",
    )
    _check(
        0 < settings.events_bookmark_interval <= 10,
        "events_bookmark_interval",
        "must be more than 0 and at most 10 seconds",
    )
    _check(settings.events_poll_interval > 0, "events_poll_interval", "must be positive")
    url = settings.events_nats_url
    _check(
        not url or url.startswith(("nats://", "tls://")),
        "events_nats_url",
        f"expected nats://HOST:PORT, got {url!r}",
    )
    _check(
        bool(settings.events_nats_stream)
        and not any(c in settings.events_nats_stream for c in " .*>/\\"),
        "events_nats_stream",
        "a JetStream stream name: no spaces, dots, wildcards or slashes",
    )
    subject = settings.events_nats_subject
    _check(
        bool(subject) and not any(c in subject for c in " *>") and "" not in subject.split("."),
        "events_nats_subject",
        "a NATS subject prefix such as users.v1.events, without wildcards",
    )


# What asyncpg accepts as target_session_attrs.
_SESSION_ATTRS = {"any", "primary", "standby", "prefer-standby", "read-write", "read-only"}


def _check_events_direct(url: str, database_url: str) -> None:
    """A PostgreSQL URL, on a PostgreSQL database; several hosts must name how to find the primary.

    Refused on SQLite rather than ignored: there is no connection to divert,
    so the setting can only be a mistake (a database URL set elsewhere).
    """
    if not url:
        return
    name = "events_direct_url"
    parts = urlsplit(url)
    _check(
        parts.scheme in {"postgres", "postgresql"} and bool(parts.netloc.rpartition("@")[2]),
        name,
        "expected postgresql://USER:PASS@HOST:PORT[,HOST:PORT...]/DB",
    )
    _check(
        not database_url.startswith("sqlite"),
        name,
        "only for a PostgreSQL --database-url (SQLite has no connections to divert)",
    )
    hosts = parts.netloc.rpartition("@")[2].split(",")
    _check(all(hosts), name, "an empty host in the host list")
    attrs = parse_qs(parts.query).get("target_session_attrs", [""])[-1]
    _check(
        not attrs or attrs in _SESSION_ATTRS,
        name,
        f"target_session_attrs must be one of {', '.join(sorted(_SESSION_ATTRS))}",
    )
    _check(
        len(hosts) == 1 or attrs in {"read-write", "primary"},
        name,
        "several hosts need ?target_session_attrs=read-write to find the primary",
    )


_HELP = {
    "listen": "address to serve gRPC on",
    "database_url": "sqlite://PATH (created on first start) or postgres://USER:PASS@HOST:PORT/DB",
    "db_pool_size": "PostgreSQL connections per worker",
    "db_command_timeout": "seconds a PostgreSQL query may take, then UNAVAILABLE (0: no limit)",
    "database_wait": (
        "seconds to keep retrying an unreachable database at start-up, serving health"
        " NOT_SERVING meanwhile (0: exit 1 at once; inf: until it answers)"
    ),
    "hash_threads": "threads per worker that hash passwords (default: CPUs - 1, at least 1)",
    "workers": "server processes sharing the port (SO_REUSEPORT)",
    "accept_loops": "gRPC servers per worker on the port, accepting calls in parallel",
    "grace_period": "seconds in-flight calls get to finish on SIGTERM/SIGINT",
    "migrate_on_start": "apply pending schema migrations at start-up (false: refuse to start)",
    "metrics_listen": "HOST:PORT for Prometheus metrics (off when empty; one for all workers)",
    "access_log": "one JSON line per call on stderr",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "health_probe_interval": "seconds between database probes that drive grpc.health.v1",
    "max_message_bytes": "largest request or response message",
    "max_concurrent_rpcs": "calls at once per worker; more get RESOURCE_EXHAUSTED (0: no limit)",
    "max_connection_age": "seconds before a connection is asked to reconnect (0: never)",
    "tls_cert": "PEM certificate chain; enables TLS",
    "tls_key": "PEM private key of --tls-cert",
    "tls_client_ca": "PEM CA bundle; requires and verifies client certificates (mTLS)",
    "deleted_retention_days": "days a deleted user can be undeleted before purge removes it",
    "auth_max_failures": "failed password checks per login before lockouts start (0: off)",
    "auth_failure_window": "seconds without attempts after which failures are forgotten",
    "auth_lockout_base": "seconds of the first lockout; each later failure doubles it",
    "auth_lockout_max": "longest lockout in seconds",
    "authz_policy": (
        "gRPC authorization policy (gRFC A43 JSON) deciding which principal may call which"
        " method; reloaded on SIGHUP and when the file changes (off when empty)"
    ),
    "authz_jwks": "JWKS file or http(s) URL of the keys that sign callers' bearer JWTs",
    "authz_jwt_issuer": "the iss every bearer JWT must carry",
    "authz_jwt_audience": "the aud every bearer JWT must carry (this service's name)",
    "events_retention_days": "days the change feed keeps events; purge prunes older ones",
    "events_bookmark_interval": "seconds of silence after which WatchEvents sends a BOOKMARK",
    "events_poll_interval": "seconds between re-reads of the feed when no commit notice came",
    "events_nats_url": "nats://HOST:PORT: relay the change feed to NATS JetStream (off when empty)",
    "events_nats_stream": "JetStream stream of the relay, created if missing",
    "events_nats_subject": "subject prefix of the relay; each event goes to PREFIX.EVENT_TYPE",
    "events_direct_url": (
        "postgresql://USER:PASS@H1:P1[,H2:P2...]/DB?target_session_attrs=read-write: the"
        " primary itself, for the feed's LISTEN and the relay's lock, which a transaction"
        " pooler (PgBouncer) breaks; query passed to asyncpg (default: --database-url)"
    ),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr, not argparse's usage block: it is read in service logs."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m service",
        description=(
            "Run the users.v1.UserService gRPC server, migrate its database, "
            "or purge deleted users."
        ),
        epilog="Every flag also reads the environment variable shown in brackets.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=COMMANDS,
        default="serve",
        help=(
            "serve (default): run the server; migrate: apply schema migrations and exit; "
            "purge: remove deleted users whose purge time has passed, and exit"
        ),
    )
    for field in fields(Settings):
        env = ENV_PREFIX + field.name.upper()
        default = field.default
        shown = "" if default == "" or field.name == "hash_threads" else f" (default: {default})"
        # No argparse `type`: flag and environment strings convert in one
        # place, so that an error names both spellings of the setting.
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=environ.get(env, default),
            metavar=type(default).__name__.upper(),
            help=f"{_HELP[field.name]} [{env}]{shown}",
        )
    return parser


def parse_command(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, Settings]:
    """The command and settings from flags and environment.

    Exits with status 2 and one clear line on a bad value.
    """
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    namespace = parser.parse_args(argv)
    try:
        values = {f.name: _convert(f.name, getattr(namespace, f.name)) for f in fields(Settings)}
        return namespace.command, Settings(**values)
    except SettingError as error:
        parser.error(str(error))


def parse_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """The settings alone, for callers that only ever serve."""
    return parse_command(argv, environ)[1]


def _convert(name: str, value: object) -> Any:
    """Convert a flag or environment string to the type of the setting's default."""
    default = Settings.__dataclass_fields__[name].default
    if not isinstance(value, str) or isinstance(default, str):
        return value
    if isinstance(default, bool):
        if value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise SettingError(name, f"expected true or false, got {value!r}")
    convert: type[int | float] = type(default)  # type: ignore[assignment]
    try:
        return convert(value)
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise SettingError(name, f"expected {kind}, got {value!r}") from None
