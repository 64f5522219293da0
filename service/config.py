"""One frozen settings object, read from flags with ``USERS_*`` environment defaults.

Precedence: a flag beats its environment variable, which beats the default.
A bad value stops start-up with one line naming the setting.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_DATABASE_URL", "Settings", "parse_settings"]

DEFAULT_DATABASE_URL = "sqlite://data/users.sqlite3"
ENV_PREFIX = "USERS_"


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = 10
    hash_threads: int = max(os.cpu_count() or 1, 1)
    grace_period: float = 10.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _check_listen(self.listen)
        _check_database_url(self.database_url)
        _check(self.db_pool_size >= 1, "db_pool_size", "must be at least 1")
        _check(self.hash_threads >= 1, "hash_threads", "must be at least 1")
        _check(self.grace_period >= 0, "grace_period", "must not be negative")
        _check(
            self.log_level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"},
            "log_level",
            "must be DEBUG, INFO, WARNING or ERROR",
        )


class SettingError(ValueError):
    def __init__(self, name: str, problem: str) -> None:
        flag = "--" + name.replace("_", "-")
        super().__init__(f"{flag} ({ENV_PREFIX}{name.upper()}): {problem}")


def _check(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise SettingError(name, problem)


def _check_listen(listen: str) -> None:
    host, sep, port = listen.rpartition(":")
    _check(bool(sep and host), "listen", f"expected HOST:PORT, got {listen!r}")
    _check(port.isdigit() and 0 <= int(port) <= 65535, "listen", f"bad port in {listen!r}")


def _check_database_url(url: str) -> None:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    _check(
        scheme in {"sqlite", "postgres", "postgresql", "asyncpg"},
        "database_url",
        "expected sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB",
    )


_HELP = {
    "listen": "address to serve gRPC on",
    "database_url": "sqlite://PATH (default, created on first start) or postgres://...",
    "db_pool_size": "PostgreSQL connections per process",
    "hash_threads": "threads that hash passwords (default: number of CPUs)",
    "grace_period": "seconds in-flight calls get to finish on SIGTERM/SIGINT",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Run the users.v1.UserService gRPC server.",
        epilog="Every flag also reads an environment variable, shown in brackets.",
    )
    defaults = Settings.__dataclass_fields__
    for field in fields(Settings):
        env = ENV_PREFIX + field.name.upper()
        default = defaults[field.name].default
        # No argparse `type`: flag and environment strings convert in one
        # place, so that an error names both spellings of the setting.
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=environ.get(env, default),
            metavar=field.name.upper(),
            help=f"{_HELP[field.name]} [{env}] (default: {default})",
        )
    return parser


def parse_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flags and environment; exits with one clear line on a bad value."""
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    namespace = parser.parse_args(argv)
    try:
        values = {f.name: _convert(f.name, getattr(namespace, f.name)) for f in fields(Settings)}
        return Settings(**values)
    except SettingError as error:
        parser.error(str(error))


def _convert(name: str, value: object) -> Any:
    """Convert a flag or environment string to the type of the setting's default."""
    default = Settings.__dataclass_fields__[name].default
    if (
        isinstance(value, str)
        and isinstance(default, int | float)
        and not isinstance(default, bool)
    ):
        try:
            return type(default)(value)
        except ValueError:
            raise SettingError(
                name, f"expected a {type(default).__name__}, got {value!r}"
            ) from None
    return value
