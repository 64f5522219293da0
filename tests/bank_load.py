"""Sign-ups, deposits and transfers under database faults, and the audit afterwards.

``BankLoad`` keeps a few clients calling CreateUser, Deposit and
TransferFunds and records every call: what was sent, the code that came back
and what the reply named (a user id, a ledger row id). While the database is
away a call may only fail with UNAVAILABLE carrying our ErrorInfo and a
RetryInfo, never UNKNOWN, INTERNAL or a driver's message; anything else is
recorded as a bad outcome.

``audit()`` then reads the database directly (raw SQL through
``tests/db_audit.py``, on SQLite or PostgreSQL, not through the service)
and reports every call that returned OK but left no trace (a lost write)
and every broken invariant of the bank. ``retry_unavailable()`` resends each
call that failed with UNAVAILABLE with the same request_id (the same
username for a sign-up), which must converge: applied exactly once.

Used by ``tests/integration/test_database_faults.py`` (seconds) and by
``python -m tests.soak`` (``make soak``, minutes).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from users.v1 import user_service_pb2, user_service_pb2_grpc

from tests.db_audit import invariant_violations, ledger_rows, rows

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = ["Audit", "BankLoad", "Call", "audit", "check_failure"]

PASSWORD = "correct horse battery"
DOMAIN = "users.v1"
# A call stuck longer than this on a database that came back is a finding
# (DEADLINE_EXCEEDED), not something to wait out.
CALL_TIMEOUT = 15.0
# How often a client resends an unanswered call before moving on (the rest are
# resent by retry_unavailable() once the run is over).
IN_LOAD_RETRIES = 3
# Words of asyncpg, Tortoise and PostgreSQL that must never reach a client.
DRIVER_WORDS = ("asyncpg", "tortoise", "postgres", "terminat", "sql", "connection", "select ")
OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
_run_ids = itertools.count(1)


@dataclass
class Call:
    """One call as the client saw it."""

    method: str
    request: Any
    code: grpc.StatusCode
    started: float
    ended: float
    # CreateUser and Deposit: the user id; TransferFunds: the ledger row id.
    result: int | None = None
    reason: str = ""


def check_failure(error: grpc.aio.AioRpcError) -> tuple[str, str | None]:
    """The ErrorInfo reason of a failed call, and what is wrong with its status if anything.

    Every failure must carry a google.rpc.Status with an ErrorInfo of our
    domain, and a message free of driver text; UNAVAILABLE must also say how
    long to wait (RetryInfo) and name the database as the reason.
    """
    message = error.details() or ""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return "", f"{error.code().name} without a google.rpc.Status: {message!r}"
    reason, retry = "", None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain != DOMAIN:
                return info.reason, f"ErrorInfo of domain {info.domain!r}"
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
    if not reason:
        return "", f"{error.code().name} without an ErrorInfo: {message!r}"
    leaked = [word for word in DRIVER_WORDS if word in message.lower()]
    if leaked or not message:
        return reason, f"{error.code().name} message {message!r} (driver words: {leaked})"
    if error.code() == UNAVAILABLE:
        if reason != "DATABASE_UNAVAILABLE":
            return reason, f"UNAVAILABLE with reason {reason!r}"
        if retry is None or retry.retry_delay.ToTimedelta().total_seconds() <= 0:
            return reason, "UNAVAILABLE without a RetryInfo delay"
    return reason, None


# Codes a call may end with while the database restarts: anything else is a finding.
EXPECTED: dict[str, set[grpc.StatusCode]] = {
    "CreateUser": {OK, UNAVAILABLE},
    "Deposit": {OK, UNAVAILABLE},
    "TransferFunds": {OK, UNAVAILABLE, FAILED_PRECONDITION},
}


@dataclass
class BankLoad:
    """Clients that sign users up, fund them and move money between them until stopped."""

    address: str
    clients: int = 8
    seed: int = 20261125
    calls: list[Call] = field(default_factory=list)
    # Unexpected codes and malformed statuses, one line each.
    bad: list[str] = field(default_factory=list)
    users: list[int] = field(default_factory=list)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self._prefix = f"soak{next(_run_ids)}x{uuid.uuid4().hex[:6]}"

    @property
    def codes(self) -> Counter[str]:
        return Counter(call.code.name for call in self.calls)

    async def call(
        self, stub: user_service_pb2_grpc.UserServiceStub, method: str, request: Message
    ) -> Call:
        """Make one call and record it; never raises for a gRPC failure."""
        started = time.monotonic()
        try:
            reply = await getattr(stub, method)(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            reason, problem = check_failure(error)
            call = Call(method, request, error.code(), started, time.monotonic(), reason=reason)
            if problem is not None:
                self.bad.append(f"{method}: {problem}")
        else:
            result = int(reply.id)
            call = Call(method, request, OK, started, time.monotonic(), result)
        if call.code not in EXPECTED[method]:
            self.bad.append(f"{method}: unexpected {call.code.name} ({call.reason})")
        elif call.code == FAILED_PRECONDITION and call.reason != "INSUFFICIENT_FUNDS":
            self.bad.append(f"{method}: FAILED_PRECONDITION with reason {call.reason!r}")
        self.calls.append(call)
        return call

    def sign_up(self) -> user_service_pb2.CreateUserRequest:
        name = f"{self._prefix}n{next(self._names)}"
        # With a request_id, a resent sign-up whose first attempt was applied
        # returns that user instead of finding its own name taken.
        return user_service_pb2.CreateUserRequest(
            username=name,
            password=PASSWORD,
            email=f"{name}@example.com",
            request_id=str(uuid.uuid4()),
        )

    async def _client(self, index: int, stop: asyncio.Event, mix: tuple[float, float]) -> None:
        rng = random.Random(self.seed * 1000 + index)
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            while not stop.is_set():
                method, request = self._next_request(rng, mix)
                # As a careful client does: an unanswered call is resent as it
                # was (same request_id), a few times, while the database is back
                # or still away; the replay must then find the first attempt.
                for attempt in range(1 + IN_LOAD_RETRIES):
                    call = await self.call(stub, method, request)
                    if call.code != UNAVAILABLE or stop.is_set():
                        break
                    await asyncio.sleep(0.05 * 2**attempt)
                if method == "CreateUser" and call.code == OK and call.result is not None:
                    self.users.append(call.result)

    def _next_request(self, rng: random.Random, mix: tuple[float, float]) -> tuple[str, Any]:
        create_share, deposit_share = mix
        roll = rng.random()
        if len(self.users) < 2 or roll < create_share:
            return "CreateUser", self.sign_up()
        if roll < create_share + deposit_share:
            return "Deposit", user_service_pb2.DepositRequest(
                user_id=rng.choice(self.users),
                amount=rng.randint(100, 10_000),
                request_id=str(uuid.uuid4()),
            )
        source, target = rng.sample(self.users, 2)
        return "TransferFunds", user_service_pb2.TransferFundsRequest(
            from_user_id=source,
            to_user_id=target,
            amount=rng.randint(1, 500),
            request_id=str(uuid.uuid4()),
        )

    async def run(self, stop: asyncio.Event, mix: tuple[float, float] = (0.1, 0.2)) -> None:
        """Call until ``stop`` is set; ``mix`` is the share of sign-ups and of deposits."""
        await asyncio.gather(*(self._client(i, stop, mix) for i in range(self.clients)))

    def first_ok_after(self, moment: float) -> float | None:
        """When the first call started after ``moment`` returned OK; None if none did."""
        ends = [c.ended for c in self.calls if c.code == OK and c.started >= moment]
        return min(ends) if ends else None

    async def retry_unavailable(self) -> int:
        """Resend every call that failed with UNAVAILABLE, as a client would; how many."""
        failed = [c for c in self.calls if c.code == UNAVAILABLE]
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            for call in failed:
                retried = await self.call(stub, call.method, call.request)
                if retried.code not in {OK, FAILED_PRECONDITION}:
                    self.bad.append(f"retried {call.method} ended {retried.code.name}")
        return len(failed)


@dataclass
class Audit:
    """What the database holds compared with what the clients were told."""

    lost: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.lost and not self.violations


async def audit(database_url: str, calls: list[Call], *, converged: bool = False) -> Audit:
    """Check every OK call left its write, and the bank's invariants, on the database itself.

    With ``converged`` (every UNAVAILABLE call has been retried), each request
    must also have been applied exactly once.
    """
    users = {
        row["id"]: (row["username"], row["balance"])
        for row in await rows(database_url, "SELECT id, username, balance FROM users")
    }
    ledger = {row["request_id"]: row for row in await ledger_rows(database_url)}
    found = Audit()
    for call in calls:
        problem = _missing(call, users, ledger) if call.code == OK else None
        if problem:
            found.lost.append(problem)
    balances = {user_id: balance for user_id, (_, balance) in users.items()}
    found.violations += invariant_violations(balances, list(ledger.values()))
    found.violations += _deposit_bounds(calls, ledger, converged=converged)
    if converged:
        found.violations += _unapplied(calls, users, ledger)
    return found


def _missing(call: Call, users: dict[int, tuple[str, int]], ledger: dict[str, Any]) -> str | None:
    request = call.request
    if call.method == "CreateUser":
        user = users.get(call.result or 0)
        if user is None or user[0] != request.username:
            return f"CreateUser {request.username} returned id {call.result}: not in users"
        return None
    row = ledger.get(request.request_id)
    if call.method == "Deposit":
        expected = ("deposit", None, request.user_id, request.amount)
    else:
        expected = ("transfer", request.from_user_id, request.to_user_id, request.amount)
    if row is None:
        return f"{call.method} {request.request_id} returned OK: no ledger row"
    got = (row["kind"], row["from_user_id"], row["to_user_id"], row["amount"])
    if got != expected:
        return f"{call.method} {request.request_id}: ledger row {got} != {expected}"
    if call.method == "TransferFunds" and row["id"] != call.result:
        return f"TransferFunds {request.request_id} returned id {call.result}, ledger {row['id']}"
    return None


def _deposit_bounds(calls: list[Call], ledger: dict[str, Any], *, converged: bool) -> list[str]:
    """Money in the bank lies between what was surely deposited and what may have been."""
    deposits = [c for c in calls if c.method == "Deposit"]
    sure = {c.request.request_id: c.request.amount for c in deposits if c.code == OK}
    maybe = {c.request.request_id: c.request.amount for c in deposits if c.code == UNAVAILABLE}
    ours = sum(
        row["amount"]
        for request_id, row in ledger.items()
        if row["kind"] == "deposit" and (request_id in sure or request_id in maybe)
    )
    low = sum(sure.values())
    high = sum(sure.values()) + sum(v for k, v in maybe.items() if k not in sure)
    if converged:
        low = high
    if not low <= ours <= high:
        return [f"deposits in the ledger {ours} outside [{low}, {high}] that clients account for"]
    return []


def _unapplied(
    calls: list[Call], users: dict[int, tuple[str, int]], ledger: dict[str, Any]
) -> list[str]:
    """After retries: every deposit and every sign-up attempted is in, exactly once."""
    names = Counter(name for name, _ in users.values())
    broken = []
    for call in calls:
        if call.method == "CreateUser" and names[call.request.username] != 1:
            broken.append(
                f"user {call.request.username} exists {names[call.request.username]} times"
            )
        if call.method == "Deposit" and call.request.request_id not in ledger:
            broken.append(f"deposit {call.request.request_id} never applied despite retry")
    return broken
