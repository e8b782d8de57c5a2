"""The simulator speaks each provider's documented wire format, injects faults and records them.

These tests use plain httpx (not the SDKs) so they check the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from llm_simulator import SimulatorHandle


@pytest.fixture
async def http(sim: SimulatorHandle) -> AsyncIterator[httpx.AsyncClient]:
    sim.simulator.clear()
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5) as client:
        yield client


def sse_events(text: str) -> list[tuple[str | None, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        event = next((line[7:] for line in lines if line.startswith("event: ")), None)
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        events.append((event, data))
    return events


def openai_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-sim", "messages": [{"role": "user", "content": text}], "stream": True, **extra}


async def test_openai_stream_sequence(http: httpx.AsyncClient) -> None:
    body = openai_body("a b", stream_options={"include_usage": True})
    r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    events = sse_events(r.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    words = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert "".join(words) == "Hello from the simulator. You said: a b"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # The usage chunk: empty choices, right before [DONE].
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(words)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert r.headers["x-request-id"].startswith("req_sim")


async def test_openai_without_include_usage_has_no_usage_chunk(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/chat/completions", json=openai_body("a"))
    chunks = [json.loads(data) for _, data in sse_events(r.text)[:-1]]
    assert all(c["choices"] for c in chunks) and all(c["usage"] is None for c in chunks)


async def test_openai_non_streaming(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/chat/completions", json=openai_body("[[reply:fine]]", stream=False))
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "fine" and body["choices"][0]["finish_reason"] == "stop"


async def test_anthropic_stream_sequence(http: httpx.AsyncClient) -> None:
    body = {
        "model": "claude-sim",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "[[think:hmm]] [[reply:ok then]]"}],
    }
    r = await http.post("/v1/messages", json=body)
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(d) for _, d in events]
    assert all(p["type"] == name for p, name in zip(payloads, names, strict=True))
    assert payloads[1]["content_block"]["type"] == "thinking"
    assert payloads[4]["delta"]["type"] == "signature_delta"
    assert payloads[8]["delta"] == {"type": "text_delta", "text": " then"}
    assert payloads[10]["delta"]["stop_reason"] == "end_turn"
    assert r.headers["request-id"].startswith("req_sim")


async def test_anthropic_error_event_after_200(http: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "[[fault:error at=1]]"}]
    body = {"model": "c", "max_tokens": 5, "stream": True, "messages": messages}
    r = await http.post("/v1/messages", json=body)
    assert r.status_code == 200
    event, data = sse_events(r.text)[-1]
    assert event == "error" and json.loads(data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


async def test_gemini_alt_sse_stream(http: httpx.AsyncClient) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    r = await http.post("/v1beta/models/gemini-sim:streamGenerateContent", params={"alt": "sse"}, json=body)
    events = sse_events(r.text)
    assert all(e is None for e, _ in events) and "[DONE]" not in r.text
    chunks = [json.loads(d) for _, d in events]
    assert all("usageMetadata" in c and c["modelVersion"] == "gemini-sim" for c in chunks)
    assert [c["candidates"][0].get("finishReason") for c in chunks][-1] == "STOP"
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == (
        "Hello from the simulator. You said: x"
    )


async def test_gemini_generate_content(http: httpx.AsyncClient) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": '[[call:f {"a": 1}]]'}]}]}
    r = await http.post("/v1beta/models/g:generateContent", json=body)
    part = r.json()["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "f", "args": {"a": 1}}}


def cohere_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "command-a", "messages": [{"role": "user", "content": text}], "stream": True, **extra}


async def test_cohere_v2_stream_sequence(http: httpx.AsyncClient) -> None:
    r = await http.post("/v2/chat", json=cohere_body("[[think:hm]] a b"))
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream" and "[DONE]" not in r.text
    events = sse_events(r.text)
    chunks = [json.loads(d) for _, d in events]
    assert [e for e, _ in events] == [c["type"] for c in chunks]  # named by `event:` and by the JSON's type
    types = [c["type"] for c in chunks]
    assert types[0] == "message-start" and chunks[0]["id"].startswith("req_sim")
    assert types[1:4] == ["content-start", "content-delta", "content-end"]  # the thinking block first
    assert chunks[1]["delta"]["message"]["content"] == {"type": "thinking", "thinking": ""}
    deltas = [c["delta"]["message"]["content"] for c in chunks if c["type"] == "content-delta"]
    assert deltas[0] == {"thinking": "hm"}
    texts = [d["text"] for d in deltas[1:]]
    assert "".join(texts) == "Hello from the simulator. You said: a b"
    assert types[-2:] == ["content-end", "message-end"]
    end = chunks[-1]["delta"]
    assert end["finish_reason"] == "COMPLETE" and end["usage"]["billed_units"]["output_tokens"] == len(texts) + 1


async def test_cohere_tool_calls_errors_and_non_streaming(http: httpx.AsyncClient) -> None:
    r = await http.post("/v2/chat", json=cohere_body('[[call:f {"a": 1}]]'))
    chunks = [json.loads(d) for _, d in sse_events(r.text)]
    assert [c["type"] for c in chunks][1:3] == ["tool-call-start", "tool-call-delta"]
    assert chunks[1]["delta"]["message"]["tool_calls"]["function"] == {"name": "f", "arguments": ""}
    pieces = [
        c["delta"]["message"]["tool_calls"]["function"]["arguments"] for c in chunks if c["type"] == "tool-call-delta"
    ]
    assert "".join(pieces) == '{"a": 1}' and chunks[-1]["delta"]["finish_reason"] == "TOOL_CALL"
    r = await http.post("/v2/chat", json=cohere_body("[[fault:429 retry_after=2]]"))
    assert (r.status_code, r.headers["retry-after"]) == (429, "2") and set(r.json()) == {"id", "message"}
    r = await http.post("/v2/chat", json=cohere_body("one [[fault:error at=1]]"))
    end = json.loads(sse_events(r.text)[-1][1])
    assert end["type"] == "message-end" and end["delta"]["finish_reason"] == "ERROR" and end["delta"]["error"]
    r = await http.post("/v2/chat", json=cohere_body("[[reply:fine]]", stream=False))
    assert (
        r.json()["message"]["content"] == [{"type": "text", "text": "fine"}] and r.json()["finish_reason"] == "COMPLETE"
    )


async def test_rate_limit_headers_and_bodies(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/chat/completions", json=openai_body("[[fault:429 retry_after=2 retry_after_ms=1500]]"))
    assert (r.status_code, r.headers["retry-after"], r.headers["retry-after-ms"]) == (429, "2", "1500")
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    r = await http.post("/v1/chat/completions", json=openai_body("[[fault:quota]]"))
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    body = {"contents": [{"role": "user", "parts": [{"text": "[[fault:429 retry_after=3]]"}]}]}
    r = await http.post("/v1beta/models/g:streamGenerateContent?alt=sse", json=body)
    assert r.status_code == 429 and "retry-after" not in r.headers
    details = r.json()["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"} in details


async def test_anthropic_529(http: httpx.AsyncClient) -> None:
    body = {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "[[fault:529]]"}]}
    r = await http.post("/v1/messages", json=body)
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"


async def test_fault_filters_by_api_and_model(http: httpx.AsyncClient) -> None:
    text = "[[fault:500 api=anthropic]] [[fault:503 model=other]]"
    assert (await http.post("/v1/chat/completions", json=openai_body(text))).status_code == 200
    r = await http.post("/v1/chat/completions", json={**openai_body(text), "model": "other"})
    assert r.status_code == 503


async def test_unknown_fault_is_a_400_naming_it(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/chat/completions", json=openai_body("[[fault:explode]]"))
    assert r.status_code == 400 and "explode" in r.json()["error"]["message"]


async def test_control_api_queues_faults_and_lists_requests(http: httpx.AsyncClient) -> None:
    r = await http.post("/_sim/faults", json={"fault": "502 api=openai", "times": 2})
    assert r.status_code == 200
    statuses = [(await http.post("/v1/chat/completions", json=openai_body("x"))).status_code for _ in range(3)]
    assert statuses == [502, 502, 200]
    listed = (await http.get("/_sim/requests")).json()["requests"]
    assert [(o["status"], o["fault"], o["outcome"]) for o in listed] == [
        (502, "status", "error"),
        (502, "status", "error"),
        (200, "", "completed"),
    ]
    assert (await http.post("/_sim/faults", json={"fault": "nope"})).status_code == 400
    await http.post("/_sim/reset")
    assert (await http.get("/_sim/requests")).json()["requests"] == []


async def test_disconnect_truncate_and_malformed_on_the_wire(http: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post("/v1/chat/completions", json=openai_body("a b c [[fault:disconnect at=2]]"))
    r = await http.post("/v1/chat/completions", json=openai_body("a b c [[fault:truncate at=2]]"))
    chunks = [json.loads(d) for _, d in sse_events(r.text)]
    assert len(chunks) == 3 and all(c["choices"][0]["finish_reason"] is None for c in chunks)
    r = await http.post("/v1/chat/completions", json=openai_body("[[fault:malformed at=0]]"))
    with pytest.raises(json.JSONDecodeError):
        json.loads(sse_events(r.text)[-1][1])


async def test_records_a_client_that_leaves_mid_stream(sim: SimulatorHandle, http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/v1/chat/completions", json=openai_body("a [[fault:stall at=1]]")) as r:
        lines = r.aiter_lines()
        while "Hello" not in await anext(lines):
            pass
    observed = (await sim.simulator.wait_for_requests(1))[0]
    await asyncio.wait_for(observed.done.wait(), 2)
    assert observed.client_disconnected and observed.outcome == "client_disconnected"
    assert observed.chunks_sent == 1


async def test_keep_alive_serves_many_requests_on_one_connection(http: httpx.AsyncClient) -> None:
    for _ in range(3):
        r = await http.post("/v1/chat/completions", json=openai_body("x"))
        assert r.status_code == 200
    assert (await http.get("/nope")).status_code == 404


async def test_main_serves_until_terminated() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from llm_simulator import main; main(['--port', '0'])",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        url = line.rsplit(" ", 1)[-1].strip()
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.post("/v1/chat/completions", json=openai_body("[[reply:up]]", stream=False))
        assert r.json()["choices"][0]["message"]["content"] == "up"
    finally:
        proc.terminate()
        await proc.wait()
