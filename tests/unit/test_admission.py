"""The call guard's admission: a process-wide count of calls, given back however a call ends."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from service.api.calls import Admission, CallGuard


class Refused(Exception):
    def __init__(self, status: Any) -> None:
        self.status = status


class FakeContext:
    async def abort_with_status(self, status: Any) -> None:
        raise Refused(status)

    def code(self) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def guard_with(admission: Admission) -> CallGuard:
    return CallGuard(lambda error: None, None, log_calls=False, admission=admission)


def start(call: Any) -> asyncio.Task[Any]:
    async def run() -> Any:
        return await call

    return asyncio.create_task(run())


async def test_calls_over_the_limit_are_refused_across_guards_and_slots_come_back():
    admission = Admission(2)
    release = asyncio.Event()

    async def slow(request: Any, context: Any) -> str:
        await release.wait()
        return "done"

    # Two guards, as two servers of one process each have their own.
    first = guard_with(admission).wrap("s.S", "Slow", slow)
    second = guard_with(admission).wrap("s.S", "Slow", slow)
    running = [start(first(None, FakeContext())) for _ in range(2)]
    await asyncio.sleep(0)
    assert admission.serving == 2
    with pytest.raises(Refused) as refused:
        await second(None, FakeContext())
    assert refused.value.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    release.set()
    assert await asyncio.gather(*running) == ["done", "done"]
    assert admission.serving == 0


async def test_a_failed_or_cancelled_call_gives_its_slot_back():
    admission = Admission(1)

    async def broken(request: Any, context: Any) -> None:
        raise RuntimeError("boom")

    async def stuck(request: Any, context: Any) -> None:
        await asyncio.Event().wait()

    with pytest.raises(Refused) as failed:
        await guard_with(admission).wrap("s.S", "Broken", broken)(None, FakeContext())
    assert failed.value.status.code == grpc.StatusCode.INTERNAL
    assert admission.serving == 0
    task = start(guard_with(admission).wrap("s.S", "Stuck", stuck)(None, FakeContext()))
    await asyncio.sleep(0)
    assert admission.serving == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert admission.serving == 0
