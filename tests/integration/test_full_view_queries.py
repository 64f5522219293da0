"""GetUser with USER_VIEW_FULL runs a constant number of SQL statements, whatever the posts."""

from __future__ import annotations

from users.v1 import resources_pb2, user_service_pb2

from tests.helpers import create_user
from tests.integration.money_helpers import counting_statements, create_post

FULL = resources_pb2.USER_VIEW_FULL


def full_view(user_id: int) -> user_service_pb2.GetUserRequest:
    return user_service_pb2.GetUserRequest(id=user_id, view=FULL)


async def statements_of_full_view(service, user_id: int) -> tuple[list[str], int]:
    """The statements one GetUser(FULL) runs, and how many posts it returned."""
    with counting_statements(service) as statements:
        user = await service.stub.GetUser(full_view(user_id))
    return statements, len(user.posts)


async def test_the_statement_counter_sees_every_statement_the_service_runs(service):
    user = await create_user(service.stub)
    await create_post(service.stub, user.id, title="a post")
    listing = user_service_pb2.ListPostsRequest(user_id=user.id)
    with counting_statements(service) as statements:
        for _ in range(3):
            await service.stub.ListPosts(listing)
    reads = [s for s in statements if '"posts"' in s or " posts " in s.lower()]
    assert len(reads) == 3, statements

    # Outside the block nothing is counted any more.
    await service.stub.ListPosts(listing)
    assert len([s for s in statements if '"posts"' in s or " posts " in s.lower()]) == 3


async def test_full_view_runs_the_same_few_statements_for_0_1_and_50_posts(service):
    counts = {}
    for posts in (0, 1, 50):
        user = await create_user(service.stub)
        for i in range(posts):
            await create_post(service.stub, user.id, title=f"post {i}")

        statements, returned = await statements_of_full_view(service, user.id)

        assert returned == posts
        assert statements, "the counter saw no statement at all"
        counts[posts] = len(statements)
    assert counts[0] == counts[1] == counts[50], counts
    assert counts[50] <= 3, counts


def touching_posts(statements: list[str]) -> list[str]:
    return [s for s in statements if '"posts"' in s or " posts " in s.lower()]


async def test_only_the_full_view_reads_the_posts_table(service):
    user = await create_user(service.stub)
    for i in range(5):
        await create_post(service.stub, user.id, title=f"post {i}")

    full, _ = await statements_of_full_view(service, user.id)
    with counting_statements(service) as basic:
        await service.stub.GetUser(user_service_pb2.GetUserRequest(id=user.id))

    assert len(touching_posts(full)) == 1, full
    assert basic, "the counter saw no statement at all"
    assert touching_posts(basic) == [], basic
