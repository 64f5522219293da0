"""PostgreSQL connections of the pool, returned to it without a reset round trip.

asyncpg's pool resets a connection on every release: it rolls back an open
transaction and then sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
UNLISTEN *; RESET ALL;``, a second round trip after every query that went
through Tortoise. Nothing this service runs on a pooled connection leaves
session state behind: the relay's advisory lock and the feed's LISTEN live on
connections of their own (``service.db.feed_listener.dedicated_connection``),
migrations take a transaction-scoped lock, and no code sets session
variables, declares cursors or listens on a pooled connection. So the reset
query is left out; asyncpg still rolls back any transaction left open and
drops listeners before a connection goes back (``Connection._reset``).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from tortoise.backends.base.config_generator import expand_db_url

__all__ = ["PooledConnection", "postgres_config"]


class PooledConnection(asyncpg.Connection):
    def get_reset_query(self) -> str:
        return ""


def postgres_config(url: str) -> dict[str, Any]:
    """Tortoise's connection config for ``url``, with pooled connections of this class."""
    config = expand_db_url(url)
    config["credentials"]["connection_class"] = PooledConnection
    return config
