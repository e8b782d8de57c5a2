"""An over-cap upstream fails over through the whole gateway (issue #18, point 4): the chat is answered by the
next provider, and the failover event names the cap, scrubbed and bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import yaml

from gateway_service import config
from llm_simulator import SimulatorHandle, start_simulator
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Upstream, serving, stream, text_of, user
from tests.gateway.rawhttp import Answer, raw_upstream
from tests.hostile.upstream import Sent, endless, opening, text_frame

pytestmark = pytest.mark.timeout(30)
KIND = "openai_compatible"


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    handle = await start_simulator()
    yield handle
    await handle.close()


async def test_an_endless_line_fails_over_to_the_next_provider(sim: SimulatorHandle) -> None:
    sent = Sent()
    endless = sent.body(b"HTTP/1.1 200 OK", b"text/event-stream", opening(KIND) + b'data: {"id":"', b"a")
    async with raw_upstream(lambda _: Answer(endless)) as (_, port):
        hostile = Upstream("hostile", KIND, "m", patient=True).entry(f"http://127.0.0.1:{port}")
        hostile["max_sse_line_bytes"] = 64 * 1024
        good = Upstream("good", "anthropic", "claude", patient=True).entry(sim.base_url)
        data = {"providers": [hostile, good], "routes": {"default": ["hostile/m", "good/claude"]}}
        cfg = config.parse(yaml.safe_load(yaml.safe_dump(data)), source="test", env={"SIM_KEY": "sk-sim-key-1234"})
        async with serving(sim, cfg) as h:
            events = await stream(h, pb.StreamChatRequest(model="default", messages=user("one two")))
    failovers = [e.failover for e in events if e.HasField("failover")]
    assert len(failovers) == 1 and events[-1].HasField("done"), events
    assert "an event-stream line over 65536 bytes (max_sse_line_bytes)" in failovers[0].message
    assert "one two" in text_of(events)
    assert sent.bytes < 16 << 20


async def test_empty_chunks_after_the_first_text_end_the_chat_at_the_idle_timeout(sim: SimulatorHandle) -> None:
    """Through the whole gateway: text, then empty deltas as fast as they are read; the chat ends at the
    provider's idle timeout (0.3 s), long before its first-token or total timeout (30 s)."""
    endless_empty = endless(KIND, text_frame(KIND, ""), start=opening(KIND) + text_frame(KIND, "one "))
    async with raw_upstream(lambda _: Answer(endless_empty)) as (_, port):
        timeouts = {"first_token_timeout_s": 30.0, "idle_timeout_s": 0.3, "timeout_s": 30.0}
        hostile = Upstream("hostile", KIND, "m", timeouts=timeouts).entry(f"http://127.0.0.1:{port}")
        data = {"providers": [hostile], "routes": {"default": ["hostile/m"]}}
        cfg = config.parse(yaml.safe_load(yaml.safe_dump(data)), source="test", env={"SIM_KEY": "sk-sim-key-1234"})
        async with serving(sim, cfg) as h:
            request = pb.StreamChatRequest(model="default", messages=user("hi"))
            events: list[pb.StreamChatResponse] = []
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for event in h.chat.StreamChat(request, timeout=20):
                    events.append(event)
    assert text_of(events) == "one "
    assert "no output for 0.3s (idle timeout)" in (caught.value.details() or ""), caught.value
