"""A hostile upstream over real HTTP: endless, oversized or poisoned answers in each provider's wire format,
made as they are sent (tests/gateway/rawhttp.py serves them), read by the real SDK adapters.

`read` drives an adapter the way the pipeline does: after each event the reading task suspends elsewhere
(the pipeline writes to its caller), so a fast upstream always has bytes buffered when the next read starts.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Iterator
from dataclasses import replace

from gateway_service.domain.failures import ProviderError
from gateway_service.domain.request import ChatRequest, Message, ProviderEvent, Role
from gateway_service.providers import ProviderAdapter, create_adapter
from gateway_service.providers.streaming import provider_deadlines
from tests.gateway.rawhttp import chunk, head, sse_frames
from tests.gateway.test_provider_streams import config_for

# The SDKs load at collection, not inside the first test that makes an adapter (create_adapter imports an SDK
# when first used): anthropic's import alone takes seconds on a loaded machine, which no test here is about.
importlib.import_module("gateway_service.providers.anthropic")
importlib.import_module("gateway_service.providers.cohere")
importlib.import_module("gateway_service.providers.gemini")
importlib.import_module("gateway_service.providers.openai")

KINDS = ["openai_compatible", "anthropic", "gemini", "cohere"]
STACKS = ["aiohttp", "httpx"]
# How many of the simulator's frames open an answer before its first text (role, message_start, block start).
OPENING = {"openai_compatible": 1, "anthropic": 3, "gemini": 0, "cohere": 2}

Body = Callable[[], Iterator[bytes]]


def opening(kind: str) -> bytes:
    return b"".join(sse_frames(kind, "x")[: OPENING[kind]])


def text_frame(kind: str, text: str) -> bytes:
    return sse_frames(kind, text)[OPENING[kind]]


def endless(kind: str, frame: bytes, *, start: bytes | None = None) -> Body:
    """An SSE answer that never ends, `frame` after `start` (the opening frames), sent as fast as it is read."""

    def pieces() -> Iterator[bytes]:
        yield head(b"transfer-encoding: chunked")
        first = opening(kind) if start is None else start
        if first:
            yield chunk(first)
        batch = chunk(frame * max(1, 16_384 // len(frame)))
        while True:
            yield batch

    return pieces


def adapter(kind: str, port: int, stack: str, **overrides: float) -> ProviderAdapter:
    return create_adapter(config_for(kind, f"http://127.0.0.1:{port}", stack, **overrides))


def with_transport(kind: str, port: int, stack: str, timeout_s: float = 5.0, **transport: object) -> ProviderAdapter:
    config = config_for(kind, f"http://127.0.0.1:{port}", stack, timeout_s=timeout_s)
    return create_adapter(replace(config, transport=replace(config.transport, **transport)))  # type: ignore[arg-type]


async def read(
    provider: ProviderAdapter, deadline_s: float = 5.0, request: ChatRequest | None = None
) -> tuple[list[ProviderEvent], ProviderError | None]:
    """Every event of one attempt and the ProviderError it ended with (None: it ended well)."""
    events: list[ProviderEvent] = []
    request = request or ChatRequest(model="m", messages=(Message(Role.USER, "hi"),), request_id="t")
    try:
        async for event in provider.stream(request, "m", deadlines=provider_deadlines(provider.config, deadline_s)):
            events.append(event)
            await asyncio.sleep(0)  # the pipeline's write to its caller: the reader waits elsewhere
    except ProviderError as error:
        return events, error
    finally:
        await provider.aclose()
    return events, None


class Sent:
    """Counts the bytes a body generator produced: how far the gateway let the upstream go."""

    def __init__(self) -> None:
        self.bytes = 0

    def body(self, status: bytes, content_type: bytes, first: bytes, repeated: bytes) -> Body:
        """A chunked response: `first`, then `repeated` forever."""

        def pieces() -> Iterator[bytes]:
            yield head(b"transfer-encoding: chunked", status=status).replace(b"text/event-stream", content_type)
            if first:
                yield chunk(first)
            batch = chunk(repeated * max(1, 16_384 // len(repeated)))
            while True:
                self.bytes += len(batch)
                yield batch

        return pieces
