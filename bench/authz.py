"""What the authorization check costs per call: the same server with and without a policy.

    make bench-authz   (python -m bench.authz [--seconds 3] [--rounds 6])

Two ``python -m service`` processes over mTLS on SQLite, one with
``--authz-policy deploy/authz-policy.json`` and one without, serve GetUser
(a user that exists) to a grpc.aio client with 16 calls in flight. Rounds
alternate between them (ABBA) so that noise hits both alike; the server's CPU time
(utime + stime from /proc) per call is the figure, and the ratio on/off is
what the policy costs. On a shared 2-core machine that ratio moves by tens
of percent between runs (an A/A run, both servers without a policy, is the
control), so the script also times the check itself inside an in-process
server: the identity from the TLS auth context, the decision and the actor,
per call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc.aio
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.domain.actor import Actor, acting_as
from service.testing import running_service
from tests.authz_helpers import EXAMPLE_POLICY, Pki, make_pki, secure_channel
from tests.ops_helpers import free_port, health_status

IN_FLIGHT = 16


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start(
    directory: Path, pki: object, policy: bool
) -> tuple[asyncio.subprocess.Process, str]:
    address = f"127.0.0.1:{free_port()}"
    args = [
        "--listen", address, "--database-url", f"sqlite://{directory / f'u{policy}.sqlite3'}",
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca_file), "--access-log", "false",
    ]  # fmt: skip
    if policy:
        args += ["--authz-policy", str(EXAMPLE_POLICY)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", *args, stderr=asyncio.subprocess.DEVNULL
    )
    return process, address


async def drive(
    address: str, credentials: grpc.ChannelCredentials, user_id: int, seconds: float
) -> int:
    channel = secure_channel(address, credentials)
    async with channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        request = user_service_pb2.GetUserRequest(id=user_id)
        deadline = time.monotonic() + seconds
        count = 0

        async def worker() -> None:
            nonlocal count
            while time.monotonic() < deadline:
                await stub.GetUser(request)
                count += 1

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return count


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        pki = make_pki(directory / "pki")
        admin = pki.credentials(pki.client("admin"))
        servers = {policy: await start(directory, pki, policy) for policy in (False, True)}
        try:
            ids = {}
            for policy, (_, address) in servers.items():
                for _ in range(150):  # up to 30 s for the server to serve
                    if await health_status(address, credentials=admin, call_timeout=1.0) == 1:
                        break
                    await asyncio.sleep(0.2)
                async with secure_channel(address, admin) as channel:
                    stub = user_service_pb2_grpc.UserServiceStub(channel)
                    user = await stub.CreateUser(user_service_pb2.CreateUserRequest(
                        username="bench", password="correct horse battery",
                        email="bench@example.com"))  # fmt: skip
                    ids[policy] = user.id
                await drive(address, admin, ids[policy], 1.0)  # warm up
            totals = {False: [0, 0.0, 0.0], True: [0, 0.0, 0.0]}
            ratios = []
            for round_ in range(args.rounds):
                # ABBA order: a drift in the machine's load hits both alike.
                order = (False, True) if round_ % 2 == 0 else (True, False)
                per_call = {}
                for policy in order:
                    process, address = servers[policy]
                    before, started = cpu_seconds(process.pid), time.monotonic()
                    calls = await drive(address, admin, ids[policy], args.seconds)
                    cpu = cpu_seconds(process.pid) - before
                    totals[policy][0] += calls
                    totals[policy][1] += cpu
                    totals[policy][2] += time.monotonic() - started
                    per_call[policy] = cpu / calls
                ratios.append(per_call[True] / per_call[False])
            for policy, (calls, cpu, wall) in totals.items():
                label = "on " if policy else "off"
                print(
                    f"authz {label}: {calls} GetUser, {calls / wall:.0f} calls/s, "
                    f"server CPU {cpu / calls * 1e6:.0f} us/call"
                )
            on, off = totals[True], totals[False]
            print(
                f"ratio on/off: server CPU per call {(on[1] / on[0]) / (off[1] / off[0]):.3f} "
                f"(median of {len(ratios)} rounds {statistics.median(ratios):.3f}, "
                f"range {min(ratios):.3f}-{max(ratios):.3f}), "
                f"throughput {(on[0] / on[2]) / (off[0] / off[2]):.3f}"
            )
        finally:
            for process, _ in servers.values():
                process.terminate()
                await process.wait()
        await time_the_check(directory, pki)


async def time_the_check(directory: Path, pki: Pki, calls: int = 3000) -> None:
    """The check's own time per call, measured around it inside a real mTLS server."""
    policy = str(EXAMPLE_POLICY)
    settings = pki.tls_settings(authz_policy=policy, access_log=False)
    async with running_service(f"sqlite://{directory / 'direct.sqlite3'}", **settings) as running:
        authorizer = running.server.authorizer
        assert authorizer is not None
        principal, check = authorizer.principal, authorizer.check
        spent: list[float] = []

        def timed_principal(context: Any) -> str:
            started = time.perf_counter()
            found = principal(context)
            spent.append(time.perf_counter() - started)
            return found

        def timed_check(who: str, method: str) -> None:
            started = time.perf_counter()
            check(who, method)
            with acting_as(Actor(who)):
                pass
            spent[-1] += time.perf_counter() - started

        authorizer.principal = timed_principal  # type: ignore[method-assign]
        authorizer.check = timed_check  # type: ignore[method-assign]
        async with secure_channel(running.address, pki.credentials(pki.client("admin"))) as ch:
            stub = user_service_pb2_grpc.UserServiceStub(ch)
            for _ in range(calls):
                with contextlib.suppress(grpc.aio.AioRpcError):  # NOT_FOUND: allowed through
                    await stub.GetUser(user_service_pb2.GetUserRequest(id=1))
        spent = sorted(spent[calls // 10 :])
        print(
            f"the check itself (identity + policy + actor), {len(spent)} calls: "
            f"median {statistics.median(spent) * 1e6:.1f} us, "
            f"p90 {spent[int(len(spent) * 0.9)] * 1e6:.1f} us"
        )


if __name__ == "__main__":
    asyncio.run(main())
