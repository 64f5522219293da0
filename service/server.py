"""Builds, starts and stops the grpc.aio server with everything it serves.

``UsersServer`` owns the database, the password hasher and the gRPC server;
``start()`` brings them up in order and ``stop()`` drains and closes them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.api.interceptors import ErrorInterceptor
from service.api.servicer import UserServicer
from service.db.database import Database
from service.db.errors import as_unavailable
from service.domain.money import Money
from service.domain.pagination import PageTokens
from service.domain.passwords import PasswordHasher
from service.domain.posts import Posts
from service.domain.users import Accounts

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["SERVICE_NAME", "UsersServer"]

log = logging.getLogger("service.server")

SERVICE_NAME: str = user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class BindError(RuntimeError):
    """The listen address could not be bound (taken, or not an address of this host)."""


class UsersServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = Database(settings.database_url, pool_size=settings.db_pool_size)
        self.hasher = PasswordHasher(settings.hash_threads)
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.port: int = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop(0)
            raise

    async def _start(self) -> None:
        await self.database.connect()
        await self.hasher.start()
        tokens = PageTokens(await self.database.secret("page_token_key"))

        server = grpc.aio.server(
            interceptors=[ErrorInterceptor(as_unavailable)],
            options=[
                # Off: a second server on a taken port must fail, not share it.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        user_service_pb2_grpc.add_UserServiceServicer_to_server(
            UserServicer(Accounts(self.hasher, tokens), Posts(tokens), Money(tokens)), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        try:
            self.port = server.add_insecure_port(self.settings.listen)
        except RuntimeError as error:
            raise BindError(f"cannot listen on {self.settings.listen}: {error}") from None
        self._server = server
        # Handler tasks inherit the context of the task that starts the server,
        # and with it the active Tortoise context.
        with self.database.activate():
            await server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving %s on port %d (%s database)", SERVICE_NAME, self.port, self.database.dialect
        )

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace``, then close."""
        grace = self.settings.grace_period if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
            log.info("stopped serving")
        self.hasher.close()
        await self.database.close()

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
