"""Keepalive enforcement: a client that pings too often is sent away; a polite one stays."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.testing import running_service

# A client pinging every second, with or without calls in flight: far more
# often than the server's 10 s minimum, so it collects strikes and a GOAWAY.
ABUSIVE = [
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


async def _ready_then_idle(address: str, options: list[tuple[str, int]], seconds: float) -> bool:
    """Whether a channel that made one call is still connected after idling."""
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        await stub.ListUsers(user_service_pb2.ListUsersRequest())
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        await asyncio.sleep(seconds)
        return channel.get_state() == grpc.ChannelConnectivity.READY


# A client keeping its idle connection alive at the rate the server allows
# (every 10 s or less often).
POLITE = [
    ("grpc.keepalive_time_ms", 11_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


async def test_a_client_that_pings_too_often_is_disconnected_and_a_polite_one_is_not(tmp_path):
    async with running_service(f"sqlite://{tmp_path / 'users.sqlite3'}") as running:
        polite, abusive = await asyncio.gather(
            # Long enough for the polite client to ping twice (two strikes
            # would be a GOAWAY if the server were as strict with it).
            _ready_then_idle(running.address, POLITE, 24),
            _ready_then_idle(running.address, ABUSIVE, 8),
        )
    assert polite, "a client pinging every 11 s while idle must stay connected"
    assert not abusive, "a client pinging every second must be sent a GOAWAY"
