"""Where a server process listens: its gRPC port (options, TLS) and its metrics endpoint.

A process serves its port with several grpc.aio servers (``accept_loops``).
grpc.aio asks the core for a method's next call only once the event loop has
handled the last one, so one server accepts the calls of one method one per
loop turn or two, whatever the number of connections: at 32 calls in flight
GetUser on PostgreSQL waited there more than in its query. Each server
accepts on its own; the servers bind the port with SO_REUSEPORT and the
kernel spreads connections over them (by address, so one connection is
always served by one of them, and a client with a single connection gains
nothing). SO_REUSEPORT would also let a second process share the port by
mistake, so the port is first checked to be free (``check_free``; with
``--workers``, by the parent before it forks): a second server still fails
with ``cannot listen on ...``.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import start_http_server

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    import grpc.aio
    from prometheus_client import CollectorRegistry

    from service.config import Settings

__all__ = ["BindError", "bind", "channel_options", "check_free", "serve_metrics"]


class BindError(RuntimeError):
    """The listen address could not be bound (taken, or not an address of this host)."""


def channel_options(settings: Settings, *, reuse_port: bool) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Keepalive: ping idle clients every minute to find dead peers, and
        # refuse clients that ping more often than every 10 s (GOAWAY).
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    if settings.max_connection_age:
        age_ms = int(settings.max_connection_age * 1000)
        options += [
            ("grpc.max_connection_age_ms", age_ms),
            ("grpc.max_connection_age_grace_ms", int(settings.grace_period * 1000)),
        ]
    return options


def check_free(listen: str) -> None:
    """Raise BindError if something already listens on ``listen`` (port 0 is always free).

    The probe binds as grpc does (SO_REUSEADDR: a port left in TIME_WAIT by
    a restart is free) but without SO_REUSEPORT, so any listener, shared or
    not, makes it fail. Two servers started at the same instant can still
    both pass; an address this host does not have is left to ``bind``.
    """
    host, _, port = listen.rpartition(":")  # HOST:PORT, as Settings checked it
    if int(port) == 0:
        return
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return
    for family, kind, proto, _, address in found:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as error:
            # Anything else (no IPv6 here, say) is for grpc's own bind to report.
            if error.errno == errno.EADDRINUSE:
                raise BindError(f"cannot listen on {listen}: address in use") from None


def bind(server: grpc.aio.Server, settings: Settings, port: int | None = None) -> int:
    """Add the listen port (TLS when configured); return the port bound.

    ``port`` replaces the port of the listen address: the one the first of
    the process's servers was given for port 0.
    """
    listen = settings.listen
    if port is not None:
        listen = f"{listen.rpartition(':')[0]}:{port}"
    try:
        if settings.tls:
            bound = server.add_secure_port(listen, _credentials(settings))
        else:
            bound = server.add_insecure_port(listen)
    except RuntimeError as error:
        raise BindError(f"cannot listen on {listen}: {error}") from None
    if bound == 0:
        raise BindError(f"cannot listen on {listen}: address unavailable or in use")
    return bound


def _credentials(settings: Settings) -> grpc.ServerCredentials:
    key = Path(settings.tls_key).read_bytes()
    chain = Path(settings.tls_cert).read_bytes()
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def serve_metrics(
    settings: Settings, registry: CollectorRegistry, *, worker: int
) -> WSGIServer | None:
    """Serve /metrics on ``metrics_listen`` (its port plus ``worker``); None when it is off."""
    if not settings.metrics_listen:
        return None
    host, _, port = settings.metrics_listen.rpartition(":")
    wanted = int(port) + worker if int(port) else 0
    try:
        http, _ = start_http_server(wanted, host, registry=registry)
    except OSError as error:
        raise BindError(f"cannot serve metrics on {host}:{wanted}: {error}") from None
    return http
