"""CreatePost, ListPosts, posts in GetUser's full view, and posts deleted with their user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from users.v1 import resources_pb2, user_service_pb2

from service.db.models import PostRow
from tests.helpers import assert_error, assert_invalid, create_user, failure
from tests.integration.money_helpers import (
    all_posts,
    create_post,
    deposit,
    list_posts,
    list_transfers,
    new_request_id,
    transfer,
)

NOT_FOUND = grpc.StatusCode.NOT_FOUND
FULL = resources_pb2.USER_VIEW_FULL
BASIC = resources_pb2.USER_VIEW_BASIC


def get_user(
    user_id: int, view: resources_pb2.UserView.ValueType = resources_pb2.USER_VIEW_UNSPECIFIED
) -> user_service_pb2.GetUserRequest:
    return user_service_pb2.GetUserRequest(id=user_id, view=view)


async def count_post_rows(service, user_id: int) -> int:
    with service.server.database.activate():
        return await PostRow.filter(user_id=user_id).count()


# --- CreatePost ----------------------------------------------------------------------


async def test_created_post_has_the_given_fields_an_id_and_a_creation_time(stub):
    user = await create_user(stub)
    before = datetime.now(UTC)
    post = await create_post(stub, user.id, title="Hello, world", body="First post.")
    after = datetime.now(UTC)

    assert post.id > 0
    assert post.user_id == user.id
    assert post.title == "Hello, world"
    assert post.body == "First post."
    assert post.HasField("create_time")
    created = post.create_time.ToDatetime(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= created <= after + timedelta(seconds=1)
    # What was returned is what was stored.
    assert list((await list_posts(stub, user.id)).posts) == [post]


async def test_each_created_post_gets_its_own_id(stub):
    user = await create_user(stub)
    first = await create_post(stub, user.id)
    second = await create_post(stub, user.id)
    assert first.id != second.id


async def test_post_body_is_optional(stub):
    user = await create_user(stub)
    post = await create_post(stub, user.id, title="Title only", body="")
    assert post.body == ""
    assert list((await list_posts(stub, user.id)).posts) == [post]


async def test_post_for_a_missing_user_is_not_found_and_nothing_is_stored(stub, service):
    user = await create_user(stub)
    missing = user.id + 1000
    got = await failure(create_post(stub, missing))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")
    assert str(missing) in got.message
    assert await count_post_rows(service, missing) == 0


async def test_post_with_a_non_positive_user_id_is_invalid_argument(stub):
    for user_id in (0, -1, -(2**63)):
        assert_invalid(await failure(create_post(stub, user_id)), "user_id")


async def test_empty_or_whitespace_title_is_invalid_argument_naming_title(stub):
    user = await create_user(stub)
    for title in ("", " ", "   \t  ", "\n", "\u3000"):
        got = await failure(create_post(stub, user.id, title=title))
        assert_invalid(got, "title")
    assert list((await list_posts(stub, user.id)).posts) == []


async def test_title_of_201_characters_is_invalid_argument_naming_title(stub):
    user = await create_user(stub)
    assert_invalid(await failure(create_post(stub, user.id, title="t" * 201)), "title")
    assert list((await list_posts(stub, user.id)).posts) == []


async def test_title_of_200_characters_is_accepted_even_outside_the_bmp(stub):
    user = await create_user(stub)
    ascii_title = await create_post(stub, user.id, title="t" * 200)
    emoji_title = await create_post(stub, user.id, title="\U0001f600" * 200)
    assert ascii_title.title == "t" * 200
    assert emoji_title.title == "\U0001f600" * 200
    stored = {p.id: p.title for p in (await list_posts(stub, user.id)).posts}
    assert stored == {ascii_title.id: "t" * 200, emoji_title.id: "\U0001f600" * 200}


async def test_body_of_10001_characters_is_invalid_argument_naming_body(stub):
    user = await create_user(stub)
    assert_invalid(await failure(create_post(stub, user.id, body="b" * 10_001)), "body")
    assert list((await list_posts(stub, user.id)).posts) == []


async def test_body_of_10000_characters_is_accepted(stub):
    user = await create_user(stub)
    post = await create_post(stub, user.id, body="b" * 10_000)
    assert post.body == "b" * 10_000
    assert (await list_posts(stub, user.id)).posts[0].body == "b" * 10_000


CONTROL_TITLES = [
    "a\x00b",
    "bell\x07",
    "esc\x1b[31mred",
    "line\nbreak",
    "carriage\rreturn",
    "tab\tinside",
    "del\x7f",
    "c1\x85x",
    "separator\u2028x",
]


async def test_control_character_in_title_is_invalid_argument_naming_title(stub):
    user = await create_user(stub)
    for title in CONTROL_TITLES:
        got = await failure(create_post(stub, user.id, title=title))
        assert_invalid(got, "title")
    assert list((await list_posts(stub, user.id)).posts) == []


async def test_control_character_in_body_other_than_line_breaks_and_tabs_is_invalid(stub):
    user = await create_user(stub)
    for body in ("nul\x00", "bell\x07", "esc\x1b[0m", "del\x7f", "separator\u2028"):
        got = await failure(create_post(stub, user.id, body=body))
        assert_invalid(got, "body")
    assert list((await list_posts(stub, user.id)).posts) == []


async def test_list_posts_page_size_zero_means_fifty(stub):
    user = await create_user(stub)
    for i in range(51):
        await create_post(stub, user.id, title=f"post {i}")
    first = await list_posts(stub, user.id, page_size=0)
    assert len(first.posts) == 50
    assert first.next_page_token
    rest = await list_posts(stub, user.id, page_token=first.next_page_token)
    assert [p.title for p in rest.posts] == ["post 0"]
    assert rest.next_page_token == ""


async def test_list_posts_page_size_above_1000_is_lowered_to_1000(stub, service):
    user = await create_user(stub)
    with service.server.database.activate():
        await PostRow.bulk_create(
            [PostRow(user_id=user.id, title=f"post {i}", body="") for i in range(1001)]
        )
    first = await list_posts(stub, user.id, page_size=5000)
    assert len(first.posts) == 1000
    assert first.next_page_token
    rest = await list_posts(stub, user.id, page_size=5000, page_token=first.next_page_token)
    assert len(rest.posts) == 1
    assert rest.next_page_token == ""


async def test_bad_title_and_bad_body_are_both_named_in_one_reply(stub):
    user = await create_user(stub)
    got = await failure(create_post(stub, user.id, title="", body="b" * 10_001))
    assert_invalid(got, "title", "body")


async def test_body_keeps_its_line_breaks_and_whitespace_byte_for_byte(stub):
    user = await create_user(stub)
    body = "  indented\nunix\r\nwindows\rold mac\n\n\tTabbed line  \n\n"
    post = await create_post(stub, user.id, body=body)

    listed = (await list_posts(stub, user.id)).posts[0]
    full = (await stub.GetUser(get_user(user.id, FULL))).posts[0]
    for seen in (post.body, listed.body, full.body):
        assert seen.encode() == body.encode()


# --- ListPosts -----------------------------------------------------------------------


async def test_list_posts_returns_the_users_posts_newest_first(stub):
    user = await create_user(stub)
    other = await create_user(stub)
    created = [await create_post(stub, user.id, title=f"post {i}") for i in range(4)]
    await create_post(stub, other.id, title="not mine")

    page = await list_posts(stub, user.id)

    assert [p.title for p in page.posts] == ["post 3", "post 2", "post 1", "post 0"]
    assert list(page.posts) == created[::-1]
    assert page.next_page_token == ""


async def test_list_posts_of_a_user_without_posts_is_empty(stub):
    user = await create_user(stub)
    page = await list_posts(stub, user.id)
    assert list(page.posts) == []
    assert page.next_page_token == ""


async def test_list_posts_pages_cover_every_post_once_in_order(stub):
    user = await create_user(stub)
    created = [await create_post(stub, user.id, title=f"post {i}") for i in range(7)]

    listed, pages = await all_posts(stub, user.id, page_size=3)

    assert pages == 3
    assert [p.id for p in listed] == [p.id for p in reversed(created)]
    assert len({p.id for p in listed}) == 7


async def test_list_posts_page_size_equal_to_the_count_leaves_no_empty_last_page(stub):
    user = await create_user(stub)
    for i in range(4):
        await create_post(stub, user.id, title=f"post {i}")
    listed, pages = await all_posts(stub, user.id, page_size=2)
    assert pages == 2
    assert len(listed) == 4


async def test_list_posts_pagination_is_stable_while_posts_are_added(stub):
    user = await create_user(stub)
    created = [await create_post(stub, user.id, title=f"post {i}") for i in range(5)]

    first = await list_posts(stub, user.id, page_size=2)
    await create_post(stub, user.id, title="newer than the listing")
    rest, _ = await all_posts_from(stub, user.id, first.next_page_token, page_size=2)

    assert [p.id for p in [*first.posts, *rest]] == [p.id for p in reversed(created)]


async def all_posts_from(
    stub, user_id: int, token: str, *, page_size: int
) -> tuple[list[resources_pb2.Post], int]:
    found: list[resources_pb2.Post] = []
    pages = 0
    while token:
        page = await list_posts(stub, user_id, page_size, token)
        found.extend(page.posts)
        token = page.next_page_token
        pages += 1
        assert pages < 100
    return found, pages


async def test_list_posts_with_a_malformed_token_is_invalid_argument(stub):
    user = await create_user(stub)
    await create_post(stub, user.id)
    for token in ("garbage", "!!!", "AAAA", "a" * 200, "é"):
        got = await failure(list_posts(stub, user.id, page_token=token))
        assert_invalid(got, "page_token")


async def test_list_posts_with_an_edited_token_is_invalid_argument(stub):
    user = await create_user(stub)
    for i in range(3):
        await create_post(stub, user.id, title=f"post {i}")
    token = (await list_posts(stub, user.id, page_size=1)).next_page_token
    assert token
    middle = len(token) // 2
    edited = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    got = await failure(list_posts(stub, user.id, page_size=1, page_token=edited))
    assert_invalid(got, "page_token")


async def test_list_posts_with_a_token_of_another_users_listing_is_invalid_argument(stub):
    author = await create_user(stub)
    other = await create_user(stub)
    for user in (author, other):
        for i in range(3):
            await create_post(stub, user.id, title=f"post {i}")
    token = (await list_posts(stub, author.id, page_size=1)).next_page_token
    assert token

    got = await failure(list_posts(stub, other.id, page_size=1, page_token=token))
    assert_invalid(got, "page_token")


async def test_list_posts_with_a_token_of_a_transfer_listing_is_invalid_argument(stub):
    user = await create_user(stub)
    other = await create_user(stub)
    await deposit(stub, user.id, 10, new_request_id())
    for _ in range(2):
        await transfer(stub, user.id, other.id, 1, new_request_id())
    await create_post(stub, user.id)
    token = (await list_transfers(stub, user.id, page_size=1)).next_page_token
    assert token

    got = await failure(list_posts(stub, user.id, page_size=1, page_token=token))
    assert_invalid(got, "page_token")


async def test_list_posts_of_a_missing_user_is_not_found(stub):
    user = await create_user(stub)
    got = await failure(list_posts(stub, user.id + 1000))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")


async def test_list_posts_with_a_negative_page_size_is_invalid_argument(stub):
    user = await create_user(stub)
    assert_invalid(await failure(list_posts(stub, user.id, page_size=-1)), "page_size")


async def test_list_posts_with_a_non_positive_user_id_is_invalid_argument(stub):
    for user_id in (0, -7):
        assert_invalid(await failure(list_posts(stub, user_id)), "user_id")


# --- GetUser views -------------------------------------------------------------------


async def test_full_view_returns_the_users_posts_newest_first(stub):
    user = await create_user(stub)
    other = await create_user(stub)
    created = [
        await create_post(stub, user.id, title=f"post {i}", body=f"body {i}") for i in range(3)
    ]
    await create_post(stub, other.id, title="someone else's")

    full = await stub.GetUser(get_user(user.id, FULL))

    assert list(full.posts) == created[::-1]
    full.ClearField("posts")
    assert full == user


async def test_full_view_of_a_user_without_posts_has_no_posts(stub):
    user = await create_user(stub)
    full = await stub.GetUser(get_user(user.id, FULL))
    assert list(full.posts) == []
    assert full == user


async def test_basic_and_unspecified_views_return_no_posts(stub):
    user = await create_user(stub)
    await create_post(stub, user.id)
    for view in (BASIC, resources_pb2.USER_VIEW_UNSPECIFIED):
        basic = await stub.GetUser(get_user(user.id, view))
        assert list(basic.posts) == [], view
        assert basic == user, view


async def test_full_view_of_a_missing_user_is_not_found(stub):
    user = await create_user(stub)
    got = await failure(stub.GetUser(get_user(user.id + 1000, FULL)))
    assert_error(got, NOT_FOUND, "USER_NOT_FOUND")


# --- DeleteUser ----------------------------------------------------------------------


async def test_purging_a_deleted_user_deletes_its_posts_and_only_its_posts(stub, service):
    from service.domain.users import purge_deleted_users

    user = await create_user(stub)
    other = await create_user(stub)
    for i in range(3):
        await create_post(stub, user.id, title=f"post {i}")
    kept = await create_post(stub, other.id, title="stays")
    assert await count_post_rows(service, user.id) == 3

    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id))

    assert_error(await failure(list_posts(stub, user.id)), NOT_FOUND, "USER_NOT_FOUND")
    # Soft-deleted: the posts stay, so that UndeleteUser can bring them back.
    assert await count_post_rows(service, user.id) == 3
    with service.server.database.activate():
        assert await purge_deleted_users(datetime.now(UTC) + timedelta(days=31)) == 1
    assert await count_post_rows(service, user.id) == 0
    assert list((await list_posts(stub, other.id)).posts) == [kept]


async def test_a_deleted_user_cannot_get_new_posts(stub, service):
    user = await create_user(stub)
    await stub.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id))
    assert_error(await failure(create_post(stub, user.id)), NOT_FOUND, "USER_NOT_FOUND")
    assert await count_post_rows(service, user.id) == 0
