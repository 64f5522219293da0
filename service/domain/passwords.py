"""Password hashing off the event loop.

argon2id with OWASP's minimum parameters (19 MiB, t=2, p=1) is the default
scheme; bcrypt and weaker argon2 hashes still verify and are reported as
needing a re-hash. Hashing runs in a bounded thread pool (argon2-cffi and
bcrypt release the GIL); callers beyond the pool's size wait on a semaphore
instead of piling work (and 19 MiB buffers) into the executor's queue.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from passlib.context import CryptContext
from passlib.exc import UnknownHashError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["PasswordHasher", "Verification", "default_context"]

R = TypeVar("R")


def default_context() -> CryptContext:
    return CryptContext(
        schemes=["argon2", "bcrypt"],
        deprecated="auto",
        argon2__type="ID",
        argon2__memory_cost=19 * 1024,
        argon2__rounds=2,
        argon2__parallelism=1,
    )


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    # A fresh hash when the stored one uses outdated parameters or schemes.
    new_hash: str | None = None


class PasswordHasher:
    """Hashes and verifies passwords in at most ``threads`` threads at once."""

    def __init__(self, threads: int | None = None, context: CryptContext | None = None) -> None:
        self.threads = threads or max((os.cpu_count() or 1) - 1, 1)
        self._context = context or default_context()
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="password-hash")
        self._slots = asyncio.Semaphore(self.threads)
        self._dummy_hash: str | None = None

    async def start(self) -> None:
        """Prepare the dummy hash that unknown users are verified against."""
        self._dummy_hash = await self.hash(secrets.token_urlsafe(24))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def hash(self, password: str) -> str:
        return await self._run(self._context.hash, password)

    async def verify(self, password: str, stored_hash: str | None) -> Verification:
        """Check a password; with no stored hash, spend the same time and fail.

        Verifying against a dummy hash of the default scheme keeps an unknown
        username from answering faster than a wrong password.
        """
        if stored_hash is None:
            assert self._dummy_hash is not None, "PasswordHasher.start() was not awaited"
            await self._run(self._verify, password, self._dummy_hash)
            return Verification(ok=False)
        return await self._run(self._verify, password, stored_hash)

    def _verify(self, password: str, stored_hash: str) -> Verification:
        try:
            ok, new_hash = self._context.verify_and_update(password, stored_hash)
        except (ValueError, UnknownHashError):
            # bcrypt refuses passwords over 72 bytes; a corrupt hash verifies nothing.
            return Verification(ok=False)
        return Verification(ok=bool(ok), new_hash=new_hash if ok else None)

    async def _run(self, fn: Callable[..., R], *args: str) -> R:
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, fn, *args)
