"""The kept connections of service.db.lanes, against a stand-in pool that counts connections."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.db.lanes import Lanes


class Connection:
    def __init__(self, number: int) -> None:
        self.number = number
        self.gate: asyncio.Event | None = None
        self.fail: BaseException | None = None

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [(self.number, sql, params)]


class Pool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.made: list[Connection] = []
        self.released: list[Connection] = []

    def get_max_size(self) -> int:
        return self.size

    async def acquire(self) -> Connection:
        connection = Connection(len(self.made))
        self.made.append(connection)
        return connection

    async def release(self, connection: Connection) -> None:
        self.released.append(connection)


@pytest.mark.parametrize(("pool_size", "lanes"), [(1, 0), (2, 1), (5, 1), (6, 2), (10, 3), (40, 3)])
def test_lanes_take_a_third_of_the_pool_at_most_and_none_of_a_pool_of_one(pool_size, lanes):
    assert Lanes(Pool(pool_size)).limit == lanes


async def test_reads_one_after_another_keep_using_one_connection():
    pool = Pool(10)
    lanes = Lanes(pool)
    for n in range(5):
        assert await lanes.rows("SELECT $1", [n]) == [(0, "SELECT $1", (n,))]
    assert len(pool.made) == 1
    assert pool.released == []


async def test_reads_beyond_the_free_lanes_are_sent_to_the_pool():
    pool = Pool(6)
    lanes = Lanes(pool)
    gate = asyncio.Event()
    pool.acquire = _gated(pool.acquire, gate)  # type: ignore[method-assign]
    first = asyncio.create_task(lanes.rows("SELECT 1", []))
    second = asyncio.create_task(lanes.rows("SELECT 2", []))
    await asyncio.sleep(0)
    # Both lanes of a pool of 6 are taken: a third read is not kept waiting.
    assert await asyncio.wait_for(lanes.rows("SELECT 3", []), 1) is None
    gate.set()
    assert list(await asyncio.gather(first, second)) == [
        [(0, "SELECT 1", ())],
        [(1, "SELECT 2", ())],
    ]
    assert len(pool.made) == 2
    assert await lanes.rows("SELECT 4", []) is not None
    assert len(pool.made) == 2


async def test_a_failed_read_gives_its_connection_back_and_the_next_takes_another():
    pool = Pool(10)
    lanes = Lanes(pool)
    await lanes.rows("SELECT 1", [])
    broken = pool.made[0]
    broken.fail = ConnectionResetError("gone")
    with pytest.raises(ConnectionResetError):
        await lanes.rows("SELECT 1", [])
    assert pool.released == [broken]
    assert await lanes.rows("SELECT 1", []) == [(1, "SELECT 1", ())]
    assert lanes.taken == 1


async def test_a_read_cancelled_mid_statement_gives_its_connection_back():
    pool = Pool(10)
    lanes = Lanes(pool)
    await lanes.rows("SELECT 1", [])
    pool.made[0].gate = asyncio.Event()
    read = asyncio.create_task(lanes.rows("SELECT pg_sleep(10)", []))
    await asyncio.sleep(0)
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    assert pool.released == [pool.made[0]]
    assert (lanes.taken, lanes.idle) == (0, [])


async def test_close_gives_idle_lanes_back_and_a_busy_one_when_its_read_ends():
    pool = Pool(10)
    lanes = Lanes(pool)
    await lanes.rows("SELECT 1", [])
    gate = pool.made[0].gate = asyncio.Event()
    busy = asyncio.create_task(lanes.rows("SELECT 2", []))
    await asyncio.sleep(0)
    await lanes.rows("SELECT 3", [])  # on a second lane, idle afterwards
    await lanes.close()
    assert pool.released == [pool.made[1]]
    gate.set()
    assert await busy is not None
    assert pool.released == [pool.made[1], pool.made[0]]
    assert lanes.taken == 0
    # Closed: reads go to the pool, which is closing too.
    assert await lanes.rows("SELECT 4", []) is None


def _gated(acquire: Any, gate: asyncio.Event) -> Any:
    async def gated() -> Connection:
        connection: Connection = await acquire()
        connection.gate = gate
        return connection

    return gated
