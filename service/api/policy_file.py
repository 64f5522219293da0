"""The authorization policy in force, read from its file and read again when it changes.

``reload()`` runs on SIGHUP and when the watcher sees the file's size, mtime
or inode change (editors and config managers replace files by rename, so the
inode counts). A new policy that does not parse is logged and counted, and
the last good one stays in force: a typo must not open the service, nor lock
every caller out.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from service.api.policy import Policy, PolicyError, load_policy

if TYPE_CHECKING:
    from collections.abc import Collection

    from prometheus_client import CollectorRegistry

__all__ = ["PolicyFile"]

log = logging.getLogger("service.authz")

_Stamp = tuple[int, int, int, int]


class PolicyFile:
    def __init__(
        self,
        path: str,
        *,
        methods: Collection[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Load ``path`` now: PolicyError if it is bad, so that start-up refuses it."""
        self.path = path
        # Every method the server serves, to warn about exact paths naming none.
        self._methods = frozenset(methods)
        self._reloads = Counter(
            "users_authz_policy_reloads_total",
            "Reloads of the authorization policy file, by result (ok, error).",
            ("result",),
            registry=registry,
        )
        self._last_ok = Gauge(
            "users_authz_policy_last_reload_ok",
            "1 if the last reload of the authorization policy worked, 0 if the old one is kept.",
            registry=registry,
        )
        self._stamp = self._stat()
        self.current: Policy = load_policy(path)
        self._last_ok.set(1)
        self._warn_unknown_paths(self.current)
        log.info("authorization policy %r from %s", self.current.name, path)

    def reload(self, why: str = "SIGHUP") -> bool:
        """Read the file again; keep the policy in force if the new one is bad."""
        self._stamp = self._stat()
        try:
            policy = load_policy(self.path)
        except PolicyError as error:
            self._reloads.labels("error").inc()
            self._last_ok.set(0)
            log.error("%s (after %s); keeping policy %r", error, why, self.current.name)
            return False
        self.current = policy
        self._reloads.labels("ok").inc()
        self._last_ok.set(1)
        self._warn_unknown_paths(policy)
        log.info("authorization policy %r reloaded from %s (%s)", policy.name, self.path, why)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Reload whenever the file changes; forever."""
        while True:
            await asyncio.sleep(interval)
            if self._stat() != self._stamp:
                self.reload("file changed")

    def _stat(self) -> _Stamp:
        try:
            info = os.stat(self.path)
        except OSError:
            return (0, 0, 0, 0)
        return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def _warn_unknown_paths(self, policy: Policy) -> None:
        if not self._methods:
            return
        for path in sorted(policy.exact_paths() - self._methods):
            log.warning(
                "authorization policy %r names %s, which this server does not serve",
                policy.name,
                path,
            )
