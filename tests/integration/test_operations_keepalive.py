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


async def test_a_client_that_pings_too_often_is_disconnected(tmp_path):
    async with running_service(f"sqlite://{tmp_path / 'users.sqlite3'}") as running:
        polite, abusive = await asyncio.gather(
            _ready_then_idle(running.address, [], 8),
            _ready_then_idle(running.address, ABUSIVE, 8),
        )
    assert polite, "a client that does not ping must stay connected"
    assert not abusive, "a client pinging every second must be sent a GOAWAY"
