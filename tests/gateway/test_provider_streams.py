"""Every adapter against the simulator over real HTTP: happy streams and each fault at each point.

The official SDKs run unpatched; faults are requested with `[[fault:...]]` markers in the
prompt and the simulator's observations confirm what happened on the wire.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace

import pytest

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import (
    ChatRequest,
    Finished,
    FinishReason,
    Message,
    ProviderEvent,
    ReasoningDelta,
    Role,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from gateway_service.providers import ProviderAdapter, ProviderConfig, create_adapter
from gateway_service.providers.http import TransportSettings
from gateway_service.providers.streaming import provider_deadlines
from llm_simulator import SimulatorHandle

TYPES = ["openai", "openai_compatible", "anthropic", "gemini", "cohere"]
# An idle budget that chunks sent back to back (the simulator's default) always beat, on a busy machine too
# (make test runs two workers; a full GC or a descheduled process pauses for tens of ms): short budgets are for
# the timeouts under test, and the other chunks must never trip them.
BURST_GAP_S = 0.25
KEY = "sk-test-0123456789abcdefSECRET"


def config_for(kind: str, base_url: str, http_client: str = "aiohttp", **overrides: float) -> ProviderConfig:
    root = base_url + ("/v1" if kind.startswith("openai") else "")
    config = ProviderConfig(
        kind,
        kind,
        root,
        KEY,
        api_version="v1beta" if kind == "gemini" else None,
        connect_timeout_s=5.0,  # a local connect: generous, no test here waits for it (test_connect_timeout does)
        first_token_timeout_s=2.0,
        idle_timeout_s=2.0,
        timeout_s=5.0,
        transport=TransportSettings(http_client=http_client),
    )
    return replace(config, **overrides)


class Adapters:
    """Adapters by (type, timeouts), made once per module: SDK clients take tens of ms to build."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._made: dict[tuple[str, str, tuple[tuple[str, float], ...]], ProviderAdapter] = {}

    def get(self, kind: str, http_client: str = "aiohttp", **overrides: float) -> ProviderAdapter:
        key = (kind, http_client, tuple(sorted(overrides.items())))
        if key not in self._made:
            self._made[key] = create_adapter(config_for(kind, self.base_url, http_client, **overrides))
        return self._made[key]

    async def close(self) -> None:
        for made in self._made.values():
            await made.aclose()


@pytest.fixture(scope="module")
async def adapters(sim: SimulatorHandle) -> AsyncIterator[Adapters]:
    made = Adapters(sim.base_url)
    yield made
    await made.close()


# Every adapter on both HTTP stacks under the SDK: aiohttp (the default) and httpx2's own
# (`http_client: httpx`), which must behave alike down to the failure kinds.
@pytest.fixture(params=[(t, h) for t in TYPES for h in ("aiohttp", "httpx")], ids=lambda p: f"{p[0]}-{p[1]}")
def adapter(request: pytest.FixtureRequest, adapters: Adapters) -> ProviderAdapter:
    kind, http_client = request.param
    return adapters.get(kind, http_client)


def chat(text: str, *extra: Message) -> ChatRequest:
    return ChatRequest(model="m", messages=(Message(Role.USER, text), *extra), request_id="t")


def open_stream(
    adapter: ProviderAdapter, request: ChatRequest, deadline_s: float = 5.0
) -> AsyncGenerator[ProviderEvent, None]:
    """The adapter on its own: its provider's timeouts, and `deadline_s` for the whole attempt."""
    return adapter.stream(request, "sim-model", deadlines=provider_deadlines(adapter.config, deadline_s))


async def collect(adapter: ProviderAdapter, request: ChatRequest, deadline_s: float = 5.0) -> list[ProviderEvent]:
    return [event async for event in open_stream(adapter, request, deadline_s)]


async def collect_failure(
    adapter: ProviderAdapter, request: ChatRequest, deadline_s: float = 5.0
) -> tuple[list[ProviderEvent], ProviderError]:
    events: list[ProviderEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in open_stream(adapter, request, deadline_s):
            events.append(event)
    return events, info.value


def words(text: str) -> list[TextDelta]:
    return [TextDelta(w) for w in re.findall(r"\s*\S+", text)]


ANSWER = "Hello from the simulator. You said: one two three"


async def test_happy_text_stream(adapter: ProviderAdapter, sim: SimulatorHandle) -> None:
    events = await collect(adapter, chat("one two three"))
    assert events[:-2] == words(ANSWER)
    usage, finished = events[-2:]
    assert usage == UsageReport(input_tokens=3, output_tokens=len(words(ANSWER)))
    assert isinstance(finished, Finished) and finished.reason is FinishReason.STOP
    assert finished.upstream_request_id.startswith(("req_sim", "chatcmpl-", "msg_"))
    assert sim.simulator.observations[-1].outcome == "completed"


async def test_happy_tool_call_stream(adapter: ProviderAdapter) -> None:
    events = await collect(adapter, chat('weather? [[call:get_weather {"city": "Paris"}]]'))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert {c.index for c in calls} == {0}
    assert calls[0].name == "get_weather" and calls[0].id
    assert "".join(c.arguments_json for c in calls) == '{"city": "Paris"}'
    assert not [e for e in events if isinstance(e, TextDelta)]
    assert isinstance(events[-2], UsageReport)
    assert events[-1] == Finished(FinishReason.TOOL_CALLS, events[-1].upstream_request_id)  # type: ignore[union-attr]


async def test_two_parallel_tool_calls(adapter: ProviderAdapter) -> None:
    events = await collect(adapter, chat('[[call:a {"x": 1}]] [[call:b {"y": 2}]]'))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    by_index = {i: "".join(c.arguments_json for c in calls if c.index == i) for i in (0, 1)}
    assert by_index == {0: '{"x": 1}', 1: '{"y": 2}'}
    assert [c.name for c in calls if c.name] == ["a", "b"]


async def test_reasoning_stream(adapter: ProviderAdapter) -> None:
    events = await collect(adapter, chat("[[think:first I think]] [[reply:done]]"))
    reasoning = [e for e in events if isinstance(e, ReasoningDelta)]
    assert "".join(r.text for r in reasoning) == "first I think"
    if adapter.config.type == "anthropic":
        assert reasoning[-1].signature.startswith("sig_")
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("done")]
    # Reasoning comes before the answer.
    assert events.index(reasoning[0]) < events.index(TextDelta("done"))


async def test_content_filter_finishes_with_that_reason(adapter: ProviderAdapter) -> None:
    events = await collect(adapter, chat("one two three [[fault:filter]]"))
    assert events[:-2] == words(ANSWER)[:4]
    # Cohere v2 has no content-filter finish reason: a filtered answer just ends (llm_simulator/wire_cohere.py).
    expected = FinishReason.STOP if adapter.config.type == "cohere" else FinishReason.CONTENT_FILTER
    assert isinstance(events[-1], Finished) and events[-1].reason is expected


async def test_max_tokens_finishes_with_length(adapter: ProviderAdapter) -> None:
    events = await collect(adapter, replace(chat("one two three"), max_output_tokens=3))
    assert events[:-2] == words(ANSWER)[:3]
    assert isinstance(events[-1], Finished) and events[-1].reason is FinishReason.LENGTH


# (fault, expected kind per type): status faults arrive before any output.
STATUS_FAULTS = {
    "429 retry_after=2": {"*": FailureKind.RATE_LIMITED},
    "quota": {"*": FailureKind.QUOTA_EXHAUSTED},
    "401": {"*": FailureKind.AUTH_FAILED},
    "403": {"*": FailureKind.AUTH_FAILED},
    "400": {"*": FailureKind.INVALID_REQUEST},
    "context": {"*": FailureKind.CONTEXT_TOO_LONG},
    "529": {"*": FailureKind.OVERLOADED},
    "500": {"*": FailureKind.SERVER_ERROR},
    "502": {"*": FailureKind.SERVER_ERROR},
    "503": {"*": FailureKind.OVERLOADED},
    "504": {"*": FailureKind.TIMEOUT},
    "404": {"*": FailureKind.AUTH_FAILED},
}


@pytest.mark.parametrize("fault", list(STATUS_FAULTS))
async def test_status_faults(adapter: ProviderAdapter, sim: SimulatorHandle, fault: str) -> None:
    before = len(sim.simulator.observations)
    events, error = await collect_failure(adapter, chat(f"hi [[fault:{fault}]]"))
    assert events == []
    assert error.kind is STATUS_FAULTS[fault]["*"], error
    assert KEY not in error.message and KEY[:12] not in error.message
    # SDK retries are off: exactly one HTTP request per attempt.
    assert len(sim.simulator.observations) == before + 1


@pytest.mark.parametrize("spec,expected", [("retry_after=2", 2.0), ("retry_after_ms=1500", 1.5)])
async def test_rate_limit_retry_after(adapter: ProviderAdapter, spec: str, expected: float) -> None:
    _, error = await collect_failure(adapter, chat(f"hi [[fault:429 {spec}]]"))
    assert error.kind is FailureKind.RATE_LIMITED
    assert error.status_code == 429
    assert error.retry_after_s == pytest.approx(expected)


async def test_rate_limit_without_delay_has_none(adapter: ProviderAdapter) -> None:
    _, error = await collect_failure(adapter, chat("hi [[fault:429]]"))
    assert error.kind is FailureKind.RATE_LIMITED and error.retry_after_s is None


IN_STREAM_KINDS = {
    "disconnect": {"*": FailureKind.CONNECTION_ERROR},
    "truncate": {"*": FailureKind.TRUNCATED},
    "malformed": {"*": FailureKind.MALFORMED_RESPONSE},
    "error": {
        "openai": FailureKind.SERVER_ERROR,
        "openai_compatible": FailureKind.SERVER_ERROR,
        "anthropic": FailureKind.OVERLOADED,
        "gemini": FailureKind.OVERLOADED,
        "cohere": FailureKind.SERVER_ERROR,  # message-end with finish_reason ERROR
    },
    "stall": {"*": FailureKind.TIMEOUT},
}
N_WORDS = len(words(ANSWER))


@pytest.mark.parametrize("at", [0, 3, N_WORDS])
@pytest.mark.parametrize("fault", list(IN_STREAM_KINDS))
async def test_in_stream_faults_at_each_point(
    sim: SimulatorHandle, adapters: Adapters, kind_name: str, fault: str, at: int
) -> None:
    # Short timeouts only where the expected outcome is the timeout, so a busy machine cannot flake the rest:
    # a stall after a chunk ends on the idle budget. A stall before the first token ends on the first-token
    # budget, which also covers sending the request: at 0.1 s a loaded machine gave up before the simulator had
    # read it, and the check below read the previous test's observation (9 chunks), so it keeps the module's 2 s.
    short = {"idle_timeout_s": BURST_GAP_S} if fault == "stall" and at else {}
    adapter = adapters.get(kind_name, **short)
    before = len(sim.simulator.observations)
    events, error = await collect_failure(adapter, chat(f"one two three [[fault:{fault} at={at}]]"))
    expected = IN_STREAM_KINDS[fault]
    assert error.kind is expected.get(kind_name, expected.get("*")), error
    # Exactly the words before the fault, never a finish or usage: no silent truncation.
    assert events == words(ANSWER)[:at]
    if at:
        assert error.upstream_request_id.startswith("req_sim")
    [observed] = sim.simulator.observations[before:]  # this request's, not an earlier one
    await asyncio.wait_for(observed.done.wait(), 2)
    assert observed.chunks_sent == at


@pytest.fixture(params=TYPES)
def kind_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_anthropic_error_event_type_is_mapped(adapters: Adapters) -> None:
    adapter = adapters.get("anthropic")
    events, error = await collect_failure(adapter, chat("a b [[fault:error at=2 type=rate_limit_error]]"))
    assert events == words("Hello from")
    assert error.kind is FailureKind.RATE_LIMITED
    _, error = await collect_failure(adapter, chat("a b [[fault:error at=1 type=api_error]]"))
    assert error.kind is FailureKind.SERVER_ERROR


async def test_slow_first_token_times_out(sim: SimulatorHandle, adapters: Adapters, kind_name: str) -> None:
    adapter = adapters.get(kind_name, first_token_timeout_s=0.05)
    events, error = await collect_failure(adapter, chat("x [[fault:slow ms=2000]]"))
    assert events == [] and error.kind is FailureKind.TIMEOUT
    assert "first token" in error.message
    observed = sim.simulator.observations[-1]
    await asyncio.wait_for(observed.done.wait(), 2)
    assert observed.client_disconnected


async def test_slow_first_token_within_budget_succeeds(adapters: Adapters, kind_name: str) -> None:
    # The idle timeout is shorter than the wait for the first token: it only starts counting after it.
    adapter = adapters.get(kind_name, first_token_timeout_s=2.0, idle_timeout_s=BURST_GAP_S)
    events = await collect(adapter, chat("one two three [[fault:slow ms=600]]"))
    assert events[:-2] == words(ANSWER)


async def test_attempt_deadline_bounds_the_stream(adapters: Adapters, kind_name: str) -> None:
    # Shorter than the provider's budgets (2 s), long enough for the two words before the stall on a busy machine.
    events, error = await collect_failure(adapters.get(kind_name), chat("one two [[fault:stall at=2]]"), deadline_s=1.0)
    assert events == words(ANSWER)[:2]
    assert error.kind is FailureKind.TIMEOUT and "deadline" in error.message


async def test_connection_refused(kind_name: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = create_adapter(config_for(kind_name, f"http://127.0.0.1:{port}"))
    try:
        events, error = await collect_failure(adapter, chat("hi"))
    finally:
        await adapter.aclose()
    assert events == [] and error.kind is FailureKind.CONNECTION_ERROR


async def test_aclose_mid_stream_closes_upstream_at_once(sim: SimulatorHandle, adapter: ProviderAdapter) -> None:
    stream = open_stream(adapter, chat("one two three [[fault:stall at=2]]"))
    assert [await anext(stream), await anext(stream)] == words(ANSWER)[:2]
    observed = sim.simulator.observations[-1]
    await stream.aclose()
    await asyncio.wait_for(observed.done.wait(), 1)
    assert observed.client_disconnected and observed.outcome == "client_disconnected"


async def test_cancelling_the_consumer_closes_upstream(sim: SimulatorHandle, adapter: ProviderAdapter) -> None:
    got: list[ProviderEvent] = []
    first_two = asyncio.Event()

    async def consume() -> None:
        stream = open_stream(adapter, chat("one two three [[fault:stall at=2]]"))
        try:
            async for event in stream:
                got.append(event)
                if len(got) == 2:
                    first_two.set()
        finally:
            await stream.aclose()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_two.wait(), 2)
    observed = sim.simulator.observations[-1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(observed.done.wait(), 1)
    assert observed.client_disconnected
    assert got == words(ANSWER)[:2]


async def test_cancel_before_the_first_token_closes_upstream(sim: SimulatorHandle, adapter: ProviderAdapter) -> None:
    before = len(sim.simulator.observations)

    async def consume() -> list[ProviderEvent]:
        return await collect(adapter, chat("x [[fault:slow ms=5000]]"))

    task = asyncio.create_task(consume())
    observed = (await asyncio.wait_for(sim.simulator.wait_for_requests(before + 1), 2))[-1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(observed.done.wait(), 1)
    assert observed.client_disconnected and observed.chunks_sent == 0


def test_openai_compatible_servers_repeating_usage_report_it_once() -> None:
    """vLLM-style streams carry cumulative usage on every chunk; the attempt reports the last, once."""
    from openai.types.chat import ChatCompletionChunk

    from gateway_service.providers.openai_convert import ChunkTranslator

    def chunk(content: str | None, finish: str | None, completion_tokens: int) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
                "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens, "total_tokens": 0},
            }
        )

    translator = ChunkTranslator("")
    events = [*translator.feed(chunk("a", None, 1)), *translator.feed(chunk(" b", "stop", 2)), *translator.finish()]
    assert events == [TextDelta("a"), TextDelta(" b"), UsageReport(5, 2), Finished(FinishReason.STOP, "c1")]


@pytest.mark.parametrize(
    "fault,kind",
    [
        ("disconnect", FailureKind.CONNECTION_ERROR),
        ("truncate", FailureKind.TRUNCATED),
        ("malformed", FailureKind.MALFORMED_RESPONSE),
    ],
)
async def test_fault_in_the_middle_of_a_tool_call(adapter: ProviderAdapter, fault: str, kind: FailureKind) -> None:
    call = '[[call:get_weather {"city": "Paris", "unit": "celsius"}]]'
    happy = [e for e in await collect(adapter, chat(call)) if isinstance(e, ToolCallDelta)]
    events, error = await collect_failure(adapter, chat(f"{call} [[fault:{fault} at=1]]"))
    assert error.kind is kind
    # A prefix of the call's pieces and nothing else: the caller can never take it for a whole call.
    assert events == happy[: len(events)]
    assert all(isinstance(e, ToolCallDelta) for e in events)
    if adapter.config.type != "gemini":  # Gemini sends a call whole, in one chunk; the others in pieces
        assert "".join(e.arguments_json for e in events) != '{"city": "Paris", "unit": "celsius"}'


@pytest.mark.parametrize("kind_name", ["openai", "openai_compatible", "anthropic"])
@pytest.mark.parametrize("fault", ["disconnect", "truncate", "malformed", "stall"])
async def test_losing_only_what_follows_the_finish_reason_is_success(
    adapters: Adapters, kind_name: str, fault: str
) -> None:
    """Cut after OpenAI's finish_reason chunk / Anthropic's message_delta: the answer is whole."""
    adapter = adapters.get(kind_name, idle_timeout_s=BURST_GAP_S)
    events = await collect(adapter, chat(f"one two three [[fault:{fault} at=99 final=1]]"))
    assert [e for e in events if isinstance(e, TextDelta)] == words(ANSWER)
    assert isinstance(events[-1], Finished) and events[-1].reason is FinishReason.STOP
    # OpenAI's usage chunk comes after the finish chunk and is lost; Anthropic's usage rides on message_delta.
    has_usage = any(isinstance(e, UsageReport) for e in events)
    assert has_usage is (kind_name == "anthropic")
