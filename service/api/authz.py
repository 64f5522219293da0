"""The check every call goes through when ``--authz-policy`` is set.

The verified principal (``service.api.identity``) and the called method go
through the policy in force (``service.api.policy``, pure); a call without a
principal is UNAUTHENTICATED ``CALLER_UNAUTHENTICATED``, one the policy does
not allow is PERMISSION_DENIED ``CALLER_NOT_ALLOWED``, both before the
handler runs. ``grpc.health.v1.Health`` is never checked: load balancers and
orchestrators probe it without an identity of their own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from service.api.identity import CallerIdentity
from service.api.jwks import KeySet, KeySetError
from service.api.policy_file import PolicyFile
from service.api.tokens import BearerTokens
from service.background import stop_task
from service.domain.caller_errors import CallerNotAllowed, CallerUnauthenticated

if TYPE_CHECKING:
    from collections.abc import Collection, Coroutine

    from prometheus_client import CollectorRegistry

    from service.config import Settings

__all__ = ["OPEN_SERVICES", "Authorizer", "open_authorizer"]

log = logging.getLogger("service.authz")

OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})


class Authorizer:
    def __init__(self, policies: PolicyFile, identity: CallerIdentity) -> None:
        self.policies = policies
        self.identity = identity
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Watch the policy file, and keep a key URL fresh."""
        self._spawn(self.policies.watch(), "authz-policy-watch")
        keys = self.identity.tokens.keys if self.identity.tokens else None
        if keys is not None and keys.is_url:
            self._spawn(keys.keep_fresh(), "jwks-refresh")

    def reload(self) -> None:
        """SIGHUP: read the policy file again, and a key file."""
        self.policies.reload()
        keys = self.identity.tokens.keys if self.identity.tokens else None
        if keys is not None and not keys.is_url:
            self._spawn(self._reload_keys(keys), "jwks-reload")

    async def close(self) -> None:
        for task in self._tasks:
            await stop_task(task)
        self._tasks.clear()

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks = [*(t for t in self._tasks if not t.done()), task]
        task.add_done_callback(lambda done: None if done.cancelled() else done.exception())

    @staticmethod
    async def _reload_keys(keys: KeySet) -> None:
        try:
            await keys.load()
        except KeySetError as error:
            log.error("%s; keeping the keys already known", error)
        else:
            log.info("JWKS reloaded from %s", keys.source)

    def principal(self, context: Any) -> str:
        """The verified principal of the call, "" if none; raises for a bad bearer token."""
        return self.identity.principal(context)

    def check(self, principal: str, method: str) -> None:
        """Raise unless ``principal`` may call ``method`` under the policy in force."""
        if not principal:
            raise CallerUnauthenticated()
        if not self.policies.current.decide(principal, method).allowed:
            raise CallerNotAllowed(principal, method)


async def open_authorizer(
    settings: Settings, *, methods: Collection[str], registry: CollectorRegistry
) -> Authorizer | None:
    """The authorizer ``settings`` ask for (None without ``--authz-policy``), loaded and running.

    A bad policy raises PolicyError and a bad key file KeySetError: the server
    must not start. A key URL that does not answer yet is only logged: it is
    fetched again in the background, and bearer tokens are refused meanwhile.
    """
    if not settings.authz_policy:
        return None
    policies = PolicyFile(settings.authz_policy, methods=methods, registry=registry)
    tokens = None
    if settings.authz_jwks:
        keys = KeySet(settings.authz_jwks)
        tokens = BearerTokens(
            keys, issuer=settings.authz_jwt_issuer, audience=settings.authz_jwt_audience
        )
        if not keys.is_url:
            await keys.load()
        if not settings.tls:
            log.warning("bearer tokens over plaintext can be read off the wire: use TLS")
    identity = CallerIdentity(certificates=bool(settings.tls_client_ca), tokens=tokens)
    authorizer = Authorizer(policies, identity)
    authorizer.start()
    return authorizer
