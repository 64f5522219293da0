"""With --workers, one metrics endpoint whose counters add up the calls of every worker."""

from __future__ import annotations

import signal

import grpc
import grpc.aio
import pytest
from users.v1 import user_service_pb2, user_service_pb2_grpc

from tests.integration.test_operations_observability import scrape, value
from tests.ops_helpers import eventually, free_port, service_process


async def test_calls_spread_over_two_workers_are_all_counted_at_one_endpoint(
    database_url, tmp_path
):
    address, metrics_port = f"127.0.0.1:{free_port()}", free_port()
    async with service_process(
        "--workers", "2", "--database-url", database_url, "--hash-threads", "1",
        "--metrics-listen", f"127.0.0.1:{metrics_port}",
        listen=address, cwd=tmp_path,
    ) as running:  # fmt: skip
        await running.wait_serving()
        calls = 0
        pids: set[int] = set()
        # A fresh channel is a fresh connection, which the kernel may hand to
        # either worker; go on until both have answered, and at least 20 calls.
        while calls < 20 or len(pids) < 2:
            assert calls < 300, f"only {pids} answered:\n{running.stderr}"
            async with grpc.aio.insecure_channel(address) as channel:
                stub = user_service_pb2_grpc.UserServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await stub.GetUser(user_service_pb2.GetUserRequest(id=999), timeout=10)
                assert error.value.code() == grpc.StatusCode.NOT_FOUND
            calls += 1
            pids = {e["pid"] for e in running.access_log() if e["method"].endswith("/GetUser")}

        labels = {"grpc_method": "GetUser"}

        def logged() -> list[int]:
            entries = [e["pid"] for e in running.access_log() if e["method"].endswith("/GetUser")]
            return [entries.count(pid) for pid in pids]

        async def all_counted() -> bool:
            # The access log is written in batches: wait for it too.
            samples = await scrape(metrics_port)
            counted = value(samples, "grpc_server_handled_total", **labels)
            return counted == calls and sum(logged()) == calls

        await eventually(all_counted, within=10, what=f"{calls} GetUser calls counted and logged")
        samples = await scrape(metrics_port)
        assert value(samples, "grpc_server_handled_total", **labels, grpc_code="NOT_FOUND") == calls
        assert value(samples, "grpc_server_started_total", **labels) == calls
        assert value(samples, "grpc_server_handling_seconds_count", **labels) == calls
        assert value(samples, "grpc_server_in_flight_calls") == 0
        assert value(samples, "users_database_up") == 1
        per_worker = logged()
        assert len(per_worker) == 2
        assert all(per_worker), f"both workers served calls: {per_worker}"
        if database_url.startswith("postgres"):
            # Two pools of at most 10 connections each.
            assert value(samples, "users_db_pool_connections", state="max") == 20

        running.signal(signal.SIGTERM)
        assert await running.wait_exit() == 0, running.stderr
