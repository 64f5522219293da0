"""Fixtures shared by the unit tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_asyncio

from service.domain.passwords import PasswordHasher

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest_asyncio.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    """A started hasher (its dummy hash made) with two threads."""
    made = PasswordHasher(threads=2)
    await made.start()
    yield made
    made.close()
