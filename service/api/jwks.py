"""The signing keys of bearer tokens: a JSON Web Key Set read from a file or fetched from a URL.

Only RS256 and ES256 keys are kept (a symmetric ``oct`` key in the set is
dropped, so a token "signed" with HS256 and a public key can never verify).
Reading a URL always runs in a thread: the event loop never waits on the
network. A URL is fetched again every ``refresh_interval`` seconds, and sooner
(at most every ``min_refetch`` seconds) when a token names a key id the set
does not have, which is how a key rotation shows up first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ALGORITHMS", "KeySet", "KeySetError"]

log = logging.getLogger("service.authz")

ALGORITHMS = ("RS256", "ES256")
_MAX_BYTES = 1024 * 1024
_FETCH_TIMEOUT = 5.0


class KeySetError(ValueError):
    """A key set that cannot be read or holds no usable key; one line."""


class KeySet:
    def __init__(
        self, source: str, *, refresh_interval: float = 300.0, min_refetch: float = 30.0
    ) -> None:
        self.source = source
        self.is_url = source.startswith(("http://", "https://"))
        self._refresh_interval = refresh_interval
        self._min_refetch = min_refetch
        self._keys: Mapping[str, jwt.PyJWK] = {}
        self._fetched_at = -float("inf")
        self._refetch: asyncio.Task[bool] | None = None

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid)

    @property
    def loaded(self) -> bool:
        return bool(self._keys)

    async def load(self) -> None:
        """Read the set now (off the event loop); KeySetError if it is unusable."""
        self._fetched_at = time.monotonic()
        raw = await asyncio.to_thread(self._read)
        self._keys = parse_key_set(raw, self.source)

    def missing(self, kid: str) -> None:
        """A token named a key the set lacks: fetch a URL again soon, in the background."""
        if not self.is_url or (self._refetch is not None and not self._refetch.done()):
            return
        if time.monotonic() - self._fetched_at < self._min_refetch:
            return
        log.info("bearer token signed with unknown key id %r: fetching %s", kid, self.source)
        self._refetch = asyncio.create_task(self._load_logged(), name="jwks-refetch")

    async def keep_fresh(self) -> None:
        """Fetch a URL set every refresh interval (retrying sooner while it fails); forever."""
        while True:
            ok = await self._load_logged()
            await asyncio.sleep(self._refresh_interval if ok else self._min_refetch)

    async def _load_logged(self) -> bool:
        try:
            await self.load()
        except KeySetError as error:
            log.error("%s; keeping the %d keys already known", error, len(self._keys))
            return False
        return True

    def _read(self) -> bytes:
        try:
            if not self.is_url:
                return Path(self.source).read_bytes()[: _MAX_BYTES + 1]
            request = urllib.request.Request(self.source, headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=_FETCH_TIMEOUT) as response:
                body: bytes = response.read(_MAX_BYTES + 1)
                return body
        except (OSError, ValueError) as error:
            raise KeySetError(f"JWKS {self.source}: cannot read it ({error})") from None


def parse_key_set(raw: bytes, source: str) -> dict[str, jwt.PyJWK]:
    """The RS256/ES256 keys of a JWKS document, by key id."""
    if len(raw) > _MAX_BYTES:
        raise KeySetError(f"JWKS {source}: larger than {_MAX_BYTES} bytes")
    try:
        document: Any = json.loads(raw)
        keys = document["keys"]
    except (ValueError, TypeError, KeyError):
        raise KeySetError(f'JWKS {source}: not a JSON object with "keys"') from None
    if not isinstance(keys, list):
        raise KeySetError(f'JWKS {source}: "keys" must be a list')
    usable: dict[str, jwt.PyJWK] = {}
    for entry in keys:
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWTError, TypeError, AttributeError):
            continue
        if key.algorithm_name in ALGORITHMS and key.key_id and key.public_key_use in (None, "sig"):
            usable[key.key_id] = key
    if not usable:
        raise KeySetError(f"JWKS {source}: no RS256 or ES256 signing key with a key id (kid)")
    return usable
