"""Reading the ledger: a user's transfers, newest first, in O(page) whatever its history.

A user's transfers are the ones it sent (``from_user_id``) and the ones it
received (``to_user_id``). Each side is one walk down its own index, newest
first, stopped after a page; the two pages are merged. An ``OR`` of both
columns would instead collect every transfer of the user and sort them.
Received transfers have a partial index (``kind = 'transfer'``, migration
0006) so that a user's many deposits are not walked past; sent ones need
none, since deposits have no sender.
"""

from __future__ import annotations

from typing import Any

from service.db.sql import Statement, as_datetime
from service.db.user_rows import VISIBLE
from service.domain.entities import Transfer
from service.domain.errors import UserNotFound

__all__ = ["TRANSFER", "list_transfers", "transfer_of"]

TRANSFER = "transfer"
_COLUMNS = "id, from_user_id, to_user_id, amount, request_id, create_time"


def transfer_of(row: tuple[Any, ...]) -> Transfer:
    """A transfer from a row of ``_COLUMNS``."""
    return Transfer(row[0], row[1] or 0, row[2], row[3], row[4], as_datetime(row[5]))


async def list_transfers(
    user_id: int, before_id: int | None, limit: int
) -> tuple[list[Transfer], bool]:
    """Up to ``limit`` transfers the user sent or received, newest first, and if more follow."""
    exists = Statement("SELECT 1 FROM users WHERE id =")
    exists.add(f"{exists.param(user_id)} AND {VISIBLE}")
    if await exists.scalar() is None:
        raise UserNotFound(user_id)
    statement = Statement(f"SELECT {_COLUMNS} FROM (")
    for side in ("from_user_id", "to_user_id"):
        if side == "to_user_id":
            statement.add(") AS sent UNION ALL SELECT * FROM (")
        # The literal kind matches the partial index's predicate (a bound
        # parameter would not, in a generic plan).
        statement.add(f"SELECT {_COLUMNS} FROM ledger WHERE kind = '{TRANSFER}'")
        statement.add(f"AND {side} = {statement.param(user_id)}")
        if before_id is not None:
            statement.add(f"AND id < {statement.param(before_id)}")
        statement.add(f"ORDER BY id DESC LIMIT {statement.param(limit + 1)}")
    statement.add(f") AS received ORDER BY id DESC LIMIT {statement.param(limit + 1)}")
    page = await statement.rows()
    return [transfer_of(row) for row in page[:limit]], len(page) > limit
