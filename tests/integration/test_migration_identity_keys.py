"""Migration 0003 recomputes username keys with look-alike folding, or refuses to merge users.

Rows are written with plain SQL at the first migration, with the keys the old
rules (NFKC_Casefold only) gave them; then every later migration is applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from service.db.migrate import apply_migrations, pending_migrations
from service.domain.rules import fold_case
from tests.integration.test_migrations import STAMP, database, migration_files, sql
from tests.ops_helpers import run_cli, service_environment

if TYPE_CHECKING:
    from pathlib import Path

    from service.db.database import Database

__all__ = ["database"]  # the fixture, shared with test_migrations

MIGRATION = "0003_unicode_identity_keys"


async def insert_user(db: Database, username: str, key: str | None = None) -> int:
    """A row as the first migration's code stored it: key = NFKC_Casefold of the name."""
    key = fold_case(username) if key is None else key
    email = f"{len(await sql(db, 'SELECT id FROM users'))}@example.com"
    await sql(
        db,
        "INSERT INTO users (username, username_key, email, email_key, display_name,"
        f" password_hash, balance, create_time, update_time) VALUES ('{username}', '{key}',"
        f" '{email}', '{email}', '', 'x', 0, '{STAMP}', '{STAMP}')",
    )
    rows = await sql(db, f"SELECT id FROM users WHERE username_key = '{key}'")
    return int(rows[0]["id"])


async def keys(db: Database) -> dict[int, str]:
    rows = await sql(db, "SELECT id, username_key FROM users ORDER BY id")
    return {int(r["id"]): r["username_key"] for r in rows}


async def at_first_migration(db: Database) -> None:
    assert MIGRATION in migration_files()
    first = migration_files()[0]
    assert await apply_migrations(db, target=first) == [first]


async def test_upgrading_recomputes_the_keys_of_look_alike_names_and_keeps_ascii_ones(database):
    await at_first_migration(database)
    ids = {
        name: await insert_user(database, name)
        for name in ["Adm\u0131n", "İnfo", "\u0430dmin2", "Bob", "Straße", "ǅemal", "Ωμέγα"]
    }
    before = await keys(database)
    assert before[ids["Adm\u0131n"]] == "adm\u0131n"
    assert before[ids["İnfo"]] == "i\u0307nfo"

    await apply_migrations(database)

    assert MIGRATION not in await pending_migrations(database)
    after = await keys(database)
    assert after == {
        ids["Adm\u0131n"]: "admin",
        ids["İnfo"]: "info",
        ids["\u0430dmin2"]: "admin2",
        ids["Bob"]: "bob",
        ids["Straße"]: "strasse",
        ids["ǅemal"]: "džemal",
        ids["Ωμέγα"]: "ωμέya",
    }
    # Only the key changed: names and times are as they were.
    rows = await sql(database, "SELECT username, update_time FROM users ORDER BY id")
    assert [r["username"] for r in rows] == list(ids)
    assert len({str(r["update_time"]) for r in rows}) == 1


async def test_two_users_whose_names_now_share_a_key_stop_the_migration_naming_them(database):
    await at_first_migration(database)
    admin = await insert_user(database, "admin")
    spoof = await insert_user(database, "adm\u0131n")
    cyrillic = await insert_user(database, "\u0430dmin")
    info = await insert_user(database, "info")
    dotted = await insert_user(database, "İnfo")
    await insert_user(database, "Other")
    before = await keys(database)

    with pytest.raises(RuntimeError) as raised:
        await apply_migrations(database)

    message = str(raised.value)
    assert f"users {admin}, {spoof}, {cyrillic} would all have the username key 'admin'" in message
    assert f"users {info}, {dotted} would all have the username key 'info'" in message
    assert "nothing was changed" in message
    # The whole upgrade rolled back: the migration is still pending, keys are untouched.
    assert MIGRATION in await pending_migrations(database)
    assert await keys(database) == before

    # Renaming one of each group lets it through.
    await sql(database, f"UPDATE users SET username = 'admin3' WHERE id IN ({spoof})")
    await sql(database, f"UPDATE users SET username = 'admin4' WHERE id IN ({cyrillic})")
    await sql(database, f"UPDATE users SET username = 'info2' WHERE id IN ({dotted})")
    await apply_migrations(database)
    after = await keys(database)
    assert [after[i] for i in (admin, spoof, cyrillic, info, dotted)] == [
        "admin",
        "admin3",
        "admin4",
        "info",
        "info2",
    ]


async def test_keys_are_recomputed_from_names_even_where_one_takes_anothers_stored_key(database):
    # A stored key that another row's new key equals: the update must not trip the unique index.
    await at_first_migration(database)
    spoof = await insert_user(database, "adm\u0131n", key="stale")
    holder = await insert_user(database, "bob", key="admin")
    await apply_migrations(database)
    assert await keys(database) == {spoof: "admin", holder: "bob"}


async def note_rewrites(db: Database) -> None:
    """A trigger that records the id of every users row an UPDATE writes, in ``rewrites``."""
    await sql(db, "CREATE TABLE rewrites (id BIGINT NOT NULL)")
    if db.dialect == "postgres":
        await sql(
            db,
            "CREATE FUNCTION note_rewrite() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN INSERT INTO rewrites (id) VALUES (NEW.id); RETURN NEW; END $$",
        )
        await sql(
            db,
            "CREATE TRIGGER users_rewrites AFTER UPDATE ON users"
            " FOR EACH ROW EXECUTE FUNCTION note_rewrite()",
        )
    else:
        await sql(
            db,
            "CREATE TRIGGER users_rewrites AFTER UPDATE ON users"
            " BEGIN INSERT INTO rewrites (id) VALUES (NEW.id); END",
        )


async def test_rows_of_every_batch_are_read_and_only_changed_ones_rewritten(database):
    await at_first_migration(database)
    # 2,502 rows, three batches of reading; a look-alike name in each of them.
    names = [f"user{n}" for n in range(2500)] + ["\u0251lice", "\u01c0ogan"]
    names[0], names[1500] = "\u0430nna", "\u0131ngrid"
    values = ", ".join(
        f"('{name}', '{fold_case(name)}', '{i}@example.com', '{i}@example.com', '', 'x', 0,"
        f" '{STAMP}', '{STAMP}')"
        for i, name in enumerate(names)
    )
    await sql(
        database,
        "INSERT INTO users (username, username_key, email, email_key, display_name,"
        f" password_hash, balance, create_time, update_time) VALUES {values}",
    )
    ids = {
        row["username"]: int(row["id"])
        for row in await sql(database, "SELECT id, username FROM users")
    }
    await note_rewrites(database)

    assert await apply_migrations(database, target=MIGRATION)
    after = await keys(database)
    assert len(after) == 2502
    changed = {
        "\u0430nna": "anna",
        "\u0131ngrid": "ingrid",
        "\u0251lice": "alice",
        "\u01c0ogan": "logan",
    }
    assert {after[ids[name]] for name in changed} == set(changed.values())
    assert sorted(after.values())[-3:] == ["user997", "user998", "user999"]
    # A changed row may be written twice (through a placeholder key, so that no
    # new key trips the unique index on an old one); an unchanged row never.
    rewritten = {int(row["id"]) for row in await sql(database, "SELECT id FROM rewrites")}
    assert rewritten == {ids[name] for name in changed}


async def test_the_migrate_command_reports_a_collision_in_one_line_and_exits_1(
    database, database_url, tmp_path: Path
):
    await at_first_migration(database)
    admin = await insert_user(database, "admin")
    spoof = await insert_user(database, "adm\u0131n")

    status, _, stderr = await run_cli(
        "migrate", "--database-url", database_url, env=service_environment(), cwd=tmp_path
    )

    assert status == 1, stderr
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if "migration failed" in line]
    assert f"users {admin}, {spoof} would all have the username key 'admin'" in line
    assert MIGRATION in await pending_migrations(database)
