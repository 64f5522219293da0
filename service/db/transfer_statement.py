"""TransferFunds on PostgreSQL in one statement, so one round trip (it is its own transaction).

The statement is a chain of CTEs, each feeding the next, so their order is
fixed by the data they read, not by the unspecified order in which
PostgreSQL runs the sub-statements of a WITH:

1. ``locked`` locks both user rows, ascending id (``ORDER BY id FOR UPDATE``:
   opposite transfers cannot deadlock) and reads them as they are after any
   transaction it waited for (READ COMMITTED re-reads a row it had to wait on).
2. ``checked`` decides from those locked rows alone whether the transfer may
   happen: both exist and are not deleted, the sender is ACTIVE and can pay,
   the receiver's balance cannot overflow.
3. ``recorded`` inserts the ledger row only if the checks passed;
   ``ON CONFLICT (request_id) DO NOTHING`` makes a replay insert nothing (a
   concurrent one waits on the unique index until the first commits).
4. ``moved`` debits and credits only if ``recorded`` inserted. Both rows are
   locked and were checked in this statement, so it changes exactly both.

Either all of it commits or none; nothing is written when a check fails or
the request id was used. The caller tells the cases apart from the returned
ledger id and check result, and reads whatever else it needs only on those
rare paths.

5. ``evented`` appends the change feed's FUNDS_TRANSFERRED event for each
   row ``recorded`` inserted, so it is written exactly when the ledger row is,
   in the same transaction (``service.db.events``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.db.events import appended_through, postgres_event_insert
from service.db.sql import Statement
from service.domain.events import EventType
from service.domain.lifecycle import State

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["TransferOutcome", "transfer_in_one_statement"]

INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    """``ledger_id`` is set when the transfer happened; ``checks_passed`` says if it could."""

    ledger_id: int | None
    checks_passed: bool


async def transfer_in_one_statement(
    from_user_id: int, to_user_id: int, amount: int, request_id: str, now: datetime
) -> TransferOutcome:
    statement = Statement()
    sender, receiver = statement.param(from_user_id), statement.param(to_user_id)
    money, key, at = statement.param(amount), statement.param(request_id), statement.param(now)
    active, ceiling = statement.param(int(State.ACTIVE)), statement.param(INT64_MAX)
    # The Transfer snapshot, as service.domain.events.encode_resource writes it.
    snapshot = (
        "json_build_object('kind', 'transfer', 'id', recorded.id,"
        f" 'from_user_id', {sender}::bigint, 'to_user_id', {receiver}::bigint,"
        f" 'amount', {money}::bigint, 'request_id', {key}::text,"
        f" 'create_time', {statement.param(now.isoformat())}::text)"
    )
    evented = postgres_event_insert(
        statement,
        EventType.FUNDS_TRANSFERRED,
        user_id=f"{sender}::bigint",
        other_user_id=f"{receiver}::bigint",
        resource_json=snapshot,
        create_time=f"{at}::timestamptz",
        source="recorded",
    )
    statement.add(
        f"""
WITH locked AS (
    SELECT id, balance, state FROM users
    WHERE id IN ({sender}::bigint, {receiver}::bigint) AND delete_time IS NULL
    ORDER BY id FOR UPDATE
), checked AS (
    SELECT count(*) = 2
        AND coalesce(bool_and(
            id <> {sender}::bigint OR (balance >= {money}::bigint AND state = {active}::smallint)
        ), false)
        AND coalesce(bool_and(
            id <> {receiver}::bigint OR balance <= {ceiling}::bigint - {money}::bigint
        ), false) AS passed
    FROM locked
), recorded AS (
    INSERT INTO ledger (kind, from_user_id, to_user_id, amount, request_id, create_time)
    SELECT 'transfer', {sender}::bigint, {receiver}::bigint, {money}::bigint, {key}::text,
        {at}::timestamptz
    FROM checked WHERE checked.passed
    ON CONFLICT (request_id) DO NOTHING
    RETURNING id
), moved AS (
    UPDATE users SET version = version + 1, update_time = {at}::timestamptz,
        balance = balance + CASE WHEN id = {sender}::bigint
            THEN -{money}::bigint ELSE {money}::bigint END
    WHERE id IN ({sender}::bigint, {receiver}::bigint) AND EXISTS (SELECT 1 FROM recorded)
    RETURNING id
), evented AS (
    {evented}
)
SELECT (SELECT id FROM recorded), (SELECT passed FROM checked), (SELECT count(*) FROM moved),
    (SELECT max(sequence) FROM evented)
"""
    )
    ((ledger_id, passed, moved, sequence),) = await statement.rows()
    if ledger_id is not None and moved != 2:
        # Cannot happen (both rows are locked and checked above); say so loudly if it does.
        raise AssertionError(f"transfer {ledger_id} changed {moved} balances")
    if sequence is not None:
        appended_through(int(sequence))
    return TransferOutcome(ledger_id, bool(passed))
