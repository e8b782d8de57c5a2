"""The OpenAI-compatible HTTP face end to end: the official openai SDK (async and sync) against the real gateway
(`--openai-port`), which runs the same pipeline over the real adapters to the simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import pytest

from gateway_service import config, server
from llm_simulator import SimulatorHandle
from servicekit.security import Security
from tests.gateway.e2e_helpers import Upstream, gateway_config

pytestmark = pytest.mark.timeout(60)
FIRST = Upstream("first", "openai", "gpt-first", patient=True)
SECOND = Upstream("second", "anthropic", "claude-second", patient=True)
USER = [{"role": "user", "content": "[[reply:Hello there friend]]"}]


@contextlib.asynccontextmanager
async def gateway_with_openai(
    cfg: config.GatewayConfig, security: Security | None = None
) -> AsyncIterator[server.Running]:
    settings = server.ServeSettings(
        host="127.0.0.1", port=0, openai_port=0, security=security or Security(insecure_dev=True)
    )
    running = await server.start(cfg, settings)
    try:
        yield running
    finally:
        await running.stop()


def base_url(running: server.Running) -> str:
    assert running.openai is not None
    return f"http://127.0.0.1:{running.openai.port}/v1"


@pytest.fixture
async def running(sim: SimulatorHandle) -> AsyncIterator[server.Running]:
    sim.simulator.clear()
    async with gateway_with_openai(gateway_config(sim.base_url, [FIRST, SECOND])) as running:
        yield running


@pytest.fixture
async def client(running: server.Running) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=base_url(running), api_key="unused", max_retries=0) as client:
        yield client


async def test_a_completion_through_the_sdk(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="default", messages=USER)  # type: ignore[arg-type]
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello there friend"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "gpt-first"
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert raw.headers["x-gateway-provider"] == "first/gpt-first"
    assert answer.id == f"chatcmpl-{raw.headers['x-request-id']}"


async def test_a_stream_through_the_sdk_ends_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="default",
        messages=USER,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there friend"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


async def test_a_request_id_given_is_kept(running: server.Running) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"model": "default", "messages": USER}
        async with session.post(
            f"{base_url(running)}/chat/completions", json=body, headers={"x-request-id": "trace-42"}
        ) as response:
            assert response.status == 200
            assert response.headers["x-request-id"] == "trace-42"
            assert (await response.json())["id"] == "chatcmpl-trace-42"


async def test_the_sync_client_streams_too(running: server.Running) -> None:
    def call() -> str:
        with openai.OpenAI(base_url=base_url(running), api_key="unused", max_retries=0) as sync:
            stream = sync.chat.completions.create(model="default", messages=USER, stream=True)  # type: ignore[arg-type]
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert await asyncio.to_thread(call) == "Hello there friend"


async def test_tools_and_tool_calls_round_trip(client: openai.AsyncOpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    messages: list[Any] = [{"role": "user", "content": '[[call:get_weather {"city": "Paris"}]]'}]
    first = await client.chat.completions.create(model="default", messages=messages, tools=tools)  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = await client.chat.completions.create(model="default", messages=messages, tools=tools)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "The tool answered: sunny"

    stream = await client.chat.completions.create(model="default", messages=messages[:1], tools=tools, stream=True)  # type: ignore[arg-type]
    deltas = [c.choices[0].delta.tool_calls for c in [chunk async for chunk in stream] if c.choices]
    pieces = [d[0] for d in deltas if d]
    assert pieces[0].id == call.id or pieces[0].id  # the first piece carries the call's id and name
    assert pieces[0].function is not None and pieces[0].function.name == "get_weather"
    assert json.loads("".join(p.function.arguments or "" for p in pieces if p.function)) == {"city": "Paris"}


async def test_a_rate_limited_provider_fails_over_before_the_answer(
    client: openai.AsyncOpenAI, sim: SimulatorHandle
) -> None:
    sim.simulator.push_fault("429 retry_after=30 api=openai", times=1)
    raw = await client.chat.completions.with_raw_response.create(model="default", messages=USER)  # type: ignore[arg-type]
    assert raw.parse().choices[0].message.content == "Hello there friend"
    assert raw.headers["x-gateway-provider"] == "second/claude-second"


async def test_every_provider_rate_limited_is_a_429_with_retry_after(
    client: openai.AsyncOpenAI, sim: SimulatorHandle
) -> None:
    sim.simulator.push_fault("429 retry_after=7", times=2)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="default", messages=USER)  # type: ignore[arg-type]
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["x-should-retry"] == "true"
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "rate_limit_error"


async def test_a_failure_mid_stream_is_an_error_not_a_clean_end(
    client: openai.AsyncOpenAI, sim: SimulatorHandle
) -> None:
    messages = [{"role": "user", "content": "[[reply:one two three four]] [[fault:disconnect at=2]]"}]
    stream = await client.chat.completions.create(model="default", messages=messages, stream=True)  # type: ignore[arg-type]
    received = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "one two"
    assert "cut off" in caught.value.message or "failed" in caught.value.message
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "mid_stream_failure"


async def test_models_lists_the_routes(client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert ids == ["default", "first/gpt-first", "second/claude-second"]


# --- what the SDK would never send: raw HTTP, answered 4xx with OpenAI's error JSON, never a 500


async def post(running: server.Running, body: bytes | str, **headers: str) -> tuple[int, dict[str, Any]]:
    raw = body.encode() if isinstance(body, str) else body
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{base_url(running)}/chat/completions",
            content=raw,
            headers={"content-type": "application/json", **headers},
        )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ("{not json", "body"),
        ("[1, 2]", "body"),
        ('{"model": "default"}', "messages"),
        ('{"model": 7, "messages": []}', "model"),
        ('{"model": "default", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
        ('{"model": "default", "messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
        ('{"model": "default", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature"),
        ('{"model": "default", "messages": [{"role": "user", "content": "x"}], "n": 3}', "n"),
        # a non-empty logit_bias was dropped silently, answering otherwise than asked
        (
            '{"model": "default", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"50256": -100}}',
            "logit_bias",
        ),
        (
            '{"model": "default", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            "max_completion_tokens",
        ),
        (
            '{"model": "default", "messages": [{"role": "user", "content": [{"type": "input_audio", '
            '"input_audio": {"data": "", "format": "wav"}}]}]}',
            "messages[0].content[0].type",
        ),
        (
            '{"model": "default", "messages": [{"role": "user", "content": '
            '[{"type": "file", "file": {"file_id": "f"}}]}]}',
            "messages[0].content[0].file.file_data",
        ),
        (
            '{"model": "default", "messages": [{"role": "user", "content": [{"type": "image_url", '
            '"image_url": {"url": "data:image/png;base64,@@@"}}]}]}',
            "messages[0].content[0].image_url.url",
        ),
        (
            '{"model": "default", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, '
            '{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}',
            "messages[0].content[1]",
        ),
        (
            '{"model": "default", "messages": [{"role": "user", "content": [{"type": "video"}]}]}',
            "messages[0].content[0]",
        ),
        # too many parts was named by the gRPC field (messages[0].parts)
        (
            json.dumps(
                {
                    "model": "default",
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}] * 65,
                        }
                    ],
                }
            ),
            "messages[0].content",
        ),
        # numbers past what the gRPC request holds (int32, int64, double) were a protobuf ValueError: a 500
        (f'{{"model": "default", "messages": {json.dumps(USER)}, "seed": {10**30}}}', "seed"),
        (f'{{"model": "default", "messages": {json.dumps(USER)}, "max_tokens": {2**31}}}', "max_tokens"),
        (f'{{"model": "default", "messages": {json.dumps(USER)}, "temperature": {10**400}}}', "temperature"),
        (
            f'{{"model": "default", "messages": {json.dumps(USER)}, "tools": [{{"type": "function", '
            f'"function": {{"name": "f", "parameters": {{"maximum": {10**400}}}}}}}]}}',
            "tools[0].function.parameters",
        ),
        (
            f'{{"model": "default", "messages": {json.dumps(USER)}, "response_format": {{"type": "json_schema", '
            f'"json_schema": {{"name": "a", "schema": {{"maximum": {10**400}}}}}}}}}',
            "response_format.json_schema.schema",
        ),
    ],
)
async def test_bad_bodies_get_a_400_naming_the_parameter(running: server.Running, body: str, param: str) -> None:
    status, answer = await post(running, body)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param, answer


async def test_a_body_over_the_bound_is_413_before_it_is_read(sim: SimulatorHandle) -> None:
    data = {"providers": [FIRST.entry(sim.base_url)], "requests": {"max_request_bytes": 4096}}
    cfg = config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})
    async with gateway_with_openai(cfg) as running:
        too_big = {"model": "first/gpt-first", "messages": USER, "x": "a" * 9000}
        status, answer = await post(running, json.dumps(too_big))
    assert status == 413
    assert answer["error"]["code"] == "request_too_large"


async def test_wrong_content_type_method_and_path(running: server.Running) -> None:
    status, answer = await post(running, "model=default", **{"content-type": "application/x-www-form-urlencoded"})
    assert status == 400 and answer["error"]["param"] == "content-type"
    async with httpx.AsyncClient() as http:
        missing = await http.get(f"{base_url(running)}/nothing-here")
        wrong = await http.get(f"{base_url(running)}/chat/completions")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and "error" in wrong.json()


async def test_a_slow_body_is_cut_with_408(running: server.Running, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway_service.openai_http import server as face

    monkeypatch.setattr(face, "BODY_TIMEOUT_S", 0.3)
    assert running.openai is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", running.openai.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"model"'
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 408"), head
    writer.close()


# --- the callers file: the same doors as the gRPC port


def callers_file(tmp_path: Path) -> Path:
    def sha(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    path = tmp_path / "callers.yaml"
    path.write_text(
        "callers:\n"
        f'  - {{name: app, token_sha256: "{sha("app-token")}", roles: [chat]}}\n'
        f'  - {{name: reader, token_sha256: "{sha("reader-token")}", roles: [providers.read]}}\n'
        f'  - {{name: slow, token_sha256: "{sha("slow-token")}", roles: [chat], '
        "limits: {requests_per_minute: 1}}\n"
        "...\n"
    )
    return path


async def test_bearer_tokens_and_roles_as_on_grpc(sim: SimulatorHandle, tmp_path: Path) -> None:
    cfg = gateway_config(sim.base_url, [FIRST])
    async with (
        gateway_with_openai(cfg, Security(callers=callers_file(tmp_path), insecure_dev=True)) as running,
        contextlib.AsyncExitStack() as clients,
    ):

        async def as_caller(token: str) -> openai.AsyncOpenAI:
            client = openai.AsyncOpenAI(base_url=base_url(running), api_key=token, max_retries=0)
            return await clients.enter_async_context(client)

        app = await as_caller("app-token")
        assert (await app.chat.completions.create(model="default", messages=USER)).choices  # type: ignore[arg-type]
        with pytest.raises(openai.AuthenticationError) as unknown:
            await (await as_caller("guess")).chat.completions.create(model="default", messages=USER)  # type: ignore[arg-type]
        assert unknown.value.body["code"] == "unauthenticated"  # type: ignore[index]
        with pytest.raises(openai.PermissionDeniedError):
            await (await as_caller("reader-token")).chat.completions.create(model="default", messages=USER)  # type: ignore[arg-type]
        slow = await as_caller("slow-token")
        await slow.chat.completions.create(model="default", messages=USER)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as limited:
            await slow.chat.completions.create(model="default", messages=USER)  # type: ignore[arg-type]
        assert int(limited.value.response.headers["retry-after"]) > 0
        status, _ = await post(running, "{", authorization="Bearer guess")
        assert status == 401, "credentials are checked before the body is read"


async def test_image_and_file_parts_reach_a_vision_model(sim: SimulatorHandle) -> None:
    import base64

    entry = FIRST.entry(sim.base_url)
    entry["models"][0]["capabilities"] = ["vision", "documents"]
    cfg = config.parse({"providers": [entry]}, source="test", env={"SIM_KEY": "sk-sim-key-1234"})
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really").decode()
    pdf = base64.b64encode(b"%PDF-1.4 ...").decode()
    content = [
        {"type": "text", "text": "[[reply:seen]] look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}", "filename": "a.pdf"}},
    ]
    sim.simulator.clear()
    async with (
        gateway_with_openai(cfg) as running,
        openai.AsyncOpenAI(base_url=base_url(running), api_key="unused", max_retries=0) as client,
    ):
        answer = await client.chat.completions.create(
            model="first/gpt-first",
            messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
        )
    assert answer.choices[0].message.content == "seen"
    (seen,) = sim.simulator.observations
    sent = seen.body["messages"][-1]["content"]
    assert sent[1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}
    assert sent[2] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    assert sent[3] == {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}", "filename": "a.pdf"}}


async def test_a_cache_control_mark_reaches_anthropic(sim: SimulatorHandle) -> None:
    cfg = gateway_config(sim.base_url, [SECOND])
    system = [{"type": "text", "text": "A long system prompt.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    sim.simulator.clear()
    async with (
        gateway_with_openai(cfg) as running,
        openai.AsyncOpenAI(base_url=base_url(running), api_key="unused", max_retries=0) as client,
    ):
        await client.chat.completions.create(
            model="default",
            messages=[{"role": "system", "content": system}, *USER],  # type: ignore[list-item]
        )
    (seen,) = sim.simulator.observations
    assert seen.body["system"] == [
        {"type": "text", "text": "A long system prompt.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]


# --- TLS and mTLS from the gRPC port's files


async def test_tls_and_client_certificates_as_on_the_grpc_port(sim: SimulatorHandle, tmp_path: Path) -> None:
    import ssl

    from tests.servicekit.certs import Authority

    ca = Authority()
    cert, key = ca.issue("server", server=True).write(tmp_path, "server")
    client_cert, client_key = ca.issue("web-frontend", server=False).write(tmp_path, "client")
    ca_file = ca.write(tmp_path / "ca.crt")
    callers = tmp_path / "callers.yaml"
    callers.write_text('callers:\n  - {name: web, tls_subject: "CN=web-frontend", roles: [chat]}\n...\n')
    security = Security(tls_cert=cert, tls_key=key, tls_client_ca=ca_file, callers=callers)
    async with gateway_with_openai(gateway_config(sim.base_url, [FIRST]), security) as running:
        assert running.openai is not None
        url = f"https://127.0.0.1:{running.openai.port}/v1"
        trusted = ssl.create_default_context(cafile=str(ca_file))
        trusted.load_cert_chain(client_cert, client_key)
        async with openai.AsyncOpenAI(
            base_url=url, api_key="any", max_retries=0, http_client=openai.DefaultAsyncHttpxClient(verify=trusted)
        ) as client:
            answer = await client.chat.completions.create(model="default", messages=USER)  # type: ignore[arg-type]
        assert answer.choices[0].message.content == "Hello there friend"

        no_certificate = ssl.create_default_context(cafile=str(ca_file))
        async with openai.AsyncOpenAI(
            base_url=url,
            api_key="any",
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(verify=no_certificate),
        ) as client:
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model="default", messages=USER)  # type: ignore[arg-type]

        async with httpx.AsyncClient() as plaintext:
            with pytest.raises(httpx.HTTPError):
                await plaintext.get(f"http://127.0.0.1:{running.openai.port}/v1/models")


async def test_user_reaches_the_per_user_budgets_and_json_schema_the_provider(sim: SimulatorHandle) -> None:
    data = {
        "providers": [FIRST.entry(sim.base_url)],
        "routes": {"default": ["first/gpt-first"]},
        "limits": {"users": {"requests_per_minute": 1}},
    }
    cfg = config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    sim.simulator.clear()
    async with (
        gateway_with_openai(cfg) as running,
        openai.AsyncOpenAI(base_url=base_url(running), api_key="unused", max_retries=0) as client,
    ):
        answer = await client.chat.completions.create(
            model="default",
            messages=USER,  # type: ignore[arg-type]
            user="alice",
            max_completion_tokens=50,
            response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}},
        )
        assert json.loads(answer.choices[0].message.content or "") == {"answer": "Hello there friend"}
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="default", messages=USER, user="alice")  # type: ignore[arg-type]
        assert limited.value.body["code"] == "user_budget_exhausted"  # type: ignore[index]
        await client.chat.completions.create(model="default", messages=USER, user="bob")  # type: ignore[arg-type]
    sent = sim.simulator.observations[0].body
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert sent["max_completion_tokens"] == 50 or sent.get("max_tokens") == 50


async def test_too_many_headers_is_a_400_and_one_log_line(
    running: server.Running, caplog: pytest.LogCaptureFixture
) -> None:
    assert running.openai is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", running.openai.port)
    pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(1000))
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
    writer.close()
    assert head.split()[1] == b"400", head  # aiohttp's own answer to a request it cannot parse (HTTP/1.0)
    refused = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert refused and all(r.levelname == "WARNING" and not r.exc_info for r in refused)
    assert "Too many headers" in refused[0].getMessage()


async def test_a_bug_mid_stream_ends_the_stream_with_an_error_event(
    running: server.Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure that is no ServiceError after the stream opened (a bug) used to reach the middleware, which
    answered a second, JSON response on a connection whose SSE stream had already begun."""
    from gateway_service.openai_http import answers

    pieces = 0
    piece = answers.Chunks.piece

    def failing(self: answers.Chunks, given: Any) -> Any:
        nonlocal pieces
        pieces += 1
        if pieces == 2:
            raise RuntimeError("a bug")
        return piece(self, given)

    monkeypatch.setattr(answers.Chunks, "piece", failing)
    body = {"model": "default", "stream": True, "messages": USER}
    async with (
        httpx.AsyncClient() as http,
        http.stream("POST", f"{base_url(running)}/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[0].startswith('data: {"id"'), lines
    assert json.loads(lines[-1].removeprefix("data: "))["error"]["code"] == "internal", lines
    assert "data: [DONE]" not in lines
    assert any(r.exc_info for r in caplog.records if "failed" in r.getMessage()), "the traceback is logged"


async def closed_unanswered(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection without a byte of answer: an end of file, or a reset (a close while the
    kernel still held bytes the client sent, which TCP turns into a RST)."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def test_silent_connections_are_closed_and_their_number_capped(
    running: server.Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway_service.openai_http import connections as limits

    assert running.openai is not None
    port = running.openai.port
    connections = running.openai.connections
    monkeypatch.setattr(connections, "first_request_s", 0.3)
    monkeypatch.setattr(connections, "max_open", 3)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    for _, writer in held:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    await asyncio.gather(*(w.drain() for _, w in held))
    extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", port)
    assert await closed_unanswered(extra_reader), "a connection past the cap is closed at once"
    extra_writer.close()
    for reader, _ in held:  # each silent one is closed at its deadline, with nothing sent back
        assert await closed_unanswered(reader)
    assert (limits.FIRST_REQUEST_S, limits.MAX_CONNECTIONS) == (10.0, 1024)
    status, _ = await post(running, json.dumps({"model": "default", "messages": USER}))
    assert status == 200, "with the silent ones gone, a real request is served"
    for _, writer in held:
        writer.close()


def test_error_details_are_bounded_like_the_grpc_status() -> None:
    from gateway_service.errors import InvalidRequest
    from gateway_service.openai_http.errors import error_body
    from servicekit.errors import FieldViolation

    many = [FieldViolation("messages[0]." + "x" * 5000, "d" * 5000) for _ in range(100)]
    body = error_body(InvalidRequest("m" * 5000, field_violations=many))
    assert len(json.dumps(body)) < 4 * 1024
    assert body["error"]["details"] and len(body["error"]["param"]) <= 120
    assert "more invalid field(s) not listed" in body["error"]["message"]
