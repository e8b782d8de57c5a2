"""Wrapping every method handler of a grpc.aio server in an async context manager, whatever its shape.

A handler's behaviour is a coroutine function (unary responses, or streams written with
`context.write`) or an async generator function (streams that `yield`); the wrapper keeps the
shape, so gRPC drives it the same way. `Around` is entered before the behaviour runs (it may end
the call there, as the drain does) and exited after it ended, seeing the exception (cancellation
included) it ended with, which is all the drain, the Prometheus counts and the trace spans need.
An `Around` may yield a stand-in for the call's context, which the hooks inside it and the behaviour
then get instead (the counts do, to see `abort()`); yielding None keeps the context.
Wrapped handlers are cached per method, and only for methods the server knows, so unknown method
names cannot grow the cache.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Behavior = Callable[..., Any]
# (full method name "/pkg.Service/Method", handler kind, call context) -> context manager around the call
Around = Callable[[str, str, grpc.aio.ServicerContext], AbstractAsyncContextManager[object]]

KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, around: Around) -> None:
        self.around = around
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any) -> Any:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED; nothing cached
                return None
            wrapped = self._wrapped[method] = self._wrap_handler(method, handler)
        return wrapped

    def _wrap_handler(self, method: str, handler: Any) -> Any:
        for kind in KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(**{kind: _wrap(self.around, method, kind, behavior)})
        return handler


def _wrap(around: Around, method: str, kind: str, behavior: Behavior) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with around(method, kind, context) as seen:
                async for response in behavior(request, seen or context):
                    yield response

        return streaming

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(method, kind, context) as seen:
            return await behavior(request, seen or context)

    return call
