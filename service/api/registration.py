"""Every method of every service the server registers goes through the call guard.

Servicers are added to this registry, not to the grpc.aio server: generated
``add_*Servicer_to_server`` functions take any object with
``add_generic_rpc_handlers`` and ``add_registered_method_handlers``, so every
method handler, unary or streaming, of UserService, reflection and any
service added later, is wrapped on its way in. ``verify()`` then refuses to
start a server that serves a method nobody wrapped, such as one registered
on the grpc.aio server directly.

Streaming handlers written as async generators are turned into coroutines
that write each message (grpc.aio's reader/writer form), so that one
coroutine wrapper guards every kind of method.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pool

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    import grpc.aio

    Behavior = Callable[[Any, Any], Awaitable[Any]]
    Wrap = Callable[[str, str, Behavior], Behavior]
    Handler = grpc.RpcMethodHandler[Any, Any]
    GenericHandler = grpc.GenericRpcHandler[Any, Any]

__all__ = ["GuardedRegistry", "UnguardedMethod"]

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class UnguardedMethod(RuntimeError):
    """A served method that does not go through the call guard: the server must not start."""


class GuardedRegistry:
    def __init__(self, server: grpc.aio.Server, wrap: Wrap, *, open_services: Iterable[str]):
        self._server = server
        self._wrap = wrap
        # Services served as they are, on purpose (health): counted as guarded.
        self._open = frozenset(open_services)
        self.guarded: set[str] = set()

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        wrapped = {name: self._guard(service, name, handler) for name, handler in handlers.items()}
        # grpc-stubs predates add_registered_method_handlers.
        self._server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]

    def add_generic_rpc_handlers(self, handlers: Sequence[GenericHandler]) -> None:
        self._server.add_generic_rpc_handlers([_GuardedLookup(h, self._guard) for h in handlers])

    def verify(self, services: Iterable[str]) -> None:
        """Raise UnguardedMethod unless every method of ``services`` is guarded."""
        pool = descriptor_pool.Default()
        for name in services:
            for method in pool.FindServiceByName(name).methods:
                path = f"/{name}/{method.name}"
                if path not in self.guarded:
                    raise UnguardedMethod(f"{path} is served without the call guard")

    def _guard(self, service: str, method: str, handler: Handler) -> Handler:
        self.guarded.add(f"/{service}/{method}")
        if service in self._open:
            return handler
        for kind in _KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                guarded = self._wrap(service, method, _as_coroutine(behavior))
                return handler._replace(**{kind: guarded})  # type: ignore[attr-defined, no-any-return]
        raise UnguardedMethod(f"/{service}/{method} has a handler of no known kind")


class _GuardedLookup(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose every answer is guarded (asked only for unregistered paths)."""

    def __init__(
        self, inner: GenericHandler, guard: Callable[[str, str, Handler], Handler]
    ) -> None:
        self._inner = inner
        self._guard = guard
        self._cache: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        path = handler_call_details.method
        handler = self._cache.get(path)
        if handler is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None  # Not cached: unknown paths are the client's to choose.
            service, _, method = path.lstrip("/").partition("/")
            handler = self._cache[path] = self._guard(service, method, handler)
        return handler


def _as_coroutine(behavior: Callable[[Any, Any], Any]) -> Behavior:
    if not inspect.isasyncgenfunction(behavior):
        return behavior

    async def written(request: Any, context: Any) -> None:
        async for message in behavior(request, context):
            await context.write(message)

    return written
