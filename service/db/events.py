"""The change feed's outbox: append events in a write's transaction, read them, prune them.

Sequences, and why a reader never passes an event that is still uncommitted:

* PostgreSQL. Sequence values (and ids) are handed out at INSERT and commit
  in another order: a reader that saw 102 could miss a 101 committed a moment
  later. So an event's sequence is not a counter: it is the 64-bit id of the
  transaction that writes it (``pg_current_xact_id()``) times 2**20, plus its
  rank among that transaction's events. A reader returns only events below a
  horizon (times 2**20): the lowest transaction id still in progress in its
  statement's snapshot (``pg_snapshot_xmin(pg_current_snapshot())``), not
  counting those that pg_stat_activity shows to belong to another database
  of the server (they cannot write here). Every transaction below the horizon
  has ended, so that part of the feed can no longer change, and every
  transaction that writes later has a higher id and so higher sequences.
  Writers share no lock and no counter; the price is that an open
  transaction of this database holding a transaction id (any write, even a
  stuck migration or a forgotten psql session) holds the feed back until it
  ends, and so does one whose database cannot be told (a prepared
  transaction, a session pg_stat_activity hides).
  Transaction ids grow for ever across restarts, failovers to a physical
  replica and pg_upgrade (which keeps the counter); a logical dump restored
  into a fresh cluster starts them lower, and its consumers must relist.
* SQLite. One write transaction at a time: the database lock is taken by a
  transaction's first write and held until it commits, and every write here
  appends its events after its first write. A sequence is the largest one so
  far plus one, read inside that transaction, so sequence order is commit
  order and every committed event is final for readers. Pruning always keeps
  the newest event, so the largest sequence never goes back.

Every event is appended on the connection of the write's own transaction, so
it commits or rolls back with the change. The appending process's feed hub is
told at once (``on_local_append``); on PostgreSQL it then sends a NOTIFY to
wake the hubs of the other processes (``service.db.feed_listener``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from service.db.sql import Statement, as_datetime
from service.domain.actor import current_actor
from service.domain.events import Event, EventType, decode_resource, encode_resource

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from tortoise.backends.base.client import BaseDBAsyncClient

    from service.domain.events import NewEvent

__all__ = [
    "NOTIFY_CHANNEL",
    "PRUNED_THROUGH",
    "FeedBounds",
    "append_events",
    "appended_through",
    "feed_bounds",
    "feed_end",
    "get_mark",
    "on_local_append",
    "postgres_event_insert",
    "prune_events",
    "read_events",
    "set_mark",
]

NOTIFY_CHANNEL = "users_events"
PRUNED_THROUGH = "pruned_through"
# Events one transaction may append: the low 20 bits of a PostgreSQL sequence.
_RANK_BITS = 20
_PER_TRANSACTION = 1 << _RANK_BITS
_COLUMNS = "sequence, type, create_time, user_id, actor, resource"
# The horizon of the statement's snapshot as a sequence (see the module docstring).
_POSTGRES_HORIZON = (
    "(SELECT COALESCE((SELECT MIN(x::text::bigint) FROM pg_snapshot_xip(s.snap) AS x"
    " WHERE (x::text::bigint % 4294967296)::text::xid NOT IN (SELECT backend_xid"
    " FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND datname IS NOT NULL"
    " AND datname <> current_database())), pg_snapshot_xmax(s.snap)::text::bigint)"
    f" * {1 << 20} FROM (SELECT pg_current_snapshot() AS snap) AS s)"
)
_local_readers: set[Callable[[int], None]] = set()


def on_local_append(callback: Callable[[int], None]) -> Callable[[], None]:
    """Call ``callback(sequence)`` whenever this process appends events; returns the undo.

    It is called before the commit, with the highest sequence appended (0 on
    SQLite), so that the reader knows what to look out for: on SQLite a
    reader's query waits for the write transaction anyway (one connection
    behind one lock serves every query of the process); on PostgreSQL the
    reader re-reads briefly until its horizon passes that sequence, which
    happens when the transaction ends, committed or not.
    """
    _local_readers.add(callback)
    return lambda: _local_readers.discard(callback)


async def append_events(connection: BaseDBAsyncClient, events: Sequence[NewEvent]) -> None:
    """Insert ``events``, in order, in the transaction open on ``connection``.

    The actor is the one of the current call (empty outside a call, as for
    ``purge`` from the command line). One statement whatever their number.
    """
    if not events:
        return
    if len(events) >= _PER_TRANSACTION:
        raise ValueError(f"at most {_PER_TRANSACTION - 1} events per transaction")
    postgres = connection.capabilities.dialect == "postgres"
    actor = current_actor().principal
    now = datetime.now(UTC)
    params: list[Any] = []
    rows = []
    for rank, event in enumerate(events, start=1):
        values = [
            rank,
            int(event.type),
            event.user_id,
            event.other_user_id,
            actor,
            encode_resource(event.resource),
            now,
        ]
        if postgres:
            start = len(params)
            casts = ("int", "smallint", "bigint", "bigint", "text", "text", "timestamptz")
            rows.append(
                "(" + ", ".join(f"${start + i + 1}::{c}" for i, c in enumerate(casts)) + ")"
            )
        else:
            rows.append("(" + ", ".join("?" for _ in values) + ")")
        params.extend(values)
    if postgres:
        sql = _POSTGRES_APPEND.format(rows=", ".join(rows), per=_PER_TRANSACTION)
    else:
        sql = _SQLITE_APPEND.format(rows=", ".join(rows))
    _, appended = await connection.execute_query(sql, params)
    appended_through(int(next(iter(dict(appended[0]).values()))) if postgres and appended else 0)


def appended_through(sequence: int) -> None:
    """Tell this process's readers that events up to ``sequence`` were appended (0: unknown)."""
    for wake in tuple(_local_readers):
        wake(sequence)


def postgres_event_insert(
    statement: Statement,
    event_type: EventType,
    *,
    user_id: str,
    other_user_id: str,
    resource_json: str,
    create_time: str,
    source: str,
) -> str:
    """An INSERT of one event per row of ``source``, for a CTE of a one-statement write.

    PostgreSQL only. For a write that is a statement of its own (its own
    transaction), so the event is the transaction's first: its sequence is
    the start of the transaction's block plus one, as ``append_events`` would
    give it. The arguments are SQL expressions (placeholders of ``statement``
    or columns of ``source``); ``resource_json`` must build the same JSON as
    ``encode_resource``. The CTE returns ``sequence``.
    """
    kind, actor = statement.param(int(event_type)), statement.param(current_actor().principal)
    return (
        "INSERT INTO events (sequence, type, user_id, other_user_id, actor, resource, create_time)"
        f" SELECT pg_current_xact_id()::text::bigint * {_PER_TRANSACTION} + 1, {kind}::smallint,"
        f" {user_id}, {other_user_id}, {actor}::text, ({resource_json})::text, {create_time}"
        f" FROM {source} RETURNING sequence"
    )


_VALUES = "v(rank, type, user_id, other_user_id, actor, resource, create_time) AS (VALUES {rows})"
_INSERT = (
    "INSERT INTO events (sequence, type, user_id, other_user_id, actor, resource, create_time)"
    " SELECT base.sequence + v.rank, v.type, v.user_id, v.other_user_id, v.actor, v.resource,"
    " v.create_time FROM v, base"
)
# The transaction's block of sequences starts at its id << 20; events it
# appended earlier are visible to it, so a second append continues the ranks.
# No NOTIFY here: PostgreSQL serialises the commits of notifying transactions
# behind one lock (a third of the write throughput was lost to it); the
# process's feed hub notifies other processes once it has read the commit.
_POSTGRES_APPEND = (
    "WITH block AS (SELECT pg_current_xact_id()::text::bigint * {per} AS low),"
    " base AS (SELECT COALESCE(MAX(e.sequence), MIN(block.low)) AS sequence"
    " FROM block LEFT JOIN events e ON e.sequence > block.low AND e.sequence < block.low + {per}),"
    f" {_VALUES},"
    f" appended AS ({_INSERT} RETURNING sequence)"
    " SELECT MAX(sequence) FROM appended"
)
# Inside the write transaction, which holds SQLite's database lock (see above).
_SQLITE_APPEND = (
    "WITH base AS (SELECT COALESCE(MAX(sequence), 0) AS sequence FROM events),"
    f" {_VALUES} {_INSERT} ORDER BY v.rank"
)


def _filters(statement: Statement, types: Collection[EventType], user_id: int) -> None:
    if types:
        statement.add(f"AND type IN ({statement.params_of(sorted(int(t) for t in types))})")
    if user_id:
        mine, received = statement.param(user_id), statement.param(user_id)
        statement.add(f"AND (user_id = {mine} OR other_user_id = {received})")


async def read_events(
    after: int,
    limit: int,
    *,
    types: Collection[EventType] = (),
    user_id: int = 0,
) -> tuple[list[Event], int]:
    """Up to ``limit`` committed events after ``after`` in sequence order, and the watermark.

    Every matching event with a sequence at or below the watermark has been
    returned (by this call or an earlier one); resume from it. On PostgreSQL
    only the part of the feed below the snapshot's horizon is read (see the
    module docstring), in the same statement, hence the same snapshot.
    """
    statement = Statement()
    postgres = statement.dialect == "postgres"
    if postgres:
        statement.add(
            f"WITH h AS (SELECT {_POSTGRES_HORIZON} AS horizon)"
            " SELECT h.horizon, e.* FROM h LEFT JOIN LATERAL"
            f" (SELECT {_COLUMNS} FROM events WHERE sequence > {statement.param(after)}"
            " AND sequence < h.horizon"
        )
    else:
        statement.add(
            "SELECT (SELECT COALESCE(MAX(sequence), 0) + 1 FROM events) AS horizon, e.* FROM"
            f" (SELECT 1) AS h LEFT JOIN (SELECT {_COLUMNS} FROM events"
            f" WHERE sequence > {statement.param(after)}"
        )
    _filters(statement, types, user_id)
    statement.add(f"ORDER BY sequence LIMIT {statement.param(limit)}) AS e ON true")
    statement.add("ORDER BY e.sequence")
    rows = await statement.rows()
    horizon = int(rows[0][0])
    events = [_event_of(row[1:]) for row in rows if row[1] is not None]
    if len(events) == limit:
        return events, events[-1].sequence
    return events, max(after, horizon - 1)


async def feed_end() -> int:
    """A watermark with nothing after it yet: every event at or below it is final."""
    statement = Statement()
    if statement.dialect == "postgres":
        statement.add(f"SELECT {_POSTGRES_HORIZON} - 1")
    else:
        statement.add("SELECT COALESCE(MAX(sequence), 0) FROM events")
    return int(await statement.scalar())


def _event_of(row: Sequence[Any]) -> Event:
    return Event(
        sequence=int(row[0]),
        type=EventType(row[1]),
        create_time=as_datetime(row[2]),
        user_id=int(row[3]),
        actor=row[4],
        resource=decode_resource(row[5]),
        size=len(row[5]),
    )


class FeedBounds:
    """How far the feed was pruned, and its oldest retained event."""

    __slots__ = ("oldest_sequence", "pruned_through")

    def __init__(self, pruned_through: int, oldest_sequence: int) -> None:
        # Every event at or below this is gone: a cursor below it has lost some.
        self.pruned_through = pruned_through
        # The first sequence still held (0 when the feed is empty).
        self.oldest_sequence = oldest_sequence

    def expired(self, cursor: int) -> bool:
        return cursor < self.pruned_through


async def feed_bounds() -> FeedBounds:
    statement = Statement("SELECT (SELECT sequence FROM event_marks WHERE name =")
    statement.add(f"{statement.param(PRUNED_THROUGH)}), (SELECT MIN(sequence) FROM events)")
    [(pruned, oldest)] = await statement.rows()
    return FeedBounds(int(pruned or 0), int(oldest or 0))


async def get_mark(name: str) -> int | None:
    statement = Statement("SELECT sequence FROM event_marks WHERE name =")
    value = await statement.add(statement.param(name)).scalar()
    return None if value is None else int(value)


async def set_mark(name: str, sequence: int, *, only_forward: bool = True) -> None:
    """Store a named position; by default it never moves back."""
    statement = Statement("INSERT INTO event_marks (name, sequence) VALUES")
    statement.add(f"({statement.param(name)}, {statement.param(sequence)})")
    statement.add("ON CONFLICT (name) DO UPDATE SET sequence =")
    if only_forward:
        statement.add(
            "CASE WHEN excluded.sequence > event_marks.sequence"
            " THEN excluded.sequence ELSE event_marks.sequence END"
        )
    else:
        statement.add("excluded.sequence")
    await statement.execute()


async def prune_events(before: datetime, batch_size: int = 5000) -> int:
    """Delete events created before ``before``, except the newest; how many.

    Records the highest pruned sequence first (``PRUNED_THROUGH``), so that
    a cursor that pointed into the removed part is told it expired instead of
    silently skipping ahead. Batches keep each transaction short.
    """
    pruned = 0
    while True:
        select = Statement("SELECT sequence FROM events WHERE create_time <")
        select.add(f"{select.param(before)} AND sequence < (SELECT MAX(sequence) FROM events)")
        select.add(f"ORDER BY sequence LIMIT {int(batch_size)}")
        sequences = [int(row[0]) for row in await select.rows()]
        if not sequences:
            return pruned
        await set_mark(PRUNED_THROUGH, sequences[-1])
        delete = Statement("DELETE FROM events WHERE sequence <=")
        delete.add(f"{delete.param(sequences[-1])} AND create_time < {delete.param(before)}")
        pruned += await delete.execute()
        if len(sequences) < batch_size:
            return pruned
