"""Helpers for the posts and money tests: calls with defaults, and whole listings."""

from __future__ import annotations

import contextlib
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from users.v1 import resources_pb2, user_service_pb2

from service.db import lanes, sqlite_reader
from service.db import sql as sql_module
from tests.helpers import create_user

Item = TypeVar("Item")

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator

    from users.v1.user_service_pb2_grpc import UserServiceAsyncStub

    from service.testing import RunningService

INT64_MAX = 2**63 - 1

# The methods of a Tortoise client through which every SQL statement passes.
CLIENT_METHODS = ("execute_query", "execute_query_dict", "execute_insert", "execute_many")


def new_request_id() -> str:
    return str(uuid.uuid4())


async def deposit(
    stub: UserServiceAsyncStub, user_id: int, amount: int, request_id: str = ""
) -> resources_pb2.User:
    return await stub.Deposit(
        user_service_pb2.DepositRequest(user_id=user_id, amount=amount, request_id=request_id)
    )


async def transfer(
    stub: UserServiceAsyncStub,
    from_user_id: int,
    to_user_id: int,
    amount: int,
    request_id: str = "",
) -> resources_pb2.Transfer:
    return await stub.TransferFunds(
        user_service_pb2.TransferFundsRequest(
            from_user_id=from_user_id,
            to_user_id=to_user_id,
            amount=amount,
            request_id=request_id,
        )
    )


async def balance_of(stub: UserServiceAsyncStub, user_id: int) -> int:
    user = await stub.GetUser(user_service_pb2.GetUserRequest(id=user_id))
    return int(user.balance)


async def funded_user(stub: UserServiceAsyncStub, amount: int) -> resources_pb2.User:
    """A new user whose balance is ``amount`` (deposited once, when positive)."""
    user = await create_user(stub)
    if amount > 0:
        user = await deposit(stub, user.id, amount, new_request_id())
    assert user.balance == amount
    return user


def ledger_sums(rows: Iterable[tuple[int | None, int, int]]) -> dict[int, int]:
    """Each user's balance as the ledger tells it, from (from_user_id, to_user_id, amount) rows.

    A deposit has no ``from_user_id``. Every balance must equal its sum.
    """
    moved: dict[int, int] = defaultdict(int)
    for from_user_id, to_user_id, amount in rows:
        moved[to_user_id] += amount
        if from_user_id is not None:
            moved[from_user_id] -= amount
    return dict(moved)


async def list_transfers(
    stub: UserServiceAsyncStub, user_id: int, page_size: int = 0, page_token: str = ""
) -> user_service_pb2.ListTransfersResponse:
    return await stub.ListTransfers(
        user_service_pb2.ListTransfersRequest(
            user_id=user_id, page_size=page_size, page_token=page_token
        )
    )


async def all_transfers(
    stub: UserServiceAsyncStub, user_id: int, *, page_size: int, max_pages: int = 100
) -> tuple[list[resources_pb2.Transfer], int]:
    """Every transfer of a user, following next_page_token; and the number of pages."""

    async def page(token: str) -> tuple[list[resources_pb2.Transfer], str]:
        reply = await list_transfers(stub, user_id, page_size, token)
        return list(reply.transfers), reply.next_page_token

    return await _every_page(page, page_size, max_pages, "ListTransfers")


async def _every_page(
    fetch: Callable[[str], Awaitable[tuple[list[Item], str]]],
    page_size: int,
    max_pages: int,
    method: str,
) -> tuple[list[Item], int]:
    """Follow next_page_token to the end; the items and the number of pages."""
    found: list[Item] = []
    token = ""
    for pages in range(1, max_pages + 1):
        items, token = await fetch(token)
        assert len(items) <= page_size
        found.extend(items)
        if not token:
            return found, pages
    raise AssertionError(f"{method} did not end within {max_pages} pages")


async def create_post(
    stub: UserServiceAsyncStub, user_id: int, title: str = "A title", body: str = ""
) -> resources_pb2.Post:
    return await stub.CreatePost(
        user_service_pb2.CreatePostRequest(user_id=user_id, title=title, body=body)
    )


async def list_posts(
    stub: UserServiceAsyncStub, user_id: int, page_size: int = 0, page_token: str = ""
) -> user_service_pb2.ListPostsResponse:
    return await stub.ListPosts(
        user_service_pb2.ListPostsRequest(
            user_id=user_id, page_size=page_size, page_token=page_token
        )
    )


async def all_posts(
    stub: UserServiceAsyncStub, user_id: int, *, page_size: int, max_pages: int = 100
) -> tuple[list[resources_pb2.Post], int]:
    """Every post of a user, following next_page_token; and the number of pages."""

    async def page(token: str) -> tuple[list[resources_pb2.Post], str]:
        reply = await list_posts(stub, user_id, page_size, token)
        return list(reply.posts), reply.next_page_token

    return await _every_page(page, page_size, max_pages, "ListPosts")


@contextlib.contextmanager
def counting_statements(service: RunningService) -> Iterator[list[str]]:
    """Record every SQL statement the service's database client runs inside the block.

    The client is the one object the service's queries go through outside a
    transaction, besides the point-read lanes (``service.db.sqlite_reader``,
    the kept connections of ``service.db.lanes``), which are wrapped too;
    its execute methods are wrapped on that instance and restored when the
    block exits. Statements inside a transaction run on the transaction's own
    client and are not seen.
    """
    database = service.server.database
    with database.activate():
        client = database.context.db(database.dialect)
    statements: list[str] = []

    def counted(name: str, original: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            sql = args[0] if args else kwargs.get("query", "")
            record(name, sql)
            return await original(*args, **kwargs)

        return wrapper

    def record(name: str, sql: str) -> None:
        # The change feed's reader polls in the background, apart from any call
        # (it reads events, or only the feed's end from the current snapshot).
        background = "FROM events" in sql or "pg_current_snapshot()" in sql
        if not background or "INSERT INTO events" in sql:
            statements.append(f"{name}: {sql}")

    original_rows_now = sqlite_reader.rows_now
    original_lane_rows = lanes.lane_rows

    def rows_now(db: Any, sql: str, params: Any) -> Any:
        found = original_rows_now(db, sql, params)
        if found is not None:
            record("sqlite_reader", sql)
        return found

    async def lane_rows(db: Any, sql: str, params: Any) -> Any:
        found = await original_lane_rows(db, sql, params)
        if found is not None:
            record("lanes", sql)
        return found

    with pytest.MonkeyPatch.context() as patch:
        for name in CLIENT_METHODS:
            patch.setattr(client, name, counted(name, getattr(client, name)))
        patch.setattr(sql_module, "rows_now", rows_now)
        patch.setattr(lanes, "lane_rows", lane_rows)
        yield statements
