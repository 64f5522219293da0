"""Indexes that keep every listing O(page) at millions of rows (service.db.user_listing).

- ``users (username_key COLLATE "C", id)`` on PostgreSQL: ListUsers by
  username and the ``username_prefix`` range compare keys by code point,
  whatever the database's collation; SQLite's keys already compare so
  (BINARY), and ``(username_key, id)`` serves both there.
- ``ledger (to_user_id, id) WHERE kind = 'transfer'``: a user's received
  transfers without walking its deposits (service.db.ledger).

Then the planner gets statistics of the tables as they are now: a database
migrated after a large import would otherwise plan blind until autovacuum
comes by.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import migrations
from tortoise.migrations import operations as ops

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient
    from tortoise.migrations.schema_editor.base import BaseSchemaEditor

_POSTGRES = (
    'CREATE INDEX IF NOT EXISTS users_username_key_c_id ON users (username_key COLLATE "C", id)',
    "CREATE INDEX IF NOT EXISTS ledger_received_transfers ON ledger (to_user_id, id)"
    " WHERE kind = 'transfer'",
    "ANALYZE users",
    "ANALYZE ledger",
    "ANALYZE posts",
)
_SQLITE = (
    "CREATE INDEX IF NOT EXISTS users_username_key_id ON users (username_key, id)",
    "CREATE INDEX IF NOT EXISTS ledger_received_transfers ON ledger (to_user_id, id)"
    " WHERE kind = 'transfer'",
)


async def create_read_indexes(client: BaseDBAsyncClient) -> None:
    """The indexes (and statistics) of this migration; the models cannot declare them."""
    postgres = client.capabilities.dialect == "postgres"
    for sql in _POSTGRES if postgres else _SQLITE:
        await client.execute_query(sql)


async def _forward(apps: Any, schema_editor: BaseSchemaEditor) -> None:
    await create_read_indexes(schema_editor.client)


async def drop_read_indexes(apps: Any, schema_editor: BaseSchemaEditor) -> None:
    client = schema_editor.client
    postgres = client.capabilities.dialect == "postgres"
    name = "users_username_key_c_id" if postgres else "users_username_key_id"
    for index in (name, "ledger_received_transfers"):
        await client.execute_query(f"DROP INDEX IF EXISTS {index}")


class Migration(migrations.Migration):
    dependencies = [("models", "0005_user_create_requests")]

    operations = [ops.RunPython(_forward, drop_read_indexes)]
