"""Schema migrations: the files in ``service.db.migrations``, applied to a database.

The files are made by Tortoise's own ``makemigrations`` (``make migrations``) and
hold operations (CreateModel, AddField, ...), not SQL: each backend's schema
editor renders them, so the same files migrate SQLite and PostgreSQL. Applied
migrations are recorded in the ``tortoise_migrations`` table.

``apply_migrations`` runs every pending migration in one transaction (both
backends roll DDL back), so a failure leaves the database as it was. On
PostgreSQL a transaction-scoped advisory lock serialises concurrent appliers
(several replicas starting at once); on SQLite the transaction takes the write
lock before it reads what is applied.

``python -m service.db.migrate check`` exits non-zero when the models have
changes that no migration covers (``make migrations-check``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

from tortoise.context import TortoiseContext
from tortoise.migrations.autodetector import MigrationAutodetector
from tortoise.migrations.executor import MigrationExecutor, MigrationTarget
from tortoise.migrations.migration import Migration
from tortoise.migrations.operations import CreateModel
from tortoise.migrations.recorder import MigrationRecorder
from tortoise.migrations.schema_editor import AsyncpgSchemaEditor, SqliteSchemaEditor
from tortoise.transactions import in_transaction

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tortoise.backends.base.client import BaseDBAsyncClient

    from service.db.database import Database

__all__ = [
    "APP",
    "MIGRATIONS",
    "MODELS",
    "TORTOISE_ORM",
    "MigrationFailed",
    "MigrationsPending",
    "apply_migrations",
    "apps_config",
    "model_changes",
    "pending_migrations",
    "require_migrated",
]

log = logging.getLogger("service.db.migrate")

APP = "models"
MODELS = ["service.db.models"]
MIGRATIONS = "service.db.migrations"

# Any constant shared by every process of this service; pg_advisory_xact_lock
# takes a bigint. Spells "users-mi" in ASCII.
_LOCK_KEY = 0x75736572732D6D69


def apps_config(connection: str) -> dict[str, dict[str, Any]]:
    """The Tortoise ``apps`` section: our models, on ``connection``, with their migrations."""
    return {APP: {"models": MODELS, "default_connection": connection, "migrations": MIGRATIONS}}


# For Tortoise's own CLI (``tortoise -c service.db.migrate.TORTOISE_ORM makemigrations``):
# making a migration compares the models with the migration files and needs no
# database. Apply migrations with ``python -m service migrate``, not with this.
TORTOISE_ORM: dict[str, Any] = {
    "connections": {"default": "sqlite://:memory:"},
    "apps": apps_config("default"),
}


class MigrationsPending(RuntimeError):
    """The database lacks migrations that this version of the service needs."""

    def __init__(self, safe_url: str, names: Sequence[str]) -> None:
        self.names = list(names)
        super().__init__(
            f"the database at {safe_url} needs {len(self.names)} schema migration(s) "
            f"({', '.join(self.names)}): run `python -m service migrate` first, "
            "or let the service apply them at start-up"
        )


class MigrationFailed(RuntimeError):
    """A migration refused to apply to this data; its message says what to fix.

    Raised by data migrations (e.g. 0003 when two users would share a key);
    the whole upgrade has been rolled back.
    """


class _Recorder(MigrationRecorder):
    """The applied-migrations table, created by us before migrating.

    The executor would create it with ``executescript``, which on SQLite first
    commits the transaction that the whole upgrade runs in.
    """

    async def ensure_schema(self, schema_editor: Any) -> None:
        return None


def _executor(connection: BaseDBAsyncClient, dialect: str) -> MigrationExecutor:
    executor = MigrationExecutor(connection, apps_config(dialect))
    executor.recorder = executor.loader.recorder = _Recorder(connection)
    return executor


async def _create_recorder_table(connection: BaseDBAsyncClient, dialect: str) -> None:
    editor_class = AsyncpgSchemaEditor if dialect == "postgres" else SqliteSchemaEditor
    await MigrationRecorder(connection).ensure_schema(editor_class(connection, atomic=False))


async def pending_migrations(database: Database) -> list[str]:
    """Migrations not yet applied to ``database``, in the order they would apply.

    Read-only: an empty database (no migrations table yet) has all of them pending.
    """
    with database.activate():
        executor = _executor(database.context.db(database.dialect), database.dialect)
        return [step.migration.name for step in await executor.plan() if not step.backward]


async def require_migrated(database: Database) -> None:
    """Raise ``MigrationsPending`` unless every migration is applied."""
    pending = await pending_migrations(database)
    if pending:
        raise MigrationsPending(database.safe_url, pending)


async def apply_migrations(database: Database, *, target: str | None = None) -> list[str]:
    """Apply pending migrations (up to and including ``target``, default all).

    Returns the names applied, in order; an up-to-date database gives ``[]``.
    Never rolls back: a ``target`` older than what is applied is an error.
    """
    dialect = database.dialect
    applied: list[str] = []

    def progress(event: str, _app: str, name: str) -> None:
        if event == "apply_done":
            applied.append(name)
            log.info("applied migration %s to %s", name, database.safe_url)

    with database.activate():
        if dialect == "postgres":
            await _migrate(database, target, progress, applied)
            return applied
        connection = database.context.db(dialect)
        await _create_recorder_table(connection, dialect)
        # SQLite alters a table by rebuilding it (create, copy, drop, rename).
        # With foreign keys enforced, that DROP deletes every row referencing
        # the table (posts ON DELETE CASCADE). As SQLite documents: enforcement
        # off outside the transaction, foreign_key_check before committing.
        _, rows = await connection.execute_query("PRAGMA foreign_keys")
        enforced = bool(rows and rows[0][0])
        await connection.execute_query("PRAGMA foreign_keys = OFF")
        try:
            await _migrate(database, target, progress, applied)
        finally:
            if enforced:
                await connection.execute_query("PRAGMA foreign_keys = ON")
    return applied


async def _migrate(
    database: Database,
    target: str | None,
    progress: Callable[[str, str, str], None],
    applied: list[str],
) -> None:
    """Apply pending migrations in one transaction, holding the database's write lock."""
    dialect = database.dialect
    async with in_transaction(dialect) as connection:
        if dialect == "postgres":
            await connection.execute_query("SELECT pg_advisory_xact_lock($1)", [_LOCK_KEY])
            await _create_recorder_table(connection, dialect)
        else:
            # Take the write lock now (a no-op write does), so that a second
            # process waits here instead of reading a state about to change.
            await connection.execute_query('DELETE FROM "tortoise_migrations" WHERE 0 = 1')
        executor = _executor(connection, dialect)
        adopted = await _adopt_unrecorded_schema(executor, connection, dialect)
        if adopted is not None:
            applied.append(adopted)
            log.warning(
                "%s already had the tables of %s (made before migrations existed): "
                "recorded it as applied",
                database.safe_url,
                adopted,
            )
        targets = None if target is None else [MigrationTarget(APP, target)]
        await executor.migrate(targets, direction="forward", progress=progress)
        if dialect == "sqlite":
            _, broken = await connection.execute_query("PRAGMA foreign_key_check")
            if broken:
                tables = sorted({row[0] for row in broken})
                raise RuntimeError(
                    "migrating would leave rows referencing missing rows in "
                    f"{', '.join(tables)}; nothing was changed"
                )


async def _adopt_unrecorded_schema(
    executor: MigrationExecutor, connection: BaseDBAsyncClient, dialect: str
) -> str | None:
    """Record the first migration as applied when its tables exist but nothing is recorded.

    Databases made before migrations existed were created from the same
    models as the first migration, by Tortoise's ``generate_schemas``.
    """
    await executor.loader.build_graph()
    roots = executor.loader.graph.root_nodes(APP)
    if executor.loader.applied_migrations or not roots:
        return None
    first = roots[0]
    migration = executor.loader.graph.nodes[first]
    if not isinstance(migration, Migration):
        return None
    wanted = {
        (operation.options or {}).get("table") or operation.name.lower()
        for operation in migration.operations
        if isinstance(operation, CreateModel)
    }
    if not wanted or not wanted <= await _tables(connection, dialect):
        return None
    await executor.recorder.record_applied(first.app_label, first.name)
    return first.name


async def _tables(connection: BaseDBAsyncClient, dialect: str) -> set[str]:
    if dialect == "postgres":
        query = "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    _, rows = await connection.execute_query(query)
    return {row["name"] for row in rows}


async def model_changes() -> list[str]:
    """What ``makemigrations`` would write now: empty when migrations match the models."""
    context = TortoiseContext()
    with context:
        await context.init(config=TORTOISE_ORM)
        try:
            assert context.apps is not None
            writers = await MigrationAutodetector(context.apps, apps_config("default")).changes()
        finally:
            await context.close_connections()
    return [operation.describe() for writer in writers for operation in writer.operations]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.db.migrate")
    parser.add_argument("command", choices=["check"], help="check: models match the migrations")
    parser.parse_args(argv)
    changes = asyncio.run(model_changes())
    if not changes:
        print("migrations match the models")
        return 0
    print("the models have changes that no migration covers:", file=sys.stderr)
    for change in changes:
        print(f"  - {change}", file=sys.stderr)
    print("run `make migrations NAME=<what_changed>` and commit the new file", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
