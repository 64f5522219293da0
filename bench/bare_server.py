"""The ceiling: a bare grpc.aio server that answers GetUser with a canned User.

Same stack as the service (grpcio, the generated stubs, uvloop when present),
none of its work: no interceptors, no validation, no database. The GetUser
scenario is driven against it with the same h2load command, so the ratio of
the two shows what the service's own code costs.

    python -m bench.bare_server --listen 127.0.0.1:50100
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp
from users.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc


def canned_user() -> resources_pb2.User:
    """A user shaped like a seeded one, so that reply sizes match the service's."""
    stamp = Timestamp(seconds=1_767_225_600, nanos=123_456_000)
    return resources_pb2.User(
        id=42,
        username="user00042",
        email="user00042@example.com",
        display_name="Bench User 42",
        balance=0,
        create_time=stamp,
        update_time=stamp,
    )


class CannedUsers(user_service_pb2_grpc.UserServiceServicer):
    def __init__(self) -> None:
        self._user = canned_user()

    async def GetUser(
        self,
        request: user_service_pb2.GetUserRequest,
        context: grpc.aio.ServicerContext[user_service_pb2.GetUserRequest, resources_pb2.User],
    ) -> resources_pb2.User:
        return self._user


async def serve(listen: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    # Only GetUser is overridden; every other method answers UNIMPLEMENTED.
    servicer = CannedUsers()  # type: ignore[abstract]
    user_service_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
    server.add_insecure_port(listen)
    await server.start()
    print(f"bare server listening on {listen}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:50100")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - same fallback as the service
        asyncio.run(serve(args.listen))
    else:
        uvloop.run(serve(args.listen))


if __name__ == "__main__":
    main()
