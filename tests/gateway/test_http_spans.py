"""Each provider HTTP request is one CLIENT span (providers/http_spans.py), under every SDK on both HTTP stacks:
a child of the span current when the attempt opens, ended when the body is read or closed (not at the
response head), with the status code, or the failure's kind when no response came; never a secret in it;
and no hook at all without a tracer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx2
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway_service.app import build_gateway
from gateway_service.domain.failures import FailureKind
from gateway_service.domain.request import Finished
from gateway_service.providers import ProviderAdapter, create_adapter
from gateway_service.providers import openai as openai_adapter
from gateway_service.providers.bounds import ask_identity
from gateway_service.providers.http import TransportSettings, client_options, refuse_unframed
from gateway_service.providers.http_spans import redacted_url
from llm_simulator import SimulatorHandle
from servicekit.tracing import Tracing
from tests.gateway.e2e_helpers import Upstream, gateway_config
from tests.gateway.test_provider_streams import (
    ANSWER,
    KEY,
    chat,
    collect,
    collect_failure,
    config_for,
    open_stream,
    words,
)

KINDS = ("openai", "anthropic", "gemini", "cohere")
STACKS = ("aiohttp", "httpx")


class Traced:
    """An adapter whose HTTP client traces into an in-memory exporter."""

    def __init__(self, kind: str, base_url: str, stack: str, **overrides: float) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("test")
        config = config_for(kind, base_url, stack, **overrides)
        self.adapter: ProviderAdapter = create_adapter(
            replace(config, transport=replace(config.transport, tracer=self.tracer))
        )

    def http_spans(self) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if (s.attributes or {}).get("http.request.method")]


@pytest.fixture(params=[(k, s) for k in KINDS for s in STACKS], ids=lambda p: f"{p[0]}-{p[1]}")
async def traced(request: pytest.FixtureRequest, sim: SimulatorHandle) -> AsyncIterator[Traced]:
    kind, stack = request.param
    made = Traced(kind, sim.base_url, stack)
    yield made
    await made.adapter.aclose()


def no_secret_in(span: ReadableSpan) -> bool:
    return not any(KEY in str(value) for value in (span.attributes or {}).values())


async def test_the_span_lasts_until_the_body_is_closed_not_the_head(traced: Traced, sim: SimulatorHandle) -> None:
    with traced.tracer.start_as_current_span("chat sim-model") as attempt:
        stream = open_stream(traced.adapter, chat("one two three [[fault:stall at=2]]"))
        assert [await anext(stream), await anext(stream)] == words(ANSWER)[:2]
    assert traced.http_spans() == []  # the head came long ago; the body is still open
    await stream.aclose()
    (span,) = traced.http_spans()
    assert span.name == "POST" and span.kind is SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == attempt.get_span_context().span_id
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "POST" and attributes["http.response.status_code"] == 200
    assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", sim.port)
    assert attributes["network.protocol.version"] == "1.1" and "error.type" not in attributes
    url = str(attributes["url.full"])
    assert url.startswith(f"{sim.base_url}/") and all(v == "REDACTED" for v in httpx2.URL(url).params.values())
    assert span.status.status_code is StatusCode.UNSET and no_secret_in(span)


async def test_a_body_read_to_its_end_ends_the_span(traced: Traced) -> None:
    events = await collect(traced.adapter, chat("one two"))
    assert isinstance(events[-1], Finished)
    (span,) = traced.http_spans()
    assert (span.attributes or {})["http.response.status_code"] == 200 and span.status.is_ok


async def test_an_error_status_is_the_error_type(traced: Traced) -> None:
    _, error = await collect_failure(traced.adapter, chat("hi [[fault:429]]"))
    assert error.kind is FailureKind.RATE_LIMITED
    (span,) = traced.http_spans()
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 429 and attributes["error.type"] == "429"
    assert span.status.status_code is StatusCode.ERROR and no_secret_in(span)


async def test_a_body_cut_short_is_an_error_of_its_exception_type(traced: Traced) -> None:
    await collect_failure(traced.adapter, chat("one two three [[fault:disconnect at=2]]"))
    (span,) = traced.http_spans()
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 200 and span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] in ("ReadError", "RemoteProtocolError")


@asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[str]:
    """An upstream that reads the request and sends `answer` (nothing at all when empty), then waits."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in writers:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


UNFRAMED = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: gzip\r\n\r\n"


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("kind", KINDS)
async def test_a_request_without_response_ends_with_the_failure(kind: str, stack: str) -> None:
    """Refused connection, no head before the first-token limit, a head the client refuses: the span ends with
    the attempt's failure kind (drive() ends it: httpx2 has no hook for a request that fails)."""
    async with raw_server(b"") as silent, raw_server(UNFRAMED) as unframed:
        cases = [
            (Traced(kind, "http://127.0.0.1:1", stack), {FailureKind.CONNECTION_ERROR}),  # nothing listens on 1
            (Traced(kind, silent, stack, first_token_timeout_s=0.2), {FailureKind.TIMEOUT}),
            (Traced(kind, unframed, stack), {FailureKind.MALFORMED_RESPONSE, FailureKind.CONNECTION_ERROR}),
        ]
        for traced, kinds in cases:
            try:
                _, error = await collect_failure(traced.adapter, chat("hi"))
            finally:
                await traced.adapter.aclose()
            assert error.kind in kinds
            (span,) = traced.http_spans()
            attributes = dict(span.attributes or {})
            assert attributes["error.type"] == error.kind.value and "http.response.status_code" not in attributes
            assert span.status.status_code is StatusCode.ERROR and span.end_time is not None


@pytest.mark.parametrize("stack", STACKS)
async def test_a_plain_request_is_traced_and_keeps_its_elapsed(stack: str, sim: SimulatorHandle) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = openai_adapter.http_client(TransportSettings(http_client=stack, tracer=provider.get_tracer("t")))
    async with client:
        response = await client.get(f"{sim.base_url}/no-such-path?key={KEY}")
    assert response.elapsed.total_seconds() >= 0  # httpx2 reads it from the wrapped body
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "GET" and attributes["http.response.status_code"] == response.status_code
    assert attributes["url.full"] == f"{sim.base_url}/no-such-path?key=REDACTED"


def test_url_full_keeps_no_credentials_or_query_values() -> None:
    url = httpx2.URL(f"https://user:{KEY}@api.example:8443/v1/x?key={KEY}&alt=sse&alt=json")
    redacted = redacted_url(url)
    assert redacted == "https://REDACTED:REDACTED@api.example:8443/v1/x?key=REDACTED&alt=REDACTED&alt=REDACTED"
    assert redacted_url(httpx2.URL("http://h/p")) == "http://h/p"


async def test_no_hook_without_a_tracer(sim: SimulatorHandle) -> None:
    hooks = client_options(TransportSettings())["event_hooks"]
    assert hooks["request"] == [ask_identity] and hooks["response"][0] is refuse_unframed
    assert len(hooks["response"]) == 3  # and the caps (providers/bounds.py), and the headers to headroom
    traced = client_options(TransportSettings(tracer=TracerProvider().get_tracer("t")))["event_hooks"]
    assert len(traced["request"]) == 2 and len(traced["response"]) == 4
    cfg = gateway_config(sim.base_url, [Upstream("p", "openai", "m")], env={"SIM_KEY": KEY})
    for tracing, on in ((Tracing(), False), (Tracing(TracerProvider()), True)):
        gateway = build_gateway(cfg, tracing=tracing)
        await gateway.close()
        assert (gateway.adapters["p"].config.transport.tracer is not None) is on
