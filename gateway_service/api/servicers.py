"""ChatService and ProviderService: proto in, domain call, proto out; domain errors -> status with details."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from contextlib import aclosing
from typing import Any

import grpc

from gateway_service.api import from_proto, providers_view, to_proto
from gateway_service.app import Gateway
from gateway_service.chat.aggregate import Answer
from gateway_service.chat.records import total_usage
from gateway_service.domain.events import AttemptRecord, AttemptStarted, FailedOver, GatewayEvent, OutputDelta
from gateway_service.errors import GatewayError, MidStreamFailure
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc, provider_service_pb2, provider_service_pb2_grpc
from servicekit.boundary import ErrorBoundary, bind_request_id
from servicekit.drain import Drain, GraceOver, ServerShuttingDown
from servicekit.errors import ServiceError
from servicekit.server import Lifecycle

# GatewayErrors leave as their status with details; anything else is a bug, logged and answered INTERNAL.
BOUNDARY = ErrorBoundary(GatewayError.domain)


class ChatServicer(chat_service_pb2_grpc.ChatServiceServicer):
    def __init__(self, gateway: Gateway, drain: Drain) -> None:
        self.gateway = gateway
        self.drain = drain
        self.bounds = gateway.config.requests

    async def StreamChat(self, request: pb.StreamChatRequest, context: grpc.aio.ServicerContext) -> None:
        # Written with context.write rather than `yield` so that a cancelled call closes the pipeline
        # (and the upstream HTTP request) here and now, not whenever the generator is collected.
        request_id = bind_request_id(context, request.request_id)
        sent = _Sent()
        async with BOUNDARY(context, "StreamChat"):
            with _cut_short(sent.cut_short), self.gateway.in_flight("StreamChat"):
                chat = from_proto.chat_request(request, request_id, self.bounds)
                run = self.gateway.start_chat(chat, context.time_remaining())
                async with self.drain.cut_scope(), aclosing(run.events()) as events:
                    async for event in events:
                        sent.note(event)
                        await context.write(to_proto.stream_event(event))

    async def Chat(self, request: pb.ChatRequest, context: grpc.aio.ServicerContext) -> pb.ChatResponse:
        request_id = bind_request_id(context, request.request_id)
        answer = Answer()
        async with BOUNDARY(context, "Chat"):
            with _cut_short(_nothing_sent), self.gateway.in_flight("Chat"):
                chat = from_proto.chat_request(request, request_id, self.bounds)
                run = self.gateway.start_chat(chat, context.time_remaining())
                async with self.drain.cut_scope(), aclosing(run.events()) as events:
                    async for event in events:
                        answer.add(event)
        done = answer.completed
        assert done is not None  # a run ends with Completed or raises
        return pb.ChatResponse(
            message=_message(answer),
            finish_reason=to_proto.FINISH[done.finish_reason],
            provider=done.provider,
            model=done.model,
            usage=_total_usage(run.attempts),
            attempts=[to_proto.attempt(r) for r in run.attempts],
            request_id=request_id,
            upstream_request_id=done.upstream_request_id,
            skipped=[to_proto.skipped(r) for r in run.skipped],
        )


@contextlib.contextmanager
def _cut_short(error: Callable[[], ServiceError]) -> Iterator[None]:
    """The drain's grace ran out (GraceOver): the call ends with `error()`, through the boundary like any other."""
    try:
        yield
    except GraceOver:
        raise error() from None


def _nothing_sent() -> ServiceError:
    # Nothing was sent yet: the whole call can be retried on another replica.
    return ServerShuttingDown("server shut down before the answer was complete; retry the call", retry_after_s=0)


class _Sent:
    """What a stream has sent so far, for the error that ends it when the server's drain grace runs out."""

    def __init__(self) -> None:
        self.deltas = 0
        self.provider = self.model = ""

    def note(self, event: GatewayEvent) -> None:
        if isinstance(event, OutputDelta):
            self.deltas += 1
        elif isinstance(event, AttemptStarted):
            self.provider, self.model = event.provider, event.model
        elif isinstance(event, FailedOver) and event.discard_output:
            self.deltas = 0  # the caller drops what the failed attempt sent

    def cut_short(self) -> MidStreamFailure:
        """The same details as any other failure after output was sent (reason, delivered_deltas)."""
        return MidStreamFailure(
            f"{self.provider}/{self.model} was cut off after {self.deltas} deltas were sent: the server is shutting "
            "down and its drain grace is over; the answer is incomplete, retry the call",
            metadata={
                "provider": self.provider,
                "model": self.model,
                "delivered_deltas": str(self.deltas),
                "policy": "server shutting down",
            },
            retry_after_s=0,
        )


def _message(answer: Answer) -> pb.Message:
    message = answer.message()
    return pb.Message(
        role=pb.ROLE_ASSISTANT,
        content=message.content,
        tool_calls=[pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json) for c in message.tool_calls],
        reasoning=[
            pb.Reasoning(text=r.text, signature=r.signature, redacted_data=r.redacted_data) for r in message.reasoning
        ],
    )


def _total_usage(records: list[AttemptRecord]) -> pb.Usage:
    return to_proto.usage(total_usage(records))


class ProviderServicer(provider_service_pb2_grpc.ProviderServiceServicer):
    def __init__(self, gateway: Gateway, lifecycle: Lifecycle) -> None:
        self.gateway = gateway
        self.lifecycle = lifecycle

    async def ListProviders(
        self, request: provider_service_pb2.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> provider_service_pb2.ListProvidersResponse:
        async with BOUNDARY(context, "ListProviders"):
            providers = providers_view.all_providers(self.gateway)
        return provider_service_pb2.ListProvidersResponse(providers=providers)

    async def WatchProviders(
        self, request: provider_service_pb2.WatchProvidersRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Current state of each provider, then each change; ends at once when the server begins to stop."""
        async with BOUNDARY(context, "WatchProviders"):
            await self._watch(context)

    async def _watch(self, context: grpc.aio.ServicerContext) -> None:
        queue = self.gateway.health.watch()
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self.lifecycle.stopping.wait())
        last: dict[str, tuple[object, ...]] = {}
        try:
            for provider in providers_view.all_providers(self.gateway):
                last[provider.name] = providers_view.state_key(provider)
                await context.write(provider_service_pb2.WatchProvidersResponse(provider=provider))
            while not stopping.done():
                name = await _next_change(queue, stopping)
                if name is None:
                    return
                provider = providers_view.one_provider(self.gateway, name)
                if providers_view.state_key(provider) != last.get(name):
                    last[name] = providers_view.state_key(provider)
                    await context.write(provider_service_pb2.WatchProvidersResponse(provider=provider))
        finally:
            self.gateway.health.unwatch(queue)
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping


async def _next_change(queue: asyncio.Queue[str], stopping: asyncio.Future[Any]) -> str | None:
    getter: asyncio.Future[Any] = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait([getter, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Also when the caller leaves (this task is cancelled in the wait): a getter left pending would be
        # destroyed later with "Task was destroyed but it is pending!", logged under another call's id.
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        name: str = getter.result()
        return name
    return None


def add_to_server(server: grpc.aio.Server, gateway: Gateway, lifecycle: Lifecycle) -> None:
    chat_service_pb2_grpc.add_ChatServiceServicer_to_server(ChatServicer(gateway, lifecycle.drain), server)
    provider_service_pb2_grpc.add_ProviderServiceServicer_to_server(ProviderServicer(gateway, lifecycle), server)
