"""The change feed's moving parts in one server process, started and stopped by the server.

One feed hub (the process's only reader of the feed), its wake-up sources
(this process's own appends; on PostgreSQL also LISTEN on a dedicated
connection for the other processes' commits, and a NOTIFY to them for ours;
that connection goes to ``--events-direct-url`` when set, past any pooler),
and the NATS relay when ``--events-nats-url`` is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.db.events import on_local_append
from service.db.feed_listener import CommitListener, session_dsn
from service.domain.feed import Feed
from service.domain.feed_hub import FeedHub

if TYPE_CHECKING:
    from collections.abc import Callable

    from service.config import Settings
    from service.db.database import Database
    from service.relay import Relay

__all__ = ["FeedRuntime"]


class FeedRuntime:
    def __init__(self, settings: Settings, database: Database) -> None:
        self._settings = settings
        self._database = database
        self.hub: FeedHub | None = None
        self.relay: Relay | None = None
        self._listener: CommitListener | None = None
        self._unhook: Callable[[], None] | None = None

    def feed(self) -> Feed:
        """The use cases of the feed, over this process's hub (made here, in the loop)."""
        self.hub = FeedHub(poll_interval=self._settings.events_poll_interval)
        return Feed(self.hub, bookmark_interval=self._settings.events_bookmark_interval)

    def start(self) -> None:
        """Start reading; call in the database's context, once it answers."""
        hub = self.hub
        if hub is None:
            raise RuntimeError("feed() comes first")
        hub.start()
        self._unhook = on_local_append(hub.wake)
        if self._database.dialect == "postgres":
            dsn = session_dsn(self._settings.database_url, self._settings.events_direct_url)
            self._listener = CommitListener(dsn, hub.wake)
            hub.on_local_commit = self._listener.notify
            self._listener.start()
        if self._settings.events_nats_url:
            # Imported only when used: the relay brings in the NATS client.
            from service.relay import Relay

            self.relay = Relay(self._settings, self._database, hub)
            self.relay.start()

    async def stop(self) -> None:
        """End every watch stream (UNAVAILABLE: resume later) and stop reading and relaying."""
        if self.relay is not None:
            await self.relay.close()
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        if self.hub is not None:
            await self.hub.close()
