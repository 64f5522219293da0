"""Use cases of money: deposits and transfers in positive int64 minor units."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.db import ledger as ledger_db
from service.db import money as money_db
from service.domain import rules
from service.domain.errors import InvalidArgument
from service.domain.pagination import newest_first_page

if TYPE_CHECKING:
    from service.domain.entities import Transfer, User
    from service.domain.pagination import PageTokens

__all__ = ["Money", "TransferPage", "check_amount", "check_request_id"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def check_amount(amount: int, field: str = "amount") -> int:
    if amount <= 0:
        raise InvalidArgument.field(field, "Amount must be a positive number of minor units.")
    return amount


def check_request_id(request_id: str, field: str = "request_id") -> str:
    """A caller's idempotency key, or a fresh one when the call is not meant to be retried."""
    if not request_id:
        return str(uuid.uuid4())
    if not _REQUEST_ID.fullmatch(request_id):
        raise InvalidArgument.field(
            field, "Request id must be 1-64 letters, digits, '.', '_', ':' or '-'; use a UUID."
        )
    return request_id


@dataclass(frozen=True, slots=True)
class TransferPage:
    transfers: list[Transfer]
    next_page_token: str


class Money:
    def __init__(self, page_tokens: PageTokens) -> None:
        self._tokens = page_tokens

    async def deposit(self, user_id: int, amount: int, request_id: str) -> User:
        found = rules.Violations()
        found.check(rules.check_id, user_id, "user_id")
        found.check(check_amount, amount)
        key = found.check(check_request_id, request_id)
        found.raise_if_any()
        return await money_db.deposit(user_id, amount, key)

    async def transfer(
        self, from_user_id: int, to_user_id: int, amount: int, request_id: str
    ) -> Transfer:
        found = rules.Violations()
        found.check(rules.check_id, from_user_id, "from_user_id")
        found.check(rules.check_id, to_user_id, "to_user_id")
        found.check(check_amount, amount)
        key = found.check(check_request_id, request_id)
        found.raise_if_any()
        if from_user_id == to_user_id:
            raise InvalidArgument.field("to_user_id", "A transfer needs two different users.")
        return await money_db.transfer(from_user_id, to_user_id, amount, key)

    async def list_transfers(self, user_id: int, page_size: int, page_token: str) -> TransferPage:
        transfers, token = await newest_first_page(
            self._tokens, "transfers_of", user_id, page_size, page_token, ledger_db.list_transfers
        )
        return TransferPage(transfers, token)
