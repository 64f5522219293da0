"""The call guard covers every method: registration wraps each handler, streaming ones too."""

from __future__ import annotations

import inspect
from typing import Any

import grpc
import pytest
from users.v1 import user_service_pb2

from service.api.calls import CallGuard
from service.api.registration import GuardedRegistry, UnguardedMethod
from service.domain.actor import ANONYMOUS, Actor, current_actor
from service.domain.caller_errors import CallerNotAllowed

USER_SERVICE = user_service_pb2.DESCRIPTOR.services_by_name["UserService"]
NAME = USER_SERVICE.full_name


class RecordingServer:
    def __init__(self) -> None:
        self.registered: dict[str, dict[str, Any]] = {}
        self.generic: list[Any] = []

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered[service] = handlers

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)


def marking_wrap(service: str, method: str, behavior: Any) -> Any:
    async def marked(request: Any, context: Any) -> Any:
        return ("guarded", await behavior(request, context))

    return marked


async def echo(request: Any, context: Any) -> Any:
    return request


def registry_for(server: RecordingServer) -> GuardedRegistry:
    return GuardedRegistry(server, marking_wrap, open_services={"grpc.health.v1.Health"})  # type: ignore[arg-type]


async def test_every_registered_handler_is_wrapped_and_verify_passes():
    server = RecordingServer()
    registry = registry_for(server)
    handlers = {m.name: grpc.unary_unary_rpc_method_handler(echo) for m in USER_SERVICE.methods}
    registry.add_registered_method_handlers(NAME, handlers)
    registry.verify([NAME])
    wrapped = server.registered[NAME]["GetUser"].unary_unary
    assert await wrapped("request", None) == ("guarded", "request")


def test_a_served_method_that_was_not_registered_through_the_guard_stops_start_up():
    server = RecordingServer()
    registry = registry_for(server)
    methods = [m.name for m in USER_SERVICE.methods]
    some = {name: grpc.unary_unary_rpc_method_handler(echo) for name in methods[1:]}
    registry.add_registered_method_handlers(NAME, some)
    with pytest.raises(UnguardedMethod, match=f"/{NAME}/{methods[0]} is served without"):
        registry.verify([NAME])


async def test_a_streaming_async_generator_becomes_a_guarded_coroutine_that_writes():
    async def stream(request: Any, context: Any) -> Any:
        for item in ("a", "b"):
            yield item

    class Writer:
        def __init__(self) -> None:
            self.written: list[str] = []

        async def write(self, message: str) -> None:
            self.written.append(message)

    server = RecordingServer()
    registry = registry_for(server)
    registry.add_registered_method_handlers(
        "pkg.S",
        {
            "Watch": grpc.unary_stream_rpc_method_handler(stream),
            "Chat": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    watch = server.registered["pkg.S"]["Watch"].unary_stream
    assert inspect.iscoroutinefunction(watch)
    writer = Writer()
    assert await watch(None, writer) == ("guarded", None)
    assert writer.written == ["a", "b"]
    assert registry.guarded == {"/pkg.S/Watch", "/pkg.S/Chat"}


def test_an_open_service_is_left_as_it_is_and_counts_as_guarded():
    server = RecordingServer()
    registry = registry_for(server)
    handler = grpc.unary_unary_rpc_method_handler(echo)
    registry.add_registered_method_handlers("grpc.health.v1.Health", {"Check": handler})
    assert server.registered["grpc.health.v1.Health"]["Check"] is handler
    assert "/grpc.health.v1.Health/Check" in registry.guarded


class FakeAuthorizer:
    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed

    def principal(self, context: Any) -> str:
        return "spiffe://td/caller"

    def check(self, principal: str, method: str) -> None:
        if not self.allowed:
            raise CallerNotAllowed(principal, method)


class FakeContext:
    def __init__(self) -> None:
        self.aborted: grpc.Status | None = None

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.aborted = status
        raise grpc.aio.AbortError()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def code(self) -> grpc.StatusCode | None:
        return self.aborted.code if self.aborted else None


def guard(allowed: bool) -> CallGuard:
    return CallGuard(lambda e: None, None, log_calls=False, authorizer=FakeAuthorizer(allowed))  # type: ignore[arg-type]


async def test_an_allowed_call_runs_as_its_principal_and_only_for_its_duration():
    async def who(request: Any, context: Any) -> Actor:
        return current_actor()

    wrapped = guard(True).wrap(NAME, "GetUser", who)
    assert await wrapped(None, FakeContext()) == Actor("spiffe://td/caller")
    assert current_actor() is ANONYMOUS


async def test_a_denied_call_never_reaches_the_handler():
    ran = []

    async def handler(request: Any, context: Any) -> None:
        ran.append(request)

    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await guard(False).wrap(NAME, "DeleteUser", handler)("request", context)
    assert ran == []
    assert context.aborted is not None
    assert context.aborted.code == grpc.StatusCode.PERMISSION_DENIED
