"""Graceful drain: count the calls in flight, and refuse new ones with UNAVAILABLE once stopping.

grpc.aio's own `server.stop(grace)` refuses calls that arrive during the grace with CANCELLED,
which clients do not retry. Refusing them here with UNAVAILABLE (plus RetryInfo) lets a client's
retry policy move them to another replica, while the calls already running finish.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.rpc import code_pb2

from servicekit.boundary import abort
from servicekit.errors import ServiceError

Behavior = Callable[..., Any]


class ServerShuttingDown(ServiceError):
    """The replica is draining; the call can be retried elsewhere at once.

    The one status for shutdown: new calls refused here, and long-lived calls (streams, waiters) that a
    service ends itself once `Lifecycle.stopping` is set.
    """

    code = code_pb2.UNAVAILABLE
    reason = "SERVER_SHUTTING_DOWN"


class Drain:
    """Calls in flight, and whether new ones are still accepted."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.in_flight = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


class DrainInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every method handler so that the drain sees each call start and end."""

    def __init__(self, drain: Drain) -> None:
        self.drain = drain
        # Wrapped once per method, not per call: this runs in front of every RPC.
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # unknown method: not cached, so callers cannot grow the cache
                return None
            wrapped = self._wrapped[method] = self._wrap_handler(handler)
        return wrapped

    def _wrap_handler(self, handler: Any) -> Any:
        for kind in ("unary_unary", "stream_unary", "unary_stream", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(**{kind: self._wrap(behavior)})
        return handler

    def _wrap(self, behavior: Behavior) -> Behavior:
        drain = self.drain
        if inspect.isasyncgenfunction(behavior):

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await _refuse_if_stopping(drain, context)
                drain.enter()
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    drain.leave()

            return streaming

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _refuse_if_stopping(drain, context)
            drain.enter()
            try:
                return await behavior(request, context)
            finally:
                drain.leave()

        return call


async def _refuse_if_stopping(drain: Drain, context: grpc.aio.ServicerContext) -> None:
    if drain.stopping.is_set():
        await abort(context, ServerShuttingDown("server is shutting down; retry the call", retry_after_s=0))
