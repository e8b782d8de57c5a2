"""The framing corpus: hostile or broken HTTP/1.1 responses, through the real adapters and SDKs, on both stacks.

A raw server answers the first request with one hostile sequence; the second request (same adapter, same
pool) gets a well-framed answer. For every sequence and both `http_client` settings:
  - the first call yields the correct answer or a clean ProviderError of a kind that fails over;
  - the connection that carried it is closed by the client, and the second request arrives on another;
  - the second call's answer is exactly its own, never a byte of the first response ("LEAK");
  - memory stays bounded where the upstream sends a lot (a 1 GiB chunk, a response head over 1 MiB).
"""

from __future__ import annotations

import asyncio
import logging
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from gateway_service import config
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest, Message, ProviderEvent, Role, TextDelta
from gateway_service.providers import ProviderAdapter, create_adapter
from gateway_service.providers.streaming import provider_deadlines
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Upstream, kinds, serving, stream, text_of, user
from tests.gateway.rawhttp import (
    CLOSE,
    RESET,
    Answer,
    chunk,
    head,
    raw_upstream,
    sse_body,
    with_length,
)
from tests.gateway.test_provider_streams import config_for

FIRST, LEAK, SECOND = "FIRST", "LEAK", "SECOND"
# Kinds a framing failure may take: each fails over to the next candidate.
FAILOVER_KINDS = {
    FailureKind.CONNECTION_ERROR,
    FailureKind.MALFORMED_RESPONSE,
    FailureKind.TRUNCATED,
    FailureKind.TIMEOUT,
    FailureKind.SERVER_ERROR,
}
MiB = 1 << 20


@dataclass(frozen=True)
class Case:
    make: Callable[[Callable[[str], bytes]], Answer]  # (text -> SSE body) -> the first request's answer
    answer_ok: bool = False  # True: a correct answer (FIRST) is as good as an error
    memory_bound: int = 0  # bytes the first call may allocate at its peak (0: not measured)


def smuggled(body: Callable[[str], bytes]) -> bytes:
    """A whole second response, sent where only the first belongs: on reuse it would answer the next caller."""
    return with_length(body(LEAK))


def pieces(start: bytes, piece: bytes, count: int, end: bytes) -> Iterator[bytes]:
    """`start`, `piece` `count` times, `end`: sent one by one, never held whole by the server."""
    yield start
    for _ in range(count):
        yield piece
    yield end


def chunked(data: bytes) -> bytes:
    return chunk(data) + b"0\r\n\r\n"


CORPUS: dict[str, Case] = {
    # Both framings: Transfer-Encoding wins (RFC 9112 6.3), but the connection must not be reused.
    "chunked-and-content-length-then-bytes": Case(
        lambda b: Answer(head(b"transfer-encoding: chunked", b"content-length: 5") + chunked(b(FIRST)) + smuggled(b)),
        answer_ok=True,
    ),
    "two-different-content-lengths": Case(
        lambda b: Answer(
            head(b"content-length: %d" % len(b(FIRST)), b"content-length: %d" % (len(b(FIRST)) + 7))
            + b(FIRST)
            + smuggled(b)
        )
    ),
    "chunk-size-plus-sign": Case(
        lambda b: Answer(head(b"transfer-encoding: chunked") + chunk(b(FIRST), b"+%x" % len(b(FIRST))) + b"0\r\n\r\n")
    ),
    "chunk-size-0x": Case(
        lambda b: Answer(head(b"transfer-encoding: chunked") + chunk(b(FIRST), b"0x%x" % len(b(FIRST))) + b"0\r\n\r\n")
    ),
    "chunk-size-underscore": Case(
        lambda b: Answer(head(b"transfer-encoding: chunked") + chunk(b"x" * 16, b"1_0") + chunked(b(FIRST)))
    ),
    # aiohttp refuses it; h11 (httpx) discards the two bytes unchecked and answers: the content is right.
    "no-crlf-after-chunk-data": Case(
        lambda b: Answer(head(b"transfer-encoding: chunked") + chunk(b(FIRST), end=b"XY") + b"0\r\n\r\n" + smuggled(b)),
        answer_ok=True,
    ),
    # Not "chunked" at all: an unknown coding, whose body runs to the close (RFC 9112 6.3), or is refused.
    "xchunkedx": Case(
        lambda b: Answer(head(b"transfer-encoding: xchunkedx") + chunked(b(FIRST)) + smuggled(b), then=CLOSE),
        answer_ok=True,
    ),
    "unknown-transfer-coding": Case(
        lambda b: Answer(head(b"transfer-encoding: frobnicate") + b(FIRST) + smuggled(b), then=CLOSE), answer_ok=True
    ),
    "chunked-not-last": Case(
        lambda b: Answer(head(b"transfer-encoding: chunked, gzip") + chunked(b(FIRST)) + smuggled(b), then=CLOSE),
        answer_ok=True,
    ),
    "bytes-after-a-complete-response": Case(lambda b: Answer(with_length(b(FIRST)) + smuggled(b)), answer_ok=True),
    # The next response arrives on the idle pooled connection before the next request was sent.
    "response-before-the-request": Case(
        lambda b: Answer(with_length(b(FIRST)), after_idle=smuggled(b)), answer_ok=True
    ),
    # A 1 GiB chunk: its data must stream through (4 MiB of SSE comments, then the answer), not be buffered.
    "chunk-of-1-GiB": Case(
        lambda b: Answer(
            lambda: pieces(
                head(b"transfer-encoding: chunked") + b"40000000\r\n",
                (b": " + b"p" * 1020 + b"\n\n") * 64,
                64,
                b(FIRST),
            )
        ),
        answer_ok=True,
        memory_bound=2 * MiB,
    ),
    "response-head-over-1-MiB": Case(
        lambda b: Answer(lambda: pieces(head()[:-2] + b"x-pad: ", b"a" * 65536, 32, b"\r\n\r\n" + b(FIRST))),
        memory_bound=2 * MiB,
    ),
    # Both parsers read a well-framed "HTTP/2.0" response as HTTP/1 (llhttp and h11 take any one-digit major);
    # the httpx stack reports the version and the gateway refuses it, aiohttp does not report it: its answer
    # is correct, and the connection must still not be reused.
    "status-line-http-2.0": Case(
        lambda b: Answer(head(b"content-length: %d" % len(b(FIRST)), status=b"HTTP/2.0 200 OK") + b(FIRST)),
        answer_ok=True,
    ),
    "status-line-not-http": Case(
        lambda b: Answer(head(b"content-length: %d" % len(b(FIRST)), status=b"ICY 200 OK") + b(FIRST))
    ),
    "reset-halfway-through-a-chunk": Case(
        lambda b: Answer(
            head(b"transfer-encoding: chunked") + b"%x\r\n" % len(b(FIRST)) + b(FIRST)[: len(b(FIRST)) // 2], then=RESET
        )
    ),
}

STACKS = ["aiohttp", "httpx"]
KINDS = ["openai_compatible", "anthropic", "gemini", "cohere"]


def request() -> ChatRequest:
    return ChatRequest(model="m", messages=(Message(Role.USER, "hi"),), request_id="framing")


async def call(adapter: ProviderAdapter) -> tuple[str, ProviderError | None]:
    events: list[ProviderEvent] = []
    try:
        async for event in adapter.stream(request(), "m", deadlines=provider_deadlines(adapter.config, 5.0)):
            events.append(event)
    except ProviderError as error:
        return "".join(e.text for e in events if isinstance(e, TextDelta)), error
    return "".join(e.text for e in events if isinstance(e, TextDelta)), None


async def run_case(case: Case, kind: str, stack: str) -> None:
    def body(text: str) -> bytes:
        return sse_body(kind, text)

    def answer(n: int) -> Answer:
        return case.make(body) if n == 0 else Answer(with_length(body(SECOND)))

    async with raw_upstream(answer) as (upstream, port):
        adapter = create_adapter(config_for(kind, f"http://127.0.0.1:{port}", stack, first_token_timeout_s=3.0))
        try:
            if case.memory_bound:
                tracemalloc.start()
            try:
                text, error = await call(adapter)
                if case.memory_bound:
                    peak = tracemalloc.get_traced_memory()[1]
                    assert peak < case.memory_bound, f"the first call allocated {peak} bytes at its peak"
            finally:
                tracemalloc.stop()
            if error is None:
                assert case.answer_ok and text == FIRST, f"answered {text!r} instead of failing"
            else:
                assert error.kind in FAILOVER_KINDS, error
                assert LEAK not in text
            if upstream.idle_data_sent.is_set() or case.make(body).after_idle:
                await asyncio.wait_for(upstream.idle_data_sent.wait(), 5)
                for _ in range(5):  # let the client's loop see the unsolicited bytes, as it would between calls
                    await asyncio.sleep(0)

            second, second_error = await call(adapter)
            assert second_error is None, second_error
            assert second == SECOND  # its own answer, whole, and nothing of the first response
            first_conn, second_conn = upstream.conn_of(0), upstream.conn_of(1)
            assert second_conn is not first_conn, "the connection that carried the hostile response was reused"
            # Closed by the client (or already by the server's reset/close), not left open in the pool.
            await asyncio.wait_for(first_conn.closed.wait(), 5)
        finally:
            await adapter.aclose()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(CORPUS))
async def test_framing_corpus(name: str, kind: str, stack: str) -> None:
    await run_case(CORPUS[name], kind, stack)


async def test_end_to_end_a_hostile_upstream_fails_over_and_leaks_nothing(
    sim: SimulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """Through a served gateway: the hostile provider's mis-framed answer fails over to the simulator like any
    other failure, and the next call that reaches the hostile provider gets its own answer on a new connection."""
    hostile = CORPUS["two-different-content-lengths"]

    def answer(n: int) -> Answer:
        return (
            hostile.make(lambda t: sse_body("openai_compatible", t))
            if n == 0
            else Answer(with_length(sse_body("openai_compatible", SECOND)))
        )

    async with raw_upstream(answer) as (upstream, port):
        data = {
            "providers": [
                Upstream("h", "openai_compatible", "m", patient=True).entry(f"http://127.0.0.1:{port}"),
                Upstream("f", "openai", "fallback", patient=True).entry(sim.base_url),
            ],
            "routes": {"default": ["h/m", "f/fallback"]},
        }
        cfg = config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})
        async with serving(sim, cfg) as h:
            with caplog.at_level(logging.INFO, logger="gateway_service.upstream"):
                first = await stream(h, pb.StreamChatRequest(model="default", messages=user("hi"), request_id="e2e-1"))
                second = await stream(h, pb.StreamChatRequest(model="default", messages=user("hi"), request_id="e2e-2"))
    assert kinds(first)[:3] == ["started", "failover", "started"]
    assert first[1].failover.reason == pb.FAILURE_REASON_CONNECTION_ERROR
    assert (first[0].started.provider, first[2].started.provider) == ("h", "f")
    assert LEAK not in text_of(first) and text_of(first)  # the simulator's answer
    assert (second[0].started.provider, text_of(second)) == ("h", SECOND)
    assert upstream.conn_of(1) is not upstream.conn_of(0)
    # The access log: one line per upstream request, its outcome as the gateway saw it.
    lines = [(r.provider, r.outcome) for r in caplog.records if r.name == "gateway_service.upstream"]
    assert lines == [("h", "connection_error"), ("f", "ok"), ("h", "ok")]


@pytest.mark.parametrize("name", ["bytes-after-a-complete-response", "response-before-the-request", "chunk-size-0x"])
def test_the_same_on_uvloop(name: str) -> None:
    """`serve` runs on uvloop, whose transports differ from asyncio's in details: a few cases again there."""
    import uvloop

    uvloop.run(run_case(CORPUS[name], "openai_compatible", "aiohttp"))
