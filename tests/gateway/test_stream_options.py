"""`stream_options: false` on an openai_compatible provider: the field is left out for endpoints that refuse it.

The fake is a real HTTP server (aiohttp.web) that answers like such an endpoint: a 400 for a body with
`stream_options`, otherwise the simulator's OpenAI stream without a usage chunk (nobody asked for one).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from gateway_service import app, config
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import ChatRequest, Finished, Message, Role, TextDelta, UsageReport
from gateway_service.errors import ConfigError
from gateway_service.providers import create_adapter
from gateway_service.providers.streaming import provider_deadlines
from llm_simulator import wire_openai
from llm_simulator.plan import make_plan
from tests.gateway.test_provider_streams import config_for

pytestmark = pytest.mark.timeout(20)
REFUSAL = "stream_options: Extra inputs are not permitted"


@pytest.fixture
async def refusing() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """The fake's base URL and the bodies it received."""
    bodies: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        bodies.append(body)
        if "stream_options" in body:
            error = {"error": {"message": REFUSAL, "type": "invalid_request_error", "param": None, "code": None}}
            return web.json_response(error, status=400)
        prompt = wire_openai.parse(body)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for frame in wire_openai.frames(make_plan(prompt, None), prompt, "req_fake1"):
            await response.write(frame.data)
        await response.write_eof()
        return response

    server = web.Application()
    server.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(server)
    await runner.setup()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    await web.SockSite(runner, listening).start()
    try:
        yield f"http://127.0.0.1:{port}", bodies
    finally:
        await runner.cleanup()


async def call(base_url: str, stream_options: bool) -> list[Any]:
    adapter = create_adapter(replace(config_for("openai_compatible", base_url), stream_options=stream_options))
    request = ChatRequest(model="m", messages=(Message(Role.USER, "one two"),), request_id="so")
    try:
        return [e async for e in adapter.stream(request, "m", deadlines=provider_deadlines(adapter.config, 5.0))]
    finally:
        await adapter.aclose()


async def test_the_default_sends_stream_options_which_such_an_endpoint_refuses(
    refusing: tuple[str, list[dict[str, Any]]],
) -> None:
    base_url, bodies = refusing
    with pytest.raises(ProviderError) as info:
        await call(base_url, stream_options=True)
    assert (info.value.kind, info.value.status_code) == (FailureKind.INVALID_REQUEST, 400)
    assert REFUSAL in info.value.message
    assert bodies[-1]["stream_options"] == {"include_usage": True}


async def test_stream_options_false_leaves_the_field_out_and_the_answer_comes(
    refusing: tuple[str, list[dict[str, Any]]],
) -> None:
    base_url, bodies = refusing
    events = await call(base_url, stream_options=False)
    assert "stream_options" not in bodies[-1] and bodies[-1]["stream"] is True
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello from the simulator. You said: one two"
    assert isinstance(events[-1], Finished) and events[-1].upstream_request_id == "chatcmpl-req_fake1"
    assert not [e for e in events if isinstance(e, UsageReport)]  # unasked, this server sends none


def provider(**extra: Any) -> dict[str, Any]:
    entry = {"name": "p", "type": "openai_compatible", "base_url": "http://127.0.0.1:1/v1", "no_api_key": True}
    return {**entry, "models": [{"name": "m"}], **extra}


def test_the_key_reaches_the_adapter() -> None:
    cfg = config.parse(
        {"providers": [provider(stream_options=False)], "routes": {"default": ["p/m"]}}, source="t", env={}
    )
    assert app.provider_config(cfg.providers[0]).stream_options is False
    cfg = config.parse({"providers": [provider()], "routes": {"default": ["p/m"]}}, source="t", env={})
    assert app.provider_config(cfg.providers[0]).stream_options is True


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini", "cohere"])
def test_other_types_refuse_the_key(kind: str) -> None:
    data = {"providers": [provider(type=kind, stream_options=False)], "routes": {"default": ["p/m"]}}
    with pytest.raises(ConfigError) as info:
        config.parse(data, source="t", env={})
    assert "stream_options" in str(info.value) and "only openai_compatible" in str(info.value)


def test_a_non_boolean_is_refused() -> None:
    data = {"providers": [provider(stream_options="no")], "routes": {"default": ["p/m"]}}
    with pytest.raises(ConfigError) as info:
        config.parse(data, source="t", env={})
    assert "stream_options" in str(info.value)
