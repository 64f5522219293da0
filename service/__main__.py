"""``python -m service``: parse settings, run the server until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from service.config import parse_settings
from service.db.database import DatabaseUnreachable
from service.server import BindError, UsersServer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from service.config import Settings

log = logging.getLogger("service")


async def serve(settings: Settings) -> None:
    server = UsersServer(settings)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("signal received: draining for up to %.1fs", settings.grace_period)
    await server.stop()


def _run(settings: Settings) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        asyncio.run(serve(settings))
    else:
        # uvloop makes the loop itself cheaper; grpc.aio, Tortoise and asyncpg run on it.
        uvloop.run(serve(settings))


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        _run(settings)
    except (BindError, DatabaseUnreachable) as error:
        log.error("cannot start: %s", error)
        sys.exit(1)


if __name__ == "__main__":
    main()
