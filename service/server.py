"""Builds, starts and stops the grpc.aio server with everything it serves.

``UsersServer`` owns the database, the password hasher, the metrics endpoint
and the gRPC server; ``start()`` brings them up in order and ``stop()``
drains and closes them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from service.api.assembly import (
    SERVICE_NAME,
    USER_SERVICE,
    open_user_service_authorizer,
    register_services,
)
from service.api.calls import Admission
from service.api.deferred import DeferredServicer
from service.api.health import NOT_SERVING, SERVING, HealthServicer
from service.api.observability import Metrics, silence_query_logs
from service.api.servicer import UserServicer
from service.api.tracing import Tracing
from service.background import stop_task
from service.db.database import Database, DatabaseUnreachable
from service.db.errors import as_unavailable
from service.db.migrate import require_migrated
from service.domain.money import Money
from service.domain.pagination import PageTokens
from service.domain.passwords import PasswordHasher
from service.domain.posts import Posts
from service.domain.signups import Signups
from service.domain.throttle import LoginThrottle, ThrottlePolicy
from service.domain.users import Accounts
from service.feed_runtime import FeedRuntime
from service.health_probe import watch_database
from service.listening import BindError, bind, channel_options, check_free, serve_metrics

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from service.api.authz import Authorizer
    from service.config import Settings

# BindError, USER_SERVICE and SERVICE_NAME stay importable from here.
__all__ = ["SERVICE_NAME", "USER_SERVICE", "BindError", "UsersServer"]

log = logging.getLogger("service.server")


class UsersServer:
    def __init__(
        self,
        settings: Settings,
        *,
        worker: int = 0,
        reuse_port: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        silence_query_logs()
        self.settings = settings
        self.worker = worker
        # Only deliberate workers share a port; otherwise a second server on a
        # taken port must fail instead of silently taking half the traffic.
        self.reuse_port = reuse_port
        self.database = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            command_timeout=settings.db_command_timeout,
        )
        self.hasher = PasswordHasher(settings.hash_threads)
        self.health = HealthServicer()
        self.metrics = Metrics(self.database.pool_stats)
        self.port: int = 0
        self.metrics_port: int | None = None
        # The servers sharing the port (service.listening), the first bound first.
        self._servers: list[grpc.aio.Server] = []
        limit = settings.max_concurrent_rpcs
        self._admission = Admission(limit) if limit else None
        self._metrics_http: WSGIServer | None = None
        self._probe: asyncio.Task[None] | None = None
        self._ready: asyncio.Task[None] | None = None
        self.feed = FeedRuntime(settings, self.database)
        # Registered before the database answers; the real servicer is attached once it does.
        self._servicer = DeferredServicer(USER_SERVICE)
        self.authorizer: Authorizer | None = None
        # -- traces: off unless OTEL_TRACES_EXPORTER is set (or ``tracing`` is given).
        self.tracing = tracing if tracing is not None else Tracing.from_environment()

    async def start(self, *, migrate: bool | None = None) -> None:
        """Connect, prepare and serve. ``migrate`` overrides settings.migrate_on_start.

        A database that answers is prepared before anything is served: a
        schema that is behind raises MigrationsPending here. One that cannot be
        reached raises DatabaseUnreachable when ``database_wait`` is 0;
        otherwise the server starts anyway, NOT_SERVING, answers UserService
        calls with UNAVAILABLE, and a background task retries the database;
        ``ready()`` tells when that is over.
        """
        try:
            await self._start(self.settings.migrate_on_start if migrate is None else migrate)
        except BaseException:
            await self.stop(0)
            raise

    async def _start(self, migrate: bool) -> None:
        await self.hasher.start()
        # One attempt first: a database that answers is prepared (or its schema
        # refused) before anything is served, as with no wait at all.
        try:
            await self._prepare(migrate, wait=0)
            waiting = False
        except DatabaseUnreachable as error:
            if not (self.settings.database_wait > 0 and error.retryable):
                raise
            waiting = True

        loops = self.settings.accept_loops
        if loops > 1 and not self.reuse_port:
            # Workers were checked by their parent; a lone process checks here.
            check_free(self.settings.listen)
        shared = loops > 1 or self.reuse_port
        authorizer = await self._open_authorizer()
        # The call limit is the process's (Admission), not each server's.
        self._servers = [
            grpc.aio.server(options=channel_options(self.settings, reuse_port=shared))
            for _ in range(loops)
        ]
        for server in self._servers:
            self._register(server, authorizer)
        self.port = bind(self._servers[0], self.settings)
        for server in self._servers[1:]:
            bind(server, self.settings, port=self.port)
        self._start_metrics()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, NOT_SERVING)
        # Handler tasks inherit the context of the task that starts the server,
        # and with it the active Tortoise context; so do the probe task and
        # the task that waits for the database.
        with self.database.activate():
            for server in self._servers:
                await server.start()
            if waiting:
                self._ready = asyncio.create_task(self._become_ready(migrate), name="database-wait")
                # Its failure is ready()'s to report; never "exception was never retrieved".
                self._ready.add_done_callback(
                    lambda task: None if task.cancelled() else task.exception()
                )
            else:
                await self._serve()
        if waiting:
            log.info(
                "listening on port %d, NOT_SERVING until the %s database answers (worker %d)",
                self.port,
                self.database.dialect,
                self.worker,
            )

    async def _open_authorizer(self) -> Authorizer | None:
        self.authorizer = await open_user_service_authorizer(self.settings, self.metrics)
        return self.authorizer

    def _register(self, server: grpc.aio.Server, authorizer: Authorizer | None) -> None:
        register_services(
            server,
            servicer=self._servicer,
            health_servicer=self.health,
            classify=as_unavailable,
            metrics=self.metrics,
            log_calls=self.settings.access_log,
            authorizer=authorizer,
            tracing=self.tracing,
            admission=self._admission,
        )

    def reload_authorization(self) -> None:
        """SIGHUP: read the authorization policy (and a JWKS file) again; a bad one is kept out."""
        if self.authorizer is not None:
            self.authorizer.reload()

    async def _prepare(self, migrate: bool, *, wait: float) -> None:
        """Reach the database (for up to ``wait`` s), check its schema, build the servicer."""
        key = b""

        async def check_schema_and_read_key() -> None:
            nonlocal key
            if not migrate:
                # Refuse to serve a schema this code does not expect.
                await require_migrated(self.database)
            key = await self.database.secret("page_token_key")

        # Inside connect's retries: the database may go away between its probe and these.
        await self.database.connect(
            create_schema=migrate, wait=wait, then=check_schema_and_read_key
        )
        tokens = PageTokens(key)
        retention = timedelta(days=self.settings.deleted_retention_days)
        throttle = LoginThrottle(self._throttle_policy())
        accounts = Accounts(self.hasher, tokens, throttle, retention=retention)
        signups = Signups(self.hasher)
        feed = self.feed.feed()
        servicer = UserServicer(
            accounts, Posts(tokens), Money(tokens), signups, feed, as_unavailable
        )
        self._servicer.attach(servicer)
        self.metrics.database_up.set(1)
        self.metrics.sample_pool()

    async def _become_ready(self, migrate: bool) -> None:
        await self._prepare(migrate, wait=self.settings.database_wait)
        await self._serve()

    async def _serve(self) -> None:
        """The database is there: probe it from now on and report SERVING."""
        probe = watch_database(
            self.database, self.health, self.metrics, interval=self.settings.health_probe_interval
        )
        self._probe = asyncio.create_task(probe, name="database-probe")
        self.feed.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, SERVING)
        log.info(
            "serving %s on port %d (%s, %s database, worker %d)",
            SERVICE_NAME,
            self.port,
            "TLS" if self.settings.tls else "plaintext",
            self.database.dialect,
            self.worker,
        )

    async def ready(self) -> None:
        """Return once calls are served; raise what stopped the wait for the database.

        DatabaseUnreachable when ``database_wait`` ran out, MigrationsPending
        when the schema is behind and migrate-on-start is off.
        """
        if self._ready is not None:
            await asyncio.shield(self._ready)

    def _throttle_policy(self) -> ThrottlePolicy:
        settings = self.settings
        return ThrottlePolicy(
            max_failures=settings.auth_max_failures,
            window=settings.auth_failure_window,
            base_delay=settings.auth_lockout_base,
            max_delay=settings.auth_lockout_max,
        )

    def _start_metrics(self) -> None:
        self._metrics_http = serve_metrics(self.settings, self.metrics.registry, worker=self.worker)
        if self._metrics_http is None:
            return
        self.metrics_port = self._metrics_http.server_port
        host = self.settings.metrics_listen.rpartition(":")[0]
        log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace``, then close."""
        grace = self.settings.grace_period if grace is None else grace
        if self._ready is not None and not self._ready.done():
            # Still waiting for the database: give up, there is nothing to serve.
            await stop_task(self._ready)
        if self._probe is not None:
            # Stop probing first, or a probe could flip health back to SERVING.
            await stop_task(self._probe)
            self._probe = None
        if self._servers:
            # Refuse new calls at once, before health says NOT_SERVING: a
            # caller that reacts to it by connecting anew finds the port
            # closed (UNAVAILABLE), where a call that reached grpc.aio as it
            # began to shut down could be cancelled before its handler ran.
            draining = asyncio.gather(
                *(asyncio.create_task(s.stop(grace), name="drain") for s in self._servers)
            )
            await asyncio.sleep(0)  # one turn: the tasks close the port before their first await
            await self.health.enter_graceful_shutdown()
            # While in-flight calls finish, end the watch streams, which never
            # end on their own (the grace period would be spent waiting for them).
            await self.feed.stop()
            await draining
            self._servers = []
            if self.port:
                log.info("stopped serving")
        else:
            await self.health.enter_graceful_shutdown()
            await self.feed.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
        if self.authorizer is not None:
            await self.authorizer.close()
        self.hasher.close()
        await self.database.close()
        if self.tracing is not None:
            self.tracing.close()
