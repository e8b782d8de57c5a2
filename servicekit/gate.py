"""The gate: who may call, and whether there is room for the call, decided on its headers alone.

gRPC Python reads a unary request's message before any handler runs, so a check inside the handler lets
anyone make the server buffer a message up to the size limit (16 MiB announced, the last byte withheld,
times the calls a connection may open). The gate decides in `intercept_service`, which sees the method
and the headers before a byte of the message is read, and answers a refused call with a handler that
takes the request as a stream and never reads it: the status goes out at once and gRPC discards what
the client still sends. A refused call costs its headers.

In order: credentials (servicekit.auth: one `authorization: Bearer` header, or a client certificate),
the method's role, the caller's request rate (`admit`), then a slot (servicekit.concurrency), held until
the call's task ends, whether or not its message ever arrived. Health and reflection need no credentials;
their streams (Health Watch, reflection) take a slot of `max_open_streams`.

Without a token on a server that asks for client certificates (mTLS), the certificate's subject is only
known to the handler's context: the call is then answered by an adapter taking the request as a stream,
which runs the same checks before it reads the one message and hands it to the method.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from servicekit.auth import (
    NO_ROLE,
    OPEN_SERVICES,
    Admit,
    BadCredentials,
    CallerRateLimited,
    MissingRequest,
    PermissionDenied,
    Roles,
    Unauthenticated,
    authenticated,
    bearer_token,
    certificate_subject,
)
from servicekit.boundary import abort
from servicekit.callers import Caller, CallersSource
from servicekit.concurrency import Release, Slots, Throttle
from servicekit.errors import ServiceError
from servicekit.handlers import kind_of, report_as

log = logging.getLogger("servicekit.auth")

OPEN_STREAMS = frozenset({"/grpc.health.v1.Health/Watch"})
OPEN_STREAMING_SERVICES = frozenset({"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"})
_refusal: ContextVar[tuple[ServiceError, str | None]] = ContextVar("servicekit_gate_refusal")
_logged = Throttle(60.0)


async def _refuse(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
    error, what = _refusal.get()
    if what is not None and _logged.first((what, context.peer(), error.metadata.get("method"))):
        extra = {"peer": context.peer(), **error.metadata, "once_per_s": 60}
        log.warning(f"call refused: {what}", extra=extra)
    await abort(context, error)


# One refusing handler per shape it stands for (the metrics label the call by its method's shape); none has a
# request deserializer, and none ever reads the request.
REFUSALS = {
    kind: report_as(grpc.stream_unary_rpc_method_handler(_refuse), kind)
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
}


def refused(handler: Any, error: ServiceError, what: str | None = None) -> Any:
    """The handler answering this call with `error` (logged as `what`, once a minute per connection and method)."""
    _refusal.set((error, what))
    return REFUSALS[kind_of(handler)]


def hold(release: Release) -> None:
    """Keep a slot until the call's task ends (gRPC runs each call, interceptors included, in one task)."""
    task = asyncio.current_task()
    assert task is not None
    task.add_done_callback(lambda _: release())


class GateInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, authorizes, rate-limits and counts every call on its headers (see the module doc)."""

    def __init__(
        self,
        slots: Slots,
        callers: CallersSource | None = None,
        roles: Roles | None = None,
        admit: Admit | None = None,
        *,
        mtls: bool = False,
    ) -> None:
        self.slots = slots
        self.callers = callers
        self.roles = roles or {}
        self.admit = admit
        self.mtls = mtls
        self._adapters: dict[str, tuple[Any, Any]] = {}  # method -> (inner handler, certificate-checking adapter)

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        method: str = details.method
        handler = await continuation(details)
        if handler is None:
            return None
        service = method.lstrip("/").rpartition("/")[0]
        if service in OPEN_SERVICES:
            if method not in OPEN_STREAMS and service not in OPEN_STREAMING_SERVICES:
                return handler
            slot = self.slots.take_open()
            if not callable(slot):
                return refused(handler, slot)
            hold(slot)
            return handler
        if self.callers is None:  # no callers file (--insecure-dev): anyone, within the overall limits
            return self._admitted(handler, method, "")
        try:
            token = bearer_token(details.invocation_metadata)
        except BadCredentials as exc:
            return refused(handler, Unauthenticated(str(exc), metadata=self._details(method)), "unauthenticated")
        if token is None and self.mtls:
            return self._adapter(method, handler)
        caller = self.callers.current().by_bearer(token) if token is not None else None
        refusal = await self._check(method, caller)
        if refusal is not None:
            return refused(handler, *refusal)
        assert caller is not None
        return self._admitted(handler, method, caller.name)

    def _details(self, method: str) -> dict[str, str]:
        return {"role": self.roles.get(method, NO_ROLE), "method": method}

    async def _check(self, method: str, caller: Caller | None) -> tuple[ServiceError, str | None] | None:
        """Why `caller` may not call `method` now (the error and what to log), or None when it may."""
        return await check_caller(caller, self.roles.get(method, NO_ROLE), method, self.admit)

    def _admitted(self, handler: Any, method: str, caller: str) -> Any:
        slot = self.slots.take(method, caller)
        if not callable(slot):
            return refused(handler, slot)  # Slots logs its own refusals, once a minute per caller
        hold(slot)
        return handler

    def _adapter(self, method: str, handler: Any) -> Any:
        cached = self._adapters.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._adapters[method] = (
                handler,
                report_as(self._certificate_checked(method, handler), kind_of(handler)),
            )
        return cached[1]

    def _certificate_checked(self, method: str, handler: Any) -> Any:
        """`handler` behind the same checks, made in the handler, where the client certificate is known."""
        kind = kind_of(handler)
        behavior = getattr(handler, kind)

        async def admit(context: grpc.aio.ServicerContext) -> None:
            assert self.callers is not None
            subject = certificate_subject(context)
            caller = self.callers.current().by_certificate(subject) if subject is not None else None
            refusal = await self._check(method, caller)
            if refusal is None:
                assert caller is not None
                slot = self.slots.take(method, caller.name)
                refusal = (slot, None) if not callable(slot) else None
                if callable(slot):
                    hold(slot)
            if refusal is not None:
                _refusal.set(refusal)
                await _refuse(_nothing(), context)

        if kind.startswith("stream_"):
            return _wrapped_streaming(handler, kind, behavior, admit)
        return _wrapped_unary(handler, kind, behavior, admit)


async def check_caller(
    caller: Caller | None, role: str, method: str, admit: Admit | None
) -> tuple[ServiceError, str | None] | None:
    """Why `caller` (None: no or unknown credentials) may not call `method`, which needs `role`, now: the error and
    what to log; None when it may (and it is then the call's authenticated caller). The gate's checks after the
    credentials, in order; the gateway's OpenAI-compatible port asks the same."""
    details = {"role": role, "method": method}
    if caller is None:
        return Unauthenticated("missing or unknown credentials", metadata=details), "unauthenticated"
    authenticated(caller)
    if role not in caller.roles:
        return PermissionDenied(f"this method needs the role {role}", metadata=details), "permission denied"
    retry_after = await admit(caller) if admit is not None else None
    if retry_after is not None:
        return CallerRateLimited("the caller's request rate is used up", retry_after_s=retry_after), None
    return None


async def _nothing() -> AsyncIterator[Any]:
    return
    yield


async def _first(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
    async for request in requests:
        return request
    await abort(context, MissingRequest("the call ended before its request message"))


def _wrapped_unary(handler: Any, kind: str, behavior: Any, admit: Any) -> Any:
    """A unary-request method as a stream-request handler: checks first, then the one message is read."""
    streaming = kind == "unary_stream"
    if inspect.isasyncgenfunction(behavior):

        async def generating(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await admit(context)
            async for response in behavior(await _first(requests, context), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            generating, handler.request_deserializer, handler.response_serializer
        )

    async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        await admit(context)
        return await behavior(await _first(requests, context), context)

    make = grpc.stream_stream_rpc_method_handler if streaming else grpc.stream_unary_rpc_method_handler
    return make(call, handler.request_deserializer, handler.response_serializer)


def _wrapped_streaming(handler: Any, kind: str, behavior: Any, admit: Any) -> Any:
    if inspect.isasyncgenfunction(behavior):

        async def generating(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await admit(context)
            async for response in behavior(requests, context):
                yield response

        return handler._replace(**{kind: generating})

    async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        await admit(context)
        return await behavior(requests, context)

    return handler._replace(**{kind: call})
