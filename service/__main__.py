"""``python -m service``: serve (default), migrate or purge, configured by flags and USERS_* env."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from service.api.jwks import KeySetError
from service.api.observability import configure_access_log
from service.api.policy import PolicyError, load_policy
from service.api.registration import UnguardedMethod
from service.api.shared_metrics import SharedMetricsEndpoint
from service.api.tracing import TracingConfigError
from service.config import parse_command
from service.db.database import Database, DatabaseUnreachable
from service.db.migrate import MigrationFailed, MigrationsPending, require_migrated
from service.domain.feed import prune_feed
from service.domain.users import purge_deleted_users
from service.listening import check_free
from service.server import BindError, UsersServer
from service.workers import run_workers

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence
    from typing import Any

    from service.config import Settings

log = logging.getLogger("service")


async def serve(settings: Settings, *, worker: int = 0, migrate: bool | None = None) -> None:
    if settings.access_log:
        # Here, not before forking workers: the writer thread would not survive the fork.
        configure_access_log()
    server = UsersServer(settings, worker=worker, reuse_port=settings.workers > 1)
    await server.start(migrate=migrate)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_authorization)
    # The server may still be waiting for the database: a signal ends the
    # wait, and so does giving up on the database (--database-wait).
    ready = asyncio.ensure_future(server.ready())
    signalled = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({ready, signalled}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done() and ready.exception() is not None:
        signalled.cancel()
        await server.stop(0)
        await ready  # raises DatabaseUnreachable or MigrationsPending: exit 1
    await signalled
    ready.cancel()
    log.info("signal received: draining for up to %.1fs", settings.grace_period)
    await server.stop()


async def migrate(settings: Settings, *, apply: bool = True) -> None:
    """Apply pending migrations, or with ``apply=False`` refuse if any are pending."""
    database = Database(settings.database_url, pool_size=1)
    try:
        await database.connect(create_schema=apply, wait=settings.database_wait)
        if not apply:
            await require_migrated(database)
    finally:
        await database.close()


async def purge(settings: Settings) -> tuple[int, int]:
    """Remove deleted users whose purge time has passed, and events past retention; how many.

    Needs an up-to-date schema (run ``migrate`` first); safe to run while
    servers are serving, and from cron, as often as wanted.
    """
    database = Database(settings.database_url, pool_size=1)
    try:
        await database.connect(create_schema=False, wait=settings.database_wait)
        await require_migrated(database)
        with database.activate():
            users = await purge_deleted_users()
            # After the users: their USER_PURGED events are new, and stay.
            events = await prune_feed(timedelta(days=settings.events_retention_days))
            return users, events
    finally:
        await database.close()


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        asyncio.run(main)
    else:
        # uvloop makes the loop itself cheaper; grpc.aio, Tortoise and asyncpg run on it.
        uvloop.run(main)


def _serve_worker(settings: Settings, worker: int) -> None:
    """Body of one forked worker: the parent has already migrated the database."""
    _guarded(lambda: _run(serve(settings, worker=worker, migrate=False)))


def _guarded(action: Any) -> None:
    try:
        action()
    except (BindError, DatabaseUnreachable, MigrationsPending, TracingConfigError) as error:
        log.error("cannot start: %s", error)
        sys.exit(1)
    except MigrationFailed as error:
        log.error("migration failed: %s", error)
        sys.exit(1)
    except (PolicyError, KeySetError, UnguardedMethod) as error:
        log.error("cannot start: %s", error)
        sys.exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    command, settings = parse_command(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    if command == "migrate":
        _guarded(lambda: _run(migrate(settings)))
        log.info("database is up to date")
        return
    if command == "purge":
        purged: list[tuple[int, int]] = []

        async def purge_and_count() -> None:
            purged.append(await purge(settings))

        _guarded(lambda: _run(purge_and_count()))
        users, events = purged[0]
        log.info("purged %d deleted users, pruned %d events", users, events)
        print(f"purged {users} deleted users")
        print(f"pruned {events} events older than {settings.events_retention_days:g} days")
        return
    if settings.workers == 1:
        _guarded(lambda: _run(serve(settings)))
        return
    # The workers share the port with each other, never with a server already
    # on it (their SO_REUSEPORT would let them): one line, before any worker.
    _guarded(lambda: check_free(settings.listen))
    if settings.authz_policy:
        # A bad policy stops start-up once, with one line, before any worker.
        _guarded(lambda: load_policy(settings.authz_policy))
    # Migrate (or check) once in the parent, before forking, so that workers
    # never race each other over the schema.
    _guarded(lambda: _run(migrate(settings, apply=settings.migrate_on_start)))
    # One metrics endpoint, served by the parent, sums what the workers record.
    metrics = SharedMetricsEndpoint(settings.metrics_listen) if settings.metrics_listen else None
    workers = dataclasses.replace(settings, metrics_listen="") if metrics else settings
    sys.exit(run_workers(workers, _serve_worker, metrics))


if __name__ == "__main__":
    main()
