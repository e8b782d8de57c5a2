"""Wrapping every method handler of a grpc.aio server in an async context manager, whatever its shape.

A handler's behaviour is a coroutine function (unary responses, or streams written with
`context.write`) or an async generator function (streams that `yield`); the wrapper keeps the
shape, so gRPC drives it the same way. `Around` is entered before the behaviour runs (it may end
the call there, as the drain does) and exited after it ended, seeing the exception (cancellation
included) it ended with, which is all the drain, the Prometheus counts and the trace spans need.
An `Around` may yield a stand-in for the call's context, which the hooks inside it and the behaviour
then get instead (the counts do, to see `abort()`); yielding None keeps the context.
Wrapped handlers are cached per method and inner handler (an inner interceptor such as servicekit.gate
may answer a call with a refusing handler instead), and only for methods the server knows, so unknown
method names cannot grow the cache. A handler registered with `report_as` is reported to `Around` as the
kind of the method it stands for (a refusal is stream-request shaped so that gRPC never reads the request).
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
_REPORTED_KIND: dict[int, str] = {}  # id of a long-lived handler -> the kind `Around` is told


def report_as(handler: Any, kind: str) -> Any:
    """Register `handler` (kept for the process's life) as standing for a method of `kind`."""
    _REPORTED_KIND[id(handler)] = kind
    return handler


def kind_of(handler: Any) -> str:
    """The shape of `handler` ("unary_unary", ...), as `report_as` registered it or as it is."""
    reported = _REPORTED_KIND.get(id(handler))
    if reported is not None:
        return reported
    return next(kind for kind in KINDS if getattr(handler, kind) is not None)


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, around: Around) -> None:
        self.around = around
        self._wrapped: dict[tuple[str, int], tuple[Any, Any]] = {}  # (method, id(inner)) -> (inner, wrapped)

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any) -> Any:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED; nothing cached
            return None
        cached = self._wrapped.get((method, id(handler)))
        if cached is None or cached[0] is not handler:
            # The inner handler is kept in the entry, so its id cannot be reused while the entry lives.
            cached = self._wrapped[(method, id(handler))] = (handler, self._wrap_handler(method, handler))
        return cached[1]

    def _wrap_handler(self, method: str, handler: Any) -> Any:
        reported = kind_of(handler)
        for kind in KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(**{kind: _wrap(self.around, method, reported, behavior)})
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
