"""Password hashing off the event loop.

argon2id with OWASP's minimum parameters (19 MiB, t=2, p=1) is the default
scheme. Hashes of the other accepted schemes (imported from other systems by
CreateUser/BatchCreateUsers, see ``IMPORTABLE_SCHEMES``) and argon2 hashes
with other parameters still verify and are reported as needing a re-hash.
Hashing runs in a bounded thread pool (argon2-cffi and bcrypt release the
GIL); callers beyond the pool's size wait on a semaphore instead of piling
work (and 19 MiB buffers) into the executor's queue.
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

from service.domain.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "IMPORTABLE_SCHEMES",
    "IMPORT_COST_LIMITS",
    "PasswordHasher",
    "Verification",
    "check_imported_hash",
    "default_context",
]

R = TypeVar("R")

# Salted, self-describing formats that passlib verifies. Unsalted digests
# (hex MD5, SHA-1) are refused: they cannot be told apart from one another,
# and md5_crypt/des_crypt are too weak to keep even until the next login.
IMPORTABLE_SCHEMES = (
    "argon2",
    "bcrypt",
    "bcrypt_sha256",
    "pbkdf2_sha256",
    "pbkdf2_sha512",
    "sha512_crypt",
    "sha256_crypt",
    "scrypt",
)

# Upper bounds of an imported hash's cost parameters (attributes of passlib's
# parsed hash). Every failed login against a user verifies the stored hash,
# so an import with absurd costs (bcrypt 31, argon2 with 4 GiB) would let
# anyone who knows the username burn CPU and memory at will. Each bound
# admits its scheme's usual defaults and verifies in about a second here.
IMPORT_COST_LIMITS: dict[str, dict[str, int]] = {
    # memory_cost is in KiB: 128 MiB admits argon2-cffi's old default (100 MiB).
    "argon2": {"memory_cost": 128 * 1024, "rounds": 6, "parallelism": 8},
    "bcrypt": {"rounds": 13},
    "bcrypt_sha256": {"rounds": 13},
    "pbkdf2_sha256": {"rounds": 1_000_000},
    "pbkdf2_sha512": {"rounds": 1_000_000},
    "sha256_crypt": {"rounds": 1_000_000},
    "sha512_crypt": {"rounds": 1_000_000},
    # rounds is log2(N); with block_size 8 that is 64 MiB.
    "scrypt": {"rounds": 16, "block_size": 8, "parallelism": 4},
}
# The users table's password_hash column.
HASH_MAX = 255


def default_context() -> CryptContext:
    return CryptContext(
        schemes=list(IMPORTABLE_SCHEMES),
        deprecated="auto",
        argon2__type="ID",
        argon2__memory_cost=19 * 1024,
        argon2__rounds=2,
        argon2__parallelism=1,
    )


def check_imported_hash(
    stored: str, field: str = "password_hash", context: CryptContext | None = None
) -> str:
    """An imported password hash, if it is one we can verify at a bounded cost.

    Parsing costs microseconds (no hashing), so this runs on the event loop.
    """
    context = context or _CONTEXT
    if not stored or len(stored) > HASH_MAX or not stored.isascii():
        raise InvalidArgument.field(field, f"Password hash must be 1-{HASH_MAX} ASCII characters.")
    scheme = context.identify(stored)
    if scheme is None:
        raise InvalidArgument.field(
            field,
            "Password hash is in no accepted format; accepted: " + ", ".join(IMPORTABLE_SCHEMES),
        )
    try:
        parsed = context.handler(scheme).from_string(stored)
    except (ValueError, TypeError):
        raise InvalidArgument.field(field, f"Password hash is not a valid {scheme} hash.") from None
    if getattr(parsed, "checksum", None) is None:
        # A bare salt and settings ("$6$rounds=5000$salt$") matches no password.
        raise InvalidArgument.field(field, f"Password hash is a {scheme} setting without a hash.")
    for name, most in IMPORT_COST_LIMITS.get(scheme, {}).items():
        value = getattr(parsed, name, None)
        if isinstance(value, int) and value > most:
            raise InvalidArgument.field(
                field, f"Password hash is too costly to verify: {scheme} {name} is over {most}."
            )
    return stored


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

    async def hash_many(self, passwords: Sequence[str]) -> list[str]:
        """Hash a batch, in order, using at most half the pool at once.

        A batch of 1,000 must not queue 1,000 waiters ahead of every login:
        with a bounded share of the slots, other callers keep getting turns.
        """
        share = asyncio.Semaphore(max(self.threads // 2, 1))

        async def one(password: str) -> str:
            async with share:
                return await self.hash(password)

        return list(await asyncio.gather(*(one(p) for p in passwords)))

    async def verify(self, password: str, stored_hash: str | None) -> Verification:
        """Check a password; with no stored hash, spend the same time and fail.

        Verifying against a dummy hash of the default scheme keeps an unknown
        username from answering faster than a wrong password; a failure
        against an outdated hash verifies the dummy hash too.
        """
        if stored_hash is None:
            await self._run(self._verify, password, self._dummy())
            return Verification(ok=False)
        result = await self._run(self._verify, password, stored_hash)
        if not result.ok and self._outdated(stored_hash):
            # An imported or older hash may be cheaper than the default (bcrypt
            # cost 4, or a refusal of over 72 bytes): fail no faster than an
            # unknown user does, or the timing would tell that the name exists.
            await self._run(self._verify, password, self._dummy())
        return result

    def _dummy(self) -> str:
        assert self._dummy_hash is not None, "PasswordHasher.start() was not awaited"
        return self._dummy_hash

    def _outdated(self, stored_hash: str) -> bool:
        try:
            return bool(self._context.needs_update(stored_hash))
        except (ValueError, TypeError, UnknownHashError):
            return True

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


_CONTEXT = default_context()
