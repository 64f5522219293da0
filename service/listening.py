"""Where a server process listens: its gRPC port (options, TLS) and its metrics endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import start_http_server

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    import grpc.aio
    from prometheus_client import CollectorRegistry

    from service.config import Settings

__all__ = ["BindError", "bind", "channel_options", "serve_metrics"]


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


def bind(server: grpc.aio.Server, settings: Settings) -> int:
    """Add the listen port (TLS when configured); return the port bound."""
    listen = settings.listen
    try:
        if settings.tls:
            port = server.add_secure_port(listen, _credentials(settings))
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError as error:
        raise BindError(f"cannot listen on {listen}: {error}") from None
    if port == 0:
        raise BindError(f"cannot listen on {listen}: address unavailable or in use")
    return port


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
