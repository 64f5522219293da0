"""Schema migrations on SQLite and PostgreSQL: fresh databases, upgrades, start-up.

The upgrade test applies only the first migration, writes rows with plain SQL
(the models describe the latest schema, not the first one), then applies the
rest. While there is one migration "the rest" is empty; every new migration
makes it a real upgrade test, and ``test_migrated_schema_matches_the_models``
checks that the migrations still build what the models describe.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from tortoise.exceptions import IntegrityError

import service.db.migrations
from service.db.database import Database
from service.db.migrate import (
    MigrationsPending,
    apply_migrations,
    pending_migrations,
    require_migrated,
)
from service.db.models import LedgerRow, PostRow, ServiceSecret, UserRow
from tests.requirements import postgres_admin_url

READ_INDEXES = importlib.import_module("service.db.migrations.0006_read_indexes")

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

TABLES = {"users", "posts", "ledger", "service_secrets"}
STAMP = "2024-05-06 07:08:09+00:00"


def migration_files() -> list[str]:
    """The migrations on disk, in name order (which is their order)."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(service.db.migrations.__path__)
        if not info.ispkg and not info.name.startswith("_")
    )


@pytest_asyncio.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A connected database whose schema nobody has touched."""
    db = Database(database_url, pool_size=2)
    await db.connect(create_schema=False)
    try:
        yield db
    finally:
        await db.close()


@pytest_asyncio.fixture
async def reference_url(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A second empty database on the same backend."""
    if not database_url.startswith("postgres"):
        yield f"sqlite://{tmp_path / 'reference.sqlite3'}"
        return
    admin_url = postgres_admin_url()
    name = f"users_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def sql(db: Database, query: str) -> list[dict[str, Any]]:
    with db.activate():
        return await db.context.db(db.dialect).execute_query_dict(query)


async def tables(db: Database) -> set[str]:
    if db.dialect == "postgres":
        query = "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {row["name"] for row in await sql(db, query)}


async def make_user(key: str, email_key: str) -> UserRow:
    return await UserRow.create(
        username=key, username_key=key, email=email_key, email_key=email_key, password_hash="x"
    )


async def test_empty_database_has_every_migration_pending(database):
    assert migration_files()[0] == "0001_initial"
    assert await pending_migrations(database) == migration_files()
    # Asking changes nothing.
    assert await tables(database) == set()


async def test_migrating_a_fresh_database_creates_the_tables_and_unique_indexes(database):
    assert await apply_migrations(database) == migration_files()

    assert await pending_migrations(database) == []
    assert {*TABLES, "tortoise_migrations"} <= await tables(database)
    with database.activate():
        await make_user("alice", "alice@example.com")
        with pytest.raises(IntegrityError):
            await make_user("alice", "other@example.com")
        with pytest.raises(IntegrityError):
            await make_user("bob", "alice@example.com")
        await LedgerRow.create(kind="deposit", to_user_id=1, amount=5, request_id="r1")
        with pytest.raises(IntegrityError):
            await LedgerRow.create(kind="deposit", to_user_id=1, amount=5, request_id="r1")
        assert await UserRow.all().count() == 1


async def test_applying_again_changes_nothing(database):
    await apply_migrations(database)
    assert await apply_migrations(database) == []
    assert await pending_migrations(database) == []


async def test_upgrading_from_the_first_migration_keeps_the_data(database):
    first, *rest = migration_files()
    assert await apply_migrations(database, target=first) == [first]
    assert await pending_migrations(database) == rest

    # Only columns of the first migration, written as its schema stands.
    await sql(
        database,
        "INSERT INTO users (username, username_key, email, email_key, display_name,"
        " password_hash, balance, create_time, update_time) VALUES"
        " ('Alice', 'alice', 'Alice@Example.com', 'alice@example.com', 'Alice A.',"
        f" '$argon2id$hash', 700, '{STAMP}', '{STAMP}')",
    )
    await sql(
        database,
        "INSERT INTO posts (user_id, title, body, create_time) VALUES"
        f" ((SELECT id FROM users WHERE username_key = 'alice'), 'Hello', 'First!', '{STAMP}')",
    )
    await sql(
        database,
        "INSERT INTO ledger (kind, from_user_id, to_user_id, amount, request_id, create_time)"
        f" VALUES ('deposit', NULL, (SELECT id FROM users), 700, 'req-1', '{STAMP}')",
    )
    await sql(database, "INSERT INTO service_secrets (name, value) VALUES ('k', 'c2VjcmV0')")

    assert await apply_migrations(database) == rest
    assert await pending_migrations(database) == []

    stamp = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    with database.activate():
        alice = await UserRow.get(username_key="alice")
        assert (alice.username, alice.email, alice.email_key) == (
            "Alice",
            "Alice@Example.com",
            "alice@example.com",
        )
        assert (alice.display_name, alice.password_hash, alice.balance) == (
            "Alice A.",
            "$argon2id$hash",
            700,
        )
        assert alice.create_time == stamp
        # Users from before the lifecycle columns are active, undeleted, version 1.
        assert (alice.state, alice.version, alice.delete_time, alice.purge_time) == (
            1,
            1,
            None,
            None,
        )
        post = await PostRow.get(user_id=alice.id)
        assert (post.title, post.body, post.create_time) == ("Hello", "First!", stamp)
        deposit = await LedgerRow.get(request_id="req-1")
        assert (deposit.from_user_id, deposit.to_user_id, deposit.amount) == (None, alice.id, 700)
        assert (await ServiceSecret.get(name="k")).value == "c2VjcmV0"

        # Ids keep counting past the old rows, and the foreign key still cascades.
        bob = await make_user("bob", "bob@example.com")
        assert bob.id > alice.id
        await alice.delete()
        assert await PostRow.all().count() == 0
    if database.dialect == "sqlite":
        assert (await sql(database, "PRAGMA foreign_keys"))[0]["foreign_keys"] == 1


async def test_migrated_schema_matches_the_models(database, reference_url):
    await apply_migrations(database)
    reference = Database(reference_url, pool_size=1)
    await reference.connect(create_schema=False)
    try:
        with reference.activate():
            await reference.context.generate_schemas(safe=False)
            # Indexes the models cannot declare (a collation, a partial index).
            await READ_INDEXES.create_read_indexes(reference.context.db(reference.dialect))
        assert await schema(database) == await schema(reference)
    finally:
        await reference.close()


async def test_a_database_made_before_migrations_is_adopted(database):
    # Such databases have the first migration's tables (generate_schemas made
    # them from the same models) and no record of any migration.
    first = migration_files()[0]
    await apply_migrations(database, target=first)
    await sql(database, "DROP TABLE tortoise_migrations")
    await sql(
        database,
        "INSERT INTO users (username, username_key, email, email_key, display_name,"
        " password_hash, balance, create_time, update_time) VALUES ('Alice', 'alice',"
        f" 'a@example.com', 'a@example.com', '', 'x', 0, '{STAMP}', '{STAMP}')",
    )
    assert await pending_migrations(database) == migration_files()

    assert await apply_migrations(database) == migration_files()

    assert await pending_migrations(database) == []
    with database.activate():
        assert [u.username_key for u in await UserRow.all()] == ["alice"]


async def test_connect_applies_migrations_only_when_asked(database_url, database):
    assert await tables(database) == set()
    migrated = Database(database_url, pool_size=1)
    await migrated.connect(create_schema=True)
    try:
        assert await pending_migrations(migrated) == []
        assert await tables(migrated) >= TABLES
    finally:
        await migrated.close()


async def test_require_migrated_names_what_is_missing(database):
    with pytest.raises(MigrationsPending) as raised:
        await require_migrated(database)
    assert raised.value.names == migration_files()
    message = str(raised.value)
    assert "0001_initial" in message
    assert "python -m service migrate" in message
    assert database.safe_url in message

    await apply_migrations(database)
    await require_migrated(database)


async def test_concurrent_appliers_apply_each_migration_once(database_url, database):
    other = Database(database_url, pool_size=1)
    await other.connect(create_schema=False)
    try:
        results = await asyncio.gather(apply_migrations(database), apply_migrations(other))
    finally:
        await other.close()
    assert sorted(results) == [[], migration_files()]
    names = [row["name"] for row in await sql(database, "SELECT name FROM tortoise_migrations")]
    assert sorted(names) == migration_files()


async def schema(db: Database) -> dict[str, Any]:
    """Tables, columns, indexes and constraints, without names the database made up."""
    if db.dialect == "postgres":
        return await _postgres_schema(db)
    return await _sqlite_schema(db)


async def _sqlite_schema(db: Database) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for table in sorted(await tables(db) - {"tortoise_migrations", "sqlite_sequence"}):
        columns = {
            (c["name"], c["type"], c["notnull"], c["dflt_value"], c["pk"])
            for c in await sql(db, f'PRAGMA table_info("{table}")')
        }
        indexes = set()
        for index in await sql(db, f'PRAGMA index_list("{table}")'):
            info = await sql(db, f'PRAGMA index_info("{index["name"]}")')
            indexes.add((index["unique"], tuple(c["name"] for c in info)))
        keys = {
            (k["table"], k["from"], k["to"], k["on_delete"])
            for k in await sql(db, f'PRAGMA foreign_key_list("{table}")')
        }
        result[table] = (columns, indexes, keys)
    return result


async def _postgres_schema(db: Database) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for table in sorted(await tables(db) - {"tortoise_migrations"}):
        columns = {
            tuple(c.values())
            for c in await sql(
                db,
                "SELECT column_name, data_type, character_maximum_length, is_nullable,"
                " column_default FROM information_schema.columns"
                f" WHERE table_schema = current_schema() AND table_name = '{table}'",
            )
        }
        indexes = {
            re.sub(r"INDEX \S+ ON", "INDEX ON", i["indexdef"])
            for i in await sql(db, f"SELECT indexdef FROM pg_indexes WHERE tablename = '{table}'")
        }
        constraints = {
            (c["contype"], c["definition"])
            for c in await sql(
                db,
                "SELECT contype, pg_get_constraintdef(oid) AS definition FROM pg_constraint"
                f" WHERE conrelid = '{table}'::regclass",
            )
        }
        result[table] = (columns, indexes, constraints)
    return result
