"""Storage of the login throttle: one row per key, changed under a row lock.

A refused attempt costs one read and writes nothing. An admitted one reads
and rewrites its row in a transaction: on PostgreSQL the row is created if
missing and then locked with ``SELECT ... FOR UPDATE``, so concurrent
attempts on one key are counted one after the other; SQLite serialises
transactions anyway.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from tortoise.transactions import in_transaction

from service.db.sql import Statement
from service.domain.entities import Attempts

if TYPE_CHECKING:
    from collections.abc import Callable

    from service.domain.throttle import Decision

__all__ = ["admit", "forget", "sweep"]

_COLUMNS = "failures, delay_ms, blocked_until_ms, last_attempt_ms"
# Deleting stale rows on about one admitted attempt in this many keeps the
# table as small as the set of keys attacked within the window.
_SWEEP_EVERY = 64


async def admit(
    key: str,
    now_ms: int,
    decide: Callable[[Attempts | None, int], Decision],
    *,
    window_ms: int,
) -> Decision:
    """Apply ``decide`` to the key's state and store the state it returns, if allowed.

    Rows quiet for longer than ``window_ms`` are swept away now and then.
    """
    decision = decide(await _load(key, lock=False), now_ms)
    if not decision.allowed:
        return decision
    async with in_transaction():
        insert = Statement("INSERT INTO auth_throttle (key, failures, delay_ms,")
        insert.add("blocked_until_ms, last_attempt_ms) VALUES (")
        insert.add(f"{insert.param(key)}, 0, 0, 0, {insert.param(now_ms)})")
        await insert.add("ON CONFLICT (key) DO NOTHING").execute()
        decision = decide(await _load(key, lock=True), now_ms)
        if decision.allowed:
            state = decision.state
            update = Statement("UPDATE auth_throttle SET failures =")
            update.add(
                f"{update.param(state.failures)}, delay_ms = {update.param(state.delay_ms)},"
            )
            update.add(f"blocked_until_ms = {update.param(state.blocked_until_ms)},")
            update.add(f"last_attempt_ms = {update.param(state.last_attempt_ms)}")
            await update.add(f"WHERE key = {update.param(key)}").execute()
    if random.randrange(_SWEEP_EVERY) == 0:
        await sweep(now_ms - window_ms)
    return decision


async def forget(key: str) -> None:
    statement = Statement("DELETE FROM auth_throttle WHERE key =")
    await statement.add(statement.param(key)).execute()


async def _load(key: str, *, lock: bool) -> Attempts | None:
    statement = Statement(f"SELECT {_COLUMNS} FROM auth_throttle WHERE key =")
    statement.add(statement.param(key))
    if lock and statement.dialect == "postgres":
        statement.add("FOR UPDATE")
    rows = await statement.rows()
    if not rows:
        return None
    state = Attempts(*(int(value) for value in rows[0]))
    # A row inserted by this very transaction has no attempt yet.
    return None if state.failures == 0 else state


async def sweep(quiet_since_ms: int) -> None:
    """Delete rows with neither attempt nor lockout since ``quiet_since_ms``: they mean nothing."""
    statement = Statement("DELETE FROM auth_throttle WHERE last_attempt_ms <")
    statement.add(f"{statement.param(quiet_since_ms)} AND blocked_until_ms <")
    await statement.add(statement.param(quiet_since_ms)).execute()
