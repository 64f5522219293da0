"""Balance changes and the ledger: atomic, idempotent, exact under concurrency.

Every movement writes one ledger row whose ``request_id`` is unique, in the
same transaction as the balance changes, so a replay can never move money
twice and every balance can be recomputed from the ledger.

Locking: on PostgreSQL a transfer is one statement
(service.db.transfer_statement) that first locks both user rows with
``SELECT ... ORDER BY id FOR UPDATE`` (ascending id order, so opposite
transfers cannot deadlock) and checks them before it writes. SQLite has no
row locks and serialises writers; there the guarded ``UPDATE ... WHERE
balance >= amount`` is what keeps balances non-negative, and a transfer is a
transaction of an INSERT and that UPDATE (SQLite has no data-modifying CTEs).

The same guarded UPDATEs carry the lifecycle rules: soft-deleted users
neither send nor receive money (NOT_FOUND), a DISABLED or LOCKED user can
receive but not send (USER_NOT_ACTIVE); every balance change bumps the
user's version and update_time, so its etag changes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.transactions import in_transaction

from service.db.events import append_events
from service.db.models import LedgerRow
from service.db.sql import Statement, client
from service.db.transfer_statement import transfer_in_one_statement
from service.db.users import get_user
from service.domain.entities import Transfer, User
from service.domain.errors import (
    ConcurrencyConflict,
    FieldViolation,
    InsufficientFunds,
    InvalidArgument,
    RequestIdReused,
    UserNotActive,
    UserNotFound,
)
from service.domain.events import EventType, NewEvent
from service.domain.lifecycle import State

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["INT64_MAX", "deposit", "transfer"]

log = logging.getLogger("service.money")

INT64_MAX = 2**63 - 1
DEPOSIT, TRANSFER = "deposit", "transfer"
MAX_ATTEMPTS = 5
T = TypeVar("T")


def _to_transfer(row: LedgerRow) -> Transfer:
    return Transfer(
        id=row.id,
        from_user_id=row.from_user_id or 0,
        to_user_id=row.to_user_id,
        amount=row.amount,
        request_id=row.request_id,
        create_time=row.create_time,
    )


async def deposit(user_id: int, amount: int, request_id: str) -> User:
    async def attempt() -> User:
        async with in_transaction() as connection:
            # Claim the request id first: a concurrent replay waits on the
            # unique index here and then fails, moving nothing.
            await _record(DEPOSIT, None, user_id, amount, request_id)
            await _credit(user_id, amount)
            user = await get_user(user_id)
            await append_events(connection, [NewEvent(EventType.DEPOSIT_MADE, user_id, user)])
            return user

    fields = {"kind": DEPOSIT, "from_user_id": None, "to_user_id": user_id, "amount": amount}
    result = await _once(attempt, request_id, fields)
    # A replay returns the user as it is now, as before.
    return result if isinstance(result, User) else await get_user(user_id)


async def transfer(from_user_id: int, to_user_id: int, amount: int, request_id: str) -> Transfer:
    fields: dict[str, Any] = {
        "kind": TRANSFER,
        "from_user_id": from_user_id,
        "to_user_id": to_user_id,
        "amount": amount,
    }

    if client().capabilities.dialect == "postgres":
        return await _transfer_in_one_round_trip(from_user_id, to_user_id, amount, request_id)

    async def attempt() -> Transfer:
        async with in_transaction() as connection:
            transfer = await _record(TRANSFER, from_user_id, to_user_id, amount, request_id)
            await _move(from_user_id, to_user_id, amount)
            event = NewEvent(EventType.FUNDS_TRANSFERRED, from_user_id, transfer, to_user_id)
            await append_events(connection, [event])
            return transfer

    return await _once(attempt, request_id, fields)


async def _transfer_in_one_round_trip(
    from_user_id: int, to_user_id: int, amount: int, request_id: str
) -> Transfer:
    """PostgreSQL: one statement does it all (service.db.transfer_statement).

    Only when it did not transfer is more read: the first call's ledger row
    (a replay returns it, even if the balances could no longer pay for it),
    or the accounts, to name the reason.
    """
    fields = {
        "kind": TRANSFER,
        "from_user_id": from_user_id,
        "to_user_id": to_user_id,
        "amount": amount,
    }
    for _ in range(MAX_ATTEMPTS):
        now = datetime.now(UTC)
        outcome = await _retrying(
            functools.partial(
                transfer_in_one_statement, from_user_id, to_user_id, amount, request_id, now
            )
        )
        if outcome.ledger_id is not None:
            return Transfer(outcome.ledger_id, from_user_id, to_user_id, amount, request_id, now)
        previous = await _replayed(request_id, fields)
        if previous is not None:
            return _to_transfer(previous)
        if outcome.checks_passed:
            # The request id was taken, yet its row is gone: ledger rows are never deleted.
            break
        # Raises the reason; returns when the accounts, read again, would now
        # allow it (a concurrent transfer paid the sender in between): try again.
        await _refuse(from_user_id, to_user_id, amount)
    raise ConcurrencyConflict()


async def _once(
    attempt: Callable[[], Awaitable[T]], request_id: str, fields: dict[str, Any]
) -> T | Transfer:
    """Run a money transaction once per request id.

    No look-up comes first: the unique index on request_id rejects a replay
    inside the transaction (which then rolls back), and only then is the
    first call's ledger row read and compared. New requests, by far the most
    common, save a round-trip.
    """
    try:
        return await _retrying(attempt)
    except IntegrityError:
        previous = await _replayed(request_id, fields)
        if previous is None:
            raise
        return _to_transfer(previous)


async def _record(
    kind: str, from_user_id: int | None, to_user_id: int, amount: int, request_id: str
) -> Transfer:
    """Insert a ledger row; IntegrityError when the request id was used before."""
    now = datetime.now(UTC)
    statement = Statement("INSERT INTO ledger")
    values = statement.params_of([kind, from_user_id, to_user_id, amount, request_id, now])
    statement.add("(kind, from_user_id, to_user_id, amount, request_id, create_time)")
    statement.add(f"VALUES ({values}) RETURNING id")
    (row,) = await statement.returning()
    return Transfer(row[0], from_user_id or 0, to_user_id, amount, request_id, now)


async def _replayed(request_id: str, fields: dict[str, Any]) -> LedgerRow | None:
    """The ledger row of an earlier call with this request id, if its fields match.

    Raises RequestIdReused when the id was used for a different operation.
    """
    row = await LedgerRow.get_or_none(request_id=request_id)
    if row is None:
        return None
    if any(getattr(row, name) != value for name, value in fields.items()):
        raise RequestIdReused()
    return row


async def _move(from_user_id: int, to_user_id: int, amount: int) -> None:
    """Debit and credit in one guarded UPDATE: both rows change, or the reason is raised."""
    statement = Statement("UPDATE users SET version = version + 1,")
    statement.add(f"update_time = {statement.param(datetime.now(UTC))},")
    statement.add("balance = balance + CASE WHEN id =")
    # Typed explicitly: PostgreSQL cannot infer parameter types inside CASE.
    statement.add(
        f"{statement.param(from_user_id)} THEN CAST({statement.param(-amount)} AS BIGINT)"
    )
    statement.add(f"ELSE CAST({statement.param(amount)} AS BIGINT) END WHERE id IN")
    statement.add(f"({statement.params_of([from_user_id, to_user_id])}) AND delete_time IS NULL")
    statement.add(f"AND (id <> {statement.param(from_user_id)}")
    statement.add(f"OR (balance >= {statement.param(amount)}")
    statement.add(f"AND state = {statement.param(int(State.ACTIVE))}))")
    statement.add(f"AND (id <> {statement.param(to_user_id)}")
    statement.add(f"OR balance <= {statement.param(INT64_MAX - amount)})")
    if await statement.execute() == 2:
        return
    await _refuse(from_user_id, to_user_id, amount)
    raise _overflow(to_user_id)


async def _refuse(from_user_id: int, to_user_id: int, amount: int) -> None:
    """Raise why the accounts refuse this transfer (NOT_FOUND, not active, funds, overflow)."""
    accounts = await _accounts(from_user_id, to_user_id)
    missing = [i for i in (from_user_id, to_user_id) if i not in accounts]
    if missing:
        raise UserNotFound(*missing)
    balance, state = accounts[from_user_id]
    if state != State.ACTIVE:
        raise UserNotActive(from_user_id, state.name)
    if balance < amount:
        raise InsufficientFunds(from_user_id)
    if accounts[to_user_id][0] > INT64_MAX - amount:
        raise _overflow(to_user_id)


async def _credit(user_id: int, amount: int) -> None:
    statement = Statement("UPDATE users SET version = version + 1,")
    statement.add(f"update_time = {statement.param(datetime.now(UTC))},")
    statement.add(
        f"balance = balance + {statement.param(amount)} WHERE id = {statement.param(user_id)}"
    )
    statement.add(f"AND balance <= {statement.param(INT64_MAX - amount)}")
    statement.add("AND delete_time IS NULL")
    if await statement.execute():
        return
    if user_id in await _accounts(user_id):
        raise _overflow(user_id)
    raise UserNotFound(user_id)


async def _accounts(*user_ids: int) -> dict[int, tuple[int, State]]:
    """Balance and state of each of these users that exists and is not deleted."""
    statement = Statement("SELECT id, balance, state FROM users WHERE id IN")
    statement.add(f"({statement.params_of(user_ids)}) AND delete_time IS NULL")
    return {row[0]: (row[1], State(row[2])) for row in await statement.rows()}


def _overflow(user_id: int) -> InvalidArgument:
    return InvalidArgument([FieldViolation("amount", f"User {user_id}'s balance would overflow.")])


def _is_conflict(error: BaseException) -> bool:
    """A deadlock, serialization failure or busy database: worth another attempt."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(
            seen,
            asyncpg.exceptions.DeadlockDetectedError | asyncpg.exceptions.SerializationError,
        ):
            return True
        if isinstance(seen, OperationalError) and "database is locked" in str(seen):
            return True
        seen = seen.__cause__
    return False


async def _retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    for tries in range(1, MAX_ATTEMPTS + 1):
        try:
            return await attempt()
        except Exception as error:
            # asyncpg's deadlock error reaches us untranslated by Tortoise.
            if not _is_conflict(error):
                raise
            if tries == MAX_ATTEMPTS:
                raise ConcurrencyConflict() from error
            log.info("money transaction conflicted (attempt %d): %s", tries, type(error).__name__)
            # Jittered backoff so that the conflicting transactions part ways.
            await asyncio.sleep(random.uniform(0, 0.01 * 2**tries))
    raise AssertionError("unreachable")
