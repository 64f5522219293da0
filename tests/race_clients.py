"""Concurrent calls from another process, each lane on its own channel and connection.

A race test that gathers calls on the test's event loop, where the in-process
server runs too, lets that loop decide the interleaving: the calls leave one
by one and may never overlap. ``race()`` instead hands the calls to a fresh
Python process (``python -m tests.race_clients``): it opens one channel per
lane, each with its own connection, waits until every channel is connected,
then starts every lane at once. A lane is a list of calls made one after the
other; the lanes run concurrently. The outcomes come back in order.

    outcomes = await race(service.address, [[("CreateUser", request)]] * 20)

or, one call per lane, ``await race_calls(address, [("DisableUser", r), ...])``.

Each failure's google.rpc.Status is checked on the way (ErrorInfo of our
domain, no driver text: ``tests.bank_load.check_failure``); a malformed one is
reported in ``Outcome.problem``. ``stagger`` delays the start of lane i by
``i * stagger`` seconds, to make one order of arrival likely; ``race_pair``
uses it so that an order-dependent race shows both its outcomes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf import message_factory
from users.v1 import user_service_pb2

if TYPE_CHECKING:
    from collections.abc import Sequence

    from google.protobuf.message import Message

__all__ = ["HEAD_START", "Outcome", "race", "race_calls", "race_pair"]

SERVICE = user_service_pb2.DESCRIPTOR.services_by_name["UserService"]
# A race that runs longer than this is stuck: the test fails instead of hanging.
RACE_TIMEOUT = 60.0
CALL_TIMEOUT = 30.0
# A lead long enough that the leading call is usually done before the other
# arrives, so that each order of an order-dependent race is seen.
HEAD_START = 0.2
# The client process imports ``tests.*`` from the project root.
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Outcome:
    """One call's result as the client process saw it."""

    method: str
    code: grpc.StatusCode
    reply: Any = None
    reason: str = ""
    message: str = ""
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK


Call = tuple[str, "Message"]


def _message_class(method: str, *, reply: bool) -> type[Message]:
    descriptor = SERVICE.methods_by_name[method]
    kind = descriptor.output_type if reply else descriptor.input_type
    cls: type[Message] = message_factory.GetMessageClass(kind)
    return cls


async def race(
    address: str, lanes: Sequence[Sequence[Call]], *, stagger: float = 0.0
) -> list[list[Outcome]]:
    """Run ``lanes`` concurrently from a separate process; the outcomes of each lane."""
    plan = {
        "address": address,
        "stagger": stagger,
        "lanes": [
            [
                {"method": method, "request": base64.b64encode(r.SerializeToString()).decode()}
                for method, r in lane
            ]
            for lane in lanes
        ],
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.race_clients",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(json.dumps(plan).encode()), RACE_TIMEOUT
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"race clients still running after {RACE_TIMEOUT} s") from None
    if process.returncode != 0:
        raise AssertionError(f"race clients exited {process.returncode}: {err.decode()[-2000:]}")
    return [[_outcome(raw) for raw in lane] for lane in json.loads(out)]


async def race_calls(address: str, calls: Sequence[Call], *, stagger: float = 0.0) -> list[Outcome]:
    """One call per lane, all at once; the outcomes in the order of ``calls``."""
    lanes = await race(address, [[call] for call in calls], stagger=stagger)
    return [lane[0] for lane in lanes]


async def race_pair(address: str, first: Call, second: Call, index: int) -> tuple[Outcome, Outcome]:
    """Two calls racing, by round ``index``: at once, ``first`` leads, ``second`` leads, again.

    Rounds at once are the race itself; the rounds with a head start make sure
    that over a few rounds each order happens, so that a test can check what
    each order must leave behind.
    """
    mode = index % 3
    if mode == 0:
        a, b = await race_calls(address, [first, second])
    elif mode == 1:
        a, b = await race_calls(address, [first, second], stagger=HEAD_START)
    else:
        b, a = await race_calls(address, [second, first], stagger=HEAD_START)
    return a, b


def _outcome(raw: dict[str, Any]) -> Outcome:
    reply = None
    if raw["reply"] is not None:
        reply = _message_class(raw["method"], reply=True).FromString(base64.b64decode(raw["reply"]))
    return Outcome(
        raw["method"],
        grpc.StatusCode[raw["code"]],
        reply,
        raw["reason"],
        raw["message"],
        raw["problem"],
    )


# --- the client process ----------------------------------------------------------------


async def _lane(
    channel: grpc.aio.Channel, calls: list[dict[str, str]], delay: float
) -> list[dict[str, Any]]:
    from tests.bank_load import check_failure

    if delay:
        await asyncio.sleep(delay)
    results = []
    for call in calls:
        method = call["method"]
        request_class = _message_class(method, reply=False)
        reply_class = _message_class(method, reply=True)
        invoke = channel.unary_unary(
            f"/{SERVICE.full_name}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply_class.FromString,
        )
        request = request_class.FromString(base64.b64decode(call["request"]))
        result: dict[str, Any] = {"method": method, "reply": None, "reason": "", "message": ""}
        try:
            reply = await invoke(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            reason, problem = check_failure(error)
            result |= {
                "code": error.code().name,
                "reason": reason,
                "message": error.details() or "",
                "problem": problem,
            }
        else:
            encoded = base64.b64encode(reply.SerializeToString()).decode()
            result |= {"code": "OK", "reply": encoded, "problem": None}
        results.append(result)
    return results


async def _run(plan: dict[str, Any]) -> list[list[dict[str, Any]]]:
    # A private subchannel pool per channel: one TCP connection per lane, not one shared.
    channels = [
        grpc.aio.insecure_channel(plan["address"], options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in plan["lanes"]
    ]
    try:
        await asyncio.gather(*(c.channel_ready() for c in channels))
        return await asyncio.gather(
            *(
                _lane(channel, lane, index * plan["stagger"])
                for index, (channel, lane) in enumerate(zip(channels, plan["lanes"], strict=True))
            )
        )
    finally:
        await asyncio.gather(*(c.close(None) for c in channels))


def main() -> None:
    plan = json.loads(sys.stdin.read())
    json.dump(asyncio.run(_run(plan)), sys.stdout)


if __name__ == "__main__":
    main()
