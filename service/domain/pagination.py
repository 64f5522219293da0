"""Keyset pagination: page sizes and opaque, tamper-checked page tokens (aip.dev/158).

A token carries the sort key of the last row served and a digest of the
query it belongs to, signed with HMAC-SHA256. A forged, truncated or edited
token, or one replayed with different filters, is INVALID_ARGUMENT; a token
never reveals more than the position it encodes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Protocol, TypeVar

from service.domain import rules
from service.domain.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "PageTokens",
    "Position",
    "check_page_size",
    "newest_first_page",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_MAC_BYTES = 16

# The sort-key values of the last row served, for example [create_time, id].
Position = list[str | int]


def check_page_size(value: int, field: str = "page_size") -> int:
    """Apply aip.dev/158: 0 means the default, larger than the maximum is lowered."""
    if value < 0:
        raise InvalidArgument.field(field, "Page size must not be negative.")
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


class PageTokens:
    """Encodes and checks page tokens with one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("page token key must be at least 16 bytes")
        self._key = key

    def encode(self, query: Mapping[str, object], position: Sequence[str | int]) -> str:
        payload = json.dumps(
            {"q": _query_digest(query), "p": list(position)}, separators=(",", ":")
        ).encode()
        mac = hmac.digest(self._key, payload, "sha256")[:_MAC_BYTES]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()

    def decode(
        self, token: str, query: Mapping[str, object], field: str = "page_token"
    ) -> Position | None:
        """The position a token resumes from, or None for the first page."""
        if not token:
            return None
        invalid = InvalidArgument.field(
            field, "Page token is invalid; pass the next_page_token of the previous page."
        )
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise invalid from None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        expected = hmac.digest(self._key, payload, "sha256")[:_MAC_BYTES]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, expected):
            raise invalid
        data = json.loads(payload)
        if data["q"] != _query_digest(query):
            raise InvalidArgument.field(
                field, "Page token belongs to a query with other filters or order."
            )
        position: Position = data["p"]
        return position


def _query_digest(query: Mapping[str, object]) -> str:
    canonical = json.dumps(query, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _Identified(Protocol):
    @property
    def id(self) -> int: ...


Row = TypeVar("Row", bound=_Identified)


async def newest_first_page(
    tokens: PageTokens,
    scope: str,
    user_id: int,
    page_size: int,
    page_token: str,
    fetch: Callable[[int, int | None, int], Awaitable[tuple[list[Row], bool]]],
) -> tuple[list[Row], str]:
    """One page of a user's rows (posts, transfers), newest first, keyed by id.

    ``fetch(user_id, before_id, limit)`` returns the rows and whether more follow.
    """
    found = rules.Violations()
    found.check(rules.check_id, user_id, "user_id")
    size = found.check(check_page_size, page_size)
    found.raise_if_any()
    query = {scope: user_id}
    position = tokens.decode(page_token, query)
    before = None if position is None else int(position[0])
    rows, more = await fetch(user_id, before, size)
    return rows, tokens.encode(query, [rows[-1].id]) if more else ""
