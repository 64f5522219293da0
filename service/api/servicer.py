"""users.v1.UserService: each method parses its request, calls the domain, maps the result.

Errors are not handled here: domain errors propagate to the error interceptor,
which owns the translation to gRPC statuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf import empty_pb2
from users.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc

from service.api.feed_methods import FeedMethods
from service.api.mappers import (
    datetime_or_none,
    new_user_of,
    post_to_proto,
    preview_to_proto,
    transfer_to_proto,
    user_to_proto,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeAlias

    import grpc.aio

    from service.domain.errors import UsersError
    from service.domain.feed import Feed
    from service.domain.money import Money
    from service.domain.posts import Posts
    from service.domain.signups import Signups
    from service.domain.users import Accounts

    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

__all__ = ["UserServicer"]


class UserServicer(FeedMethods, user_service_pb2_grpc.UserServiceServicer):
    def __init__(
        self,
        accounts: Accounts,
        posts: Posts,
        money: Money,
        signups: Signups,
        feed: Feed,
        classify: Callable[[BaseException], UsersError | None],
    ) -> None:
        self._accounts = accounts
        self._posts = posts
        self._money = money
        self._signups = signups
        self._feed = feed
        # Maps a lost database to its error, for the methods the call wrapper does not wrap.
        self._classify = classify

    async def CreateUser(
        self, request: user_service_pb2.CreateUserRequest, context: Context
    ) -> resources_pb2.User:
        user = await self._signups.create(new_user_of(request))
        return preview_to_proto(user) if request.validate_only else user_to_proto(user)

    async def BatchCreateUsers(
        self, request: user_service_pb2.BatchCreateUsersRequest, context: Context
    ) -> user_service_pb2.BatchCreateUsersResponse:
        users = await self._signups.batch_create([new_user_of(r) for r in request.requests])
        return user_service_pb2.BatchCreateUsersResponse(users=[user_to_proto(u) for u in users])

    async def GetUser(
        self, request: user_service_pb2.GetUserRequest, context: Context
    ) -> resources_pb2.User:
        full = request.view == resources_pb2.USER_VIEW_FULL
        user = await self._accounts.get(
            request.id, with_posts=full, show_deleted=request.show_deleted
        )
        return user_to_proto(user)

    async def LookupUser(
        self, request: user_service_pb2.LookupUserRequest, context: Context
    ) -> resources_pb2.User:
        which = request.WhichOneof("identifier")
        user = await self._accounts.lookup(
            username=request.username if which == "username" else None,
            email=request.email if which == "email" else None,
            show_deleted=request.show_deleted,
        )
        return user_to_proto(user)

    async def BatchGetUsers(
        self, request: user_service_pb2.BatchGetUsersRequest, context: Context
    ) -> user_service_pb2.BatchGetUsersResponse:
        users = await self._accounts.batch_get(list(request.ids))
        return user_service_pb2.BatchGetUsersResponse(users=[user_to_proto(u) for u in users])

    async def ListUsers(
        self, request: user_service_pb2.ListUsersRequest, context: Context
    ) -> user_service_pb2.ListUsersResponse:
        page = await self._accounts.list(
            page_size=request.page_size,
            page_token=request.page_token,
            username_prefix=request.username_prefix,
            created_after=datetime_or_none(request, "created_after"),
            created_before=datetime_or_none(request, "created_before"),
            order_by=request.order_by,
            show_deleted=request.show_deleted,
        )
        return user_service_pb2.ListUsersResponse(
            users=[user_to_proto(u) for u in page.users],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def UpdateUser(
        self, request: user_service_pb2.UpdateUserRequest, context: Context
    ) -> resources_pb2.User:
        values = {
            "username": request.user.username,
            "email": request.user.email,
            "display_name": request.user.display_name,
        }
        user = await self._accounts.update(
            request.user.id,
            values,
            list(request.update_mask.paths),
            etag=request.user.etag,
            validate_only=request.validate_only,
        )
        return user_to_proto(user)

    async def DeleteUser(
        self, request: user_service_pb2.DeleteUserRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._accounts.delete(request.id, etag=request.etag)
        return empty_pb2.Empty()

    async def UndeleteUser(
        self, request: user_service_pb2.UndeleteUserRequest, context: Context
    ) -> resources_pb2.User:
        return user_to_proto(await self._accounts.undelete(request.id, etag=request.etag))

    async def DisableUser(
        self, request: user_service_pb2.DisableUserRequest, context: Context
    ) -> resources_pb2.User:
        user = await self._accounts.change_state("DisableUser", request.id, etag=request.etag)
        return user_to_proto(user)

    async def EnableUser(
        self, request: user_service_pb2.EnableUserRequest, context: Context
    ) -> resources_pb2.User:
        user = await self._accounts.change_state("EnableUser", request.id, etag=request.etag)
        return user_to_proto(user)

    async def LockUser(
        self, request: user_service_pb2.LockUserRequest, context: Context
    ) -> resources_pb2.User:
        user = await self._accounts.change_state("LockUser", request.id, etag=request.etag)
        return user_to_proto(user)

    async def UnlockUser(
        self, request: user_service_pb2.UnlockUserRequest, context: Context
    ) -> resources_pb2.User:
        user = await self._accounts.change_state("UnlockUser", request.id, etag=request.etag)
        return user_to_proto(user)

    async def AuthenticateUser(
        self,
        request: user_service_pb2.AuthenticateUserRequest,
        context: Context,
    ) -> user_service_pb2.AuthenticateUserResponse:
        user = await self._accounts.authenticate(request.username, request.password)
        return user_service_pb2.AuthenticateUserResponse(user=user_to_proto(user))

    async def ChangePassword(
        self, request: user_service_pb2.ChangePasswordRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._accounts.change_password(
            request.id, request.current_password, request.new_password
        )
        return empty_pb2.Empty()

    async def CreatePost(
        self, request: user_service_pb2.CreatePostRequest, context: Context
    ) -> resources_pb2.Post:
        post = await self._posts.create(request.user_id, request.title, request.body)
        return post_to_proto(post)

    async def ListPosts(
        self, request: user_service_pb2.ListPostsRequest, context: Context
    ) -> user_service_pb2.ListPostsResponse:
        page = await self._posts.list(request.user_id, request.page_size, request.page_token)
        return user_service_pb2.ListPostsResponse(
            posts=[post_to_proto(p) for p in page.posts], next_page_token=page.next_page_token
        )

    async def Deposit(
        self, request: user_service_pb2.DepositRequest, context: Context
    ) -> resources_pb2.User:
        user = await self._money.deposit(request.user_id, request.amount, request.request_id)
        return user_to_proto(user)

    async def TransferFunds(
        self, request: user_service_pb2.TransferFundsRequest, context: Context
    ) -> resources_pb2.Transfer:
        transfer = await self._money.transfer(
            request.from_user_id, request.to_user_id, request.amount, request.request_id
        )
        return transfer_to_proto(transfer)

    async def ListTransfers(
        self, request: user_service_pb2.ListTransfersRequest, context: Context
    ) -> user_service_pb2.ListTransfersResponse:
        page = await self._money.list_transfers(
            request.user_id, request.page_size, request.page_token
        )
        return user_service_pb2.ListTransfersResponse(
            transfers=[transfer_to_proto(t) for t in page.transfers],
            next_page_token=page.next_page_token,
        )
