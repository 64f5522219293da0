"""ListUsers: keyset pages in every order, filters, totals and tamper-checked tokens."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp
from users.v1 import resources_pb2, user_service_pb2

from tests.helpers import (
    assert_invalid,
    create_user,
    failure,
    fullwidth,
    insert_rows,
    list_all,
)

User = resources_pb2.User

# Mixed case, so that an order by the display form instead of the
# case-insensitive key shows up; created in shuffled order, so that id,
# create_time and username orders all differ from each other.
NAMES = [
    "alpha", "Bravo", "CHARLIE", "delta", "Echo", "foxtrot", "Golf", "hotel", "India", "juliet",
    "Kilo", "lima", "Mike", "november", "Oscar", "papa", "Quebec", "romeo", "Sierra", "tango",
    "Uniform", "victor", "Whiskey", "xray", "Yankee", "zulu", "Alpha1", "alpha2", "ALPHA10",
    "alpha9",
]  # fmt: skip
BASE = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
ORDERS = ["id", "id desc", "create_time", "create_time desc", "username", "username desc"]


def list_request(**fields: object) -> user_service_pb2.ListUsersRequest:
    return user_service_pb2.ListUsersRequest(**fields)  # type: ignore[arg-type]


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def sort_key(order_by: str):
    field = order_by.split()[0]
    if field == "id":
        return lambda u: (u.id,)
    if field == "create_time":
        return lambda u: (u.create_time.ToDatetime(), u.id)
    return lambda u: (u.username.lower(), u.id)


def expected(users: list[User], order_by: str) -> list[int]:
    ordered = sorted(users, key=sort_key(order_by), reverse=order_by.endswith("desc"))
    return [u.id for u in ordered]


@pytest_asyncio.fixture
async def users(service, stub) -> list[User]:
    """Thirty users whose id, creation-time and username orders all differ.

    Inserted directly with chosen creation times (some on whole seconds, as a
    real clock sometimes gives) at even seconds, leaving odd seconds free for
    rows inserted later; listing them needs no password hashing.
    """
    rng = random.Random(20240611)
    names = NAMES[:]
    rng.shuffle(names)
    offsets = list(range(len(names)))
    rng.shuffle(offsets)
    times = [BASE + timedelta(seconds=2 * o, microseconds=(o % 3) * 250_001) for o in offsets]
    await insert_rows(service, names, create_times=times)
    listed = list((await stub.ListUsers(list_request(page_size=100))).users)
    assert {u.username: u.create_time.ToDatetime(tzinfo=UTC) for u in listed} == dict(
        zip(names, times, strict=True)
    )
    return listed


# --- walking every page ------------------------------------------------------------


@pytest.mark.parametrize("order_by", ORDERS)
async def test_walking_all_pages_yields_every_user_once_in_order(stub, users, order_by, subtests):
    for page_size in (1, 4, 7, 30):
        with subtests.test(page_size=page_size):
            walked = await list_all(stub, page_size=page_size, order_by=order_by)
            assert [u.id for u in walked] == expected(users, order_by)
            assert len({u.id for u in walked}) == len(users)


async def test_users_created_through_the_api_are_listed_as_created(stub):
    created = [await create_user(stub, name) for name in ("Yara", "xavier", "Wanda")]
    walked = await list_all(stub, page_size=2, order_by="username")
    assert walked == created[::-1]


async def test_listed_users_equal_what_batch_get_returns(stub, users):
    walked = await list_all(stub, page_size=7, order_by="create_time")
    fetched = await stub.BatchGetUsers(
        user_service_pb2.BatchGetUsersRequest(ids=[u.id for u in walked])
    )
    assert walked == list(fetched.users)


async def test_username_order_ignores_case(stub, users):
    walked = await list_all(stub, page_size=10, order_by="username")
    names = [u.username for u in walked]
    assert names[:6] == ["alpha", "Alpha1", "ALPHA10", "alpha2", "alpha9", "Bravo"]
    assert names[-1] == "zulu"


async def test_default_order_is_by_id_and_asc_may_be_spelled_out(stub, users):
    default = await list_all(stub, page_size=6)
    spelled = await list_all(stub, page_size=6, order_by="id asc")
    assert [u.id for u in default] == sorted(u.id for u in users)
    assert spelled == default


async def test_create_time_ties_are_broken_by_id_across_pages(service, stub, subtests):
    # Rows sharing one timestamp (whole seconds, too) straddle page boundaries.
    instants = [BASE, BASE + timedelta(microseconds=1), BASE]
    names = [f"tie{i:02d}" for i in range(15)]
    await insert_rows(service, names, create_times=[instants[i % 3] for i in range(15)])
    everyone = (await stub.ListUsers(list_request(page_size=100))).users
    assert len(everyone) == 15

    for order_by in ("create_time", "create_time desc"):
        with subtests.test(order_by=order_by):
            walked = await list_all(stub, page_size=2, order_by=order_by)
            assert [u.id for u in walked] == expected(list(everyone), order_by)


# --- page sizes and totals ---------------------------------------------------------


async def test_default_page_size_is_50(service, stub):
    await insert_rows(service, [f"bulk{i:03d}" for i in range(51)])
    page = await stub.ListUsers(list_request())
    assert len(page.users) == 50
    assert page.next_page_token
    rest = await stub.ListUsers(list_request(page_token=page.next_page_token))
    assert len(rest.users) == 1
    assert rest.next_page_token == ""


async def test_page_size_above_1000_is_lowered_to_1000(service, stub):
    await insert_rows(service, [f"bulk{i:04d}" for i in range(1001)])
    page = await stub.ListUsers(list_request(page_size=5000))
    assert len(page.users) == 1000
    assert page.total_size == 1001
    rest = await stub.ListUsers(list_request(page_size=5000, page_token=page.next_page_token))
    assert [u.username for u in rest.users] == ["bulk1000"]
    assert rest.next_page_token == ""


async def test_last_page_has_no_next_page_token(stub, users):
    page = await stub.ListUsers(list_request(page_size=30))
    assert len(page.users) == 30
    assert page.next_page_token == ""


async def test_empty_table_lists_nothing(stub):
    page = await stub.ListUsers(list_request())
    assert list(page.users) == []
    assert page.next_page_token == ""
    assert page.total_size == 0


async def test_total_size_counts_all_matches_on_every_page(stub, users):
    token = ""
    totals = []
    while True:
        page = await stub.ListUsers(list_request(page_size=8, page_token=token))
        totals.append(page.total_size)
        token = page.next_page_token
        if not token:
            break
    assert totals == [30, 30, 30, 30]


async def test_page_size_may_change_between_pages(stub, users):
    first = await stub.ListUsers(list_request(page_size=5, order_by="username"))
    second = await stub.ListUsers(
        list_request(page_size=11, order_by="username", page_token=first.next_page_token)
    )
    assert [u.id for u in [*first.users, *second.users]] == expected(users, "username")[:16]


# --- filters -----------------------------------------------------------------------


async def test_username_prefix_ignores_case(stub, users, subtests):
    for prefix in ["alpha", "ALPHA", "Alpha", fullwidth("alPHA")]:
        with subtests.test(prefix=prefix):
            walked = await list_all(stub, page_size=2, username_prefix=prefix, order_by="username")
            names = [u.username for u in walked]
            assert names == ["alpha", "Alpha1", "ALPHA10", "alpha2", "alpha9"]
            page = await stub.ListUsers(list_request(username_prefix=prefix))
            assert page.total_size == 5


async def test_username_prefix_matching_nobody_lists_nothing(stub, users):
    page = await stub.ListUsers(list_request(username_prefix="nobody"))
    assert list(page.users) == []
    assert page.total_size == 0


async def test_username_prefix_is_literal_not_a_pattern(service, stub, subtests):
    await insert_rows(service, ["a_b", "axb", "a.b", "abb"])
    cases = [("a_", ["a_b"]), ("a.", ["a.b"]), ("%", []), ("a%", []), ("\\", [])]
    for prefix, matches in cases:
        with subtests.test(prefix=prefix):
            page = await stub.ListUsers(list_request(username_prefix=prefix, order_by="username"))
            assert [u.username for u in page.users] == matches
            assert page.total_size == len(matches)


async def test_created_after_includes_that_instant_and_later(stub, users):
    pivot = sorted(users, key=sort_key("create_time"))[10]
    walked = await list_all(stub, page_size=4, created_after=pivot.create_time)
    want = [u for u in users if u.create_time.ToDatetime() >= pivot.create_time.ToDatetime()]
    assert [u.id for u in walked] == sorted(u.id for u in want)
    assert pivot.id in {u.id for u in walked}


async def test_created_before_excludes_that_instant(stub, users):
    pivot = sorted(users, key=sort_key("create_time"))[20]
    walked = await list_all(stub, page_size=4, created_before=pivot.create_time)
    want = [u for u in users if u.create_time.ToDatetime() < pivot.create_time.ToDatetime()]
    assert [u.id for u in walked] == sorted(u.id for u in want)
    assert pivot.id not in {u.id for u in walked}


async def test_created_after_and_before_select_a_window(stub, users):
    by_time = sorted(users, key=sort_key("create_time"))
    after, before = by_time[5].create_time, by_time[12].create_time
    walked = await list_all(
        stub, page_size=3, created_after=after, created_before=before, order_by="create_time desc"
    )
    assert [u.id for u in walked] == [u.id for u in reversed(by_time[5:12])]
    page = await stub.ListUsers(list_request(created_after=after, created_before=before))
    assert page.total_size == 7


async def test_time_window_far_in_the_past_or_future_lists_nothing(stub, users):
    future = timestamp(datetime.now(UTC) + timedelta(days=3650))
    past = timestamp(datetime(2000, 1, 1, tzinfo=UTC))
    assert (await stub.ListUsers(list_request(created_after=future))).total_size == 0
    assert (await stub.ListUsers(list_request(created_before=past))).total_size == 0


async def test_time_bounds_at_the_ends_of_the_timestamp_range_are_accepted(stub, users):
    earliest = Timestamp(seconds=-62135596800)  # 0001-01-01T00:00:00Z
    latest = Timestamp(seconds=253402300799)  # 9999-12-31T23:59:59Z
    page = await stub.ListUsers(list_request(created_after=earliest, created_before=latest))
    assert page.total_size == len(users)


async def test_timestamp_out_of_range_is_invalid_argument_naming_it(stub, subtests):
    for field in ("created_after", "created_before"):
        for seconds in (2**40, -(2**40)):
            with subtests.test(field=field, seconds=seconds):
                request = list_request(**{field: Timestamp(seconds=seconds)})
                assert_invalid(await failure(stub.ListUsers(request)), field)


async def test_filters_combine(stub, users):
    by_time = sorted(users, key=sort_key("create_time"))
    after = by_time[15].create_time
    walked = await list_all(stub, page_size=2, username_prefix="a", created_after=after)
    want = {u.id for u in by_time[15:] if u.username.lower().startswith("a")}
    assert {u.id for u in walked} == want


# --- stability while rows change ---------------------------------------------------


@pytest.mark.parametrize("order_by", ORDERS)
async def test_inserts_between_pages_neither_repeat_nor_skip_existing_users(
    service, stub, users, order_by
):
    # New rows land before, among and after the existing ones in every order
    # but id (new ids are always the highest).
    newcomers = iter(
        [("aaa", 59), ("Mmm", 29), ("zzz", -1), ("bbb", 1), ("Nnn", 33), ("yyy", 57), ("ccc", 7)]
    )
    seen: list[int] = []
    token = ""
    for _ in range(20):
        page = await stub.ListUsers(list_request(page_size=5, page_token=token, order_by=order_by))
        seen += [u.id for u in page.users]
        token = page.next_page_token
        if not token:
            break
        name, second = next(newcomers)
        await insert_rows(service, [name], create_times=[BASE + timedelta(seconds=second)])
    assert not token
    assert len(seen) == len(set(seen)), "a user was listed twice"
    existing = expected(users, order_by)
    assert [i for i in seen if i in set(existing)] == existing


async def test_deleting_the_last_listed_user_does_not_derail_the_next_page(stub, users):
    first = await stub.ListUsers(list_request(page_size=6, order_by="username"))
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=first.users[-1].id))
    rest = await list_all(stub, page_size=6, order_by="username", page_token=first.next_page_token)
    assert [u.id for u in [*first.users, *rest]] == expected(users, "username")


# --- bad requests ------------------------------------------------------------------


async def next_token(stub, **query: object) -> str:
    page = await stub.ListUsers(list_request(page_size=3, **query))
    assert page.next_page_token
    return str(page.next_page_token)


def decoded(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


async def test_token_with_any_character_flipped_is_invalid_argument(stub, users):
    token = await next_token(stub)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    checked = 0
    for i, char in enumerate(token):
        flipped = alphabet[(alphabet.index(char) + 32) % 64]
        tampered = token[:i] + flipped + token[i + 1 :]
        if decoded(tampered) == decoded(token):
            continue  # only padding bits changed: the same token
        got = await failure(stub.ListUsers(list_request(page_size=3, page_token=tampered)))
        assert_invalid(got, "page_token")
        checked += 1
    assert checked >= len(token) - 1


async def test_garbage_token_is_invalid_argument(stub, users, subtests):
    garbage = ["garbage", "!!!!", "A", "AAAA", "=", "é", "x" * 5000, "eyJxIjoiIiwicCI6WzFdfQ"]
    for token in garbage:
        with subtests.test(token=token[:20]):
            got = await failure(stub.ListUsers(list_request(page_token=token)))
            assert_invalid(got, "page_token")


async def test_truncated_token_is_invalid_argument(stub, users, subtests):
    token = await next_token(stub)
    for cut in (1, 4, 16, 20, -1, -16, -20):
        with subtests.test(cut=cut):
            request = list_request(page_size=3, page_token=token[:cut])
            assert_invalid(await failure(stub.ListUsers(request)), "page_token")


async def test_token_with_extra_characters_is_invalid_argument(stub, users):
    token = await next_token(stub)
    got = await failure(stub.ListUsers(list_request(page_size=3, page_token=token + "AAAA")))
    assert_invalid(got, "page_token")


async def test_token_reused_with_another_query_is_invalid_argument(stub, users, subtests):
    cases: list[tuple[str, dict[str, object], dict[str, object]]] = [
        ("direction", {"order_by": "id"}, {"order_by": "id desc"}),
        ("sort-field", {"order_by": "username"}, {"order_by": "create_time"}),
        ("prefix-added", {}, {"username_prefix": "a"}),
        ("prefix-changed", {"username_prefix": "a"}, {"username_prefix": "b"}),
        ("prefix-dropped", {"username_prefix": "a"}, {}),
        ("after-added", {}, {"created_after": Timestamp(seconds=1)}),
        ("before-added", {}, {"created_before": Timestamp(seconds=4_000_000_000)}),
    ]
    for case, made_with, used_with in cases:
        with subtests.test(case):
            page = await stub.ListUsers(list_request(page_size=2, **made_with))
            assert page.next_page_token
            reused = list_request(page_size=2, page_token=page.next_page_token, **used_with)
            assert_invalid(await failure(stub.ListUsers(reused)), "page_token")


async def test_token_from_another_database_is_invalid_argument(stub, users):
    from service.testing import running_service

    # A second service with its own database has its own page-token key.
    async with running_service() as other:
        other_stub: Any = other.stub
        await create_user(other_stub, "elsewhere1")
        await create_user(other_stub, "elsewhere2")
        foreign = (await other_stub.ListUsers(list_request(page_size=1))).next_page_token
    assert foreign
    got = await failure(stub.ListUsers(list_request(page_size=1, page_token=foreign)))
    assert_invalid(got, "page_token")


async def test_bad_order_by_is_invalid_argument(stub, subtests):
    bad = [
        "name",
        "email",
        "balance",
        "id desc desc",
        "id descending",
        "id,username",
        "username,id",
        "create_time asc id",
        "password_hash",
        "id; DROP TABLE users",
    ]
    for order_by in bad:
        with subtests.test(order_by=order_by):
            got = await failure(stub.ListUsers(list_request(order_by=order_by)))
            assert_invalid(got, "order_by")


async def test_negative_page_size_is_invalid_argument(stub, subtests):
    for page_size in (-1, -1000, -(2**31)):
        with subtests.test(page_size=page_size):
            got = await failure(stub.ListUsers(list_request(page_size=page_size)))
            assert_invalid(got, "page_size")


async def test_negative_page_size_and_bad_order_are_named_together(stub):
    got = await failure(stub.ListUsers(list_request(page_size=-1, order_by="nope")))
    assert_invalid(got, "page_size", "order_by")
