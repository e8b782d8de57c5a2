"""Hostile chat requests are refused with INVALID_ARGUMENT naming the field, inside 4 KiB of trailers: floods of
messages, NaN and infinity in JSON values, JSON nested too deep, ids that would flood the logs, oversized text,
requests over the size limit."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import struct_pb2

from gateway_service import config
from gateway_service.api.bounds import DEFAULT_BOUNDS
from gateway_service.config import RequestBounds
from gateway_service.errors import ConfigError
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import (
    Failed,
    Harness,
    Upstream,
    chat_failure,
    gateway,
    gateway_config,
    serving,
    stream_failure,
    user,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def h(sim: SimulatorHandle) -> AsyncIterator[Harness]:
    async with gateway(sim, [Upstream("p", "openai", "primary", patient=True)]) as harness:
        yield harness


def _fields(failed: Failed) -> list[str]:
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT, (failed.code, failed.message)
    assert failed.bad_request is not None
    return [v.field for v in failed.bad_request.field_violations]


def _empty(count: int) -> list[pb.Message]:
    return [pb.Message(role=pb.ROLE_USER) for _ in range(count)]


async def test_a_hundred_empty_messages_get_invalid_argument_not_a_trailer_overflow(h: Harness) -> None:
    try:
        await h.chat.Chat(pb.ChatRequest(model="default", messages=_empty(100)), timeout=10)
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert sum(len(k) + len(v) for k, v in error.trailing_metadata() or ()) <= 4096
        failed = await chat_failure(h, pb.ChatRequest(model="default", messages=_empty(100)))
        assert failed.info.metadata["violations_omitted"] == str(100 - len(_fields(failed)))
        return
    raise AssertionError("accepted")


async def test_a_flood_of_messages_is_refused_by_its_count(h: Harness) -> None:
    failed = await stream_failure(h, pb.StreamChatRequest(model="default", messages=_empty(100_000)), timeout=30)
    assert _fields(failed) == ["messages"]
    assert failed.bad_request is not None
    assert "at most 1,000" in failed.bad_request.field_violations[0].description


async def test_a_huge_model_name_is_not_echoed_in_full(h: Harness) -> None:
    failed = await stream_failure(h, pb.StreamChatRequest(model="m" * 100_000, messages=user("hi")))
    assert _fields(failed) == ["model"]
    assert len(failed.message) <= 200


def _number(value: float) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.fields["type"].string_value = "object"
    struct.fields["nested"].struct_value.fields["x"].number_value = value
    return struct


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_nan_and_infinity_in_tool_parameters_and_json_schema_are_refused(h: Harness, value: float) -> None:
    request = pb.StreamChatRequest(
        model="default",
        messages=user("hi"),
        tools=[pb.Tool(name="f", parameters=_number(value))],
        response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_TEXT, json_schema=_number(value)),
    )
    failed = await stream_failure(h, request)
    assert _fields(failed) == ["tools[0].parameters", "response_format.json_schema"]
    assert failed.bad_request is not None
    assert all("finite" in v.description for v in failed.bad_request.field_violations)


async def test_json_nested_too_deeply_is_refused(h: Harness) -> None:
    deep_json = '{"a": ' * 1000 + "1" + "}" * 1000
    limit = DEFAULT_BOUNDS.max_json_depth
    just_over = '{"a": ' * limit + "[1]" + "}" * limit
    messages = [
        *user("hi"),
        pb.Message(
            role=pb.ROLE_ASSISTANT,
            tool_calls=[
                pb.ToolCall(id="a", name="f", arguments_json=deep_json),
                pb.ToolCall(id="b", name="f", arguments_json=just_over),
                pb.ToolCall(id="c", name="f", arguments_json='{"x": NaN}'),
            ],
        ),
    ]
    deep_struct = struct_pb2.Struct()
    inner = deep_struct
    for _ in range(limit):  # the innermost Struct stays unset: `limit` levels with the outermost, then one more
        inner = inner.fields["a"].struct_value
    inner.fields["b"].number_value = 1
    tools = [pb.Tool(name="f", parameters=deep_struct)]
    request = pb.StreamChatRequest(model="default", messages=messages, tools=tools)
    failed = await stream_failure(h, request)
    assert _fields(failed) == [
        "messages[1].tool_calls[0].arguments_json",
        "messages[1].tool_calls[1].arguments_json",
        "messages[1].tool_calls[2].arguments_json",
        "tools[0].parameters",
    ]
    assert failed.bad_request is not None
    assert f"nested more than {limit} levels" in failed.bad_request.field_violations[0].description


async def test_json_at_the_depth_limit_is_taken(h: Harness) -> None:
    limit = DEFAULT_BOUNDS.max_json_depth
    at_limit = '{"a": ' * (limit - 1) + "{}" + "}" * (limit - 1)
    messages = [
        *user("hi"),
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[pb.ToolCall(id="a", name="f", arguments_json=at_limit)]),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id="a", content="ok"),
    ]
    events = [e async for e in h.chat.StreamChat(pb.StreamChatRequest(model="default", messages=messages), timeout=10)]
    assert events[-1].HasField("done")


async def test_request_and_user_ids_follow_the_schema_services_rule(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    huge = "r" * 1_000_000
    with caplog.at_level(logging.DEBUG):
        failed = await stream_failure(
            h, pb.StreamChatRequest(model="default", messages=user("hi"), request_id=huge, user_id="alice smith")
        )
    assert _fields(failed) == ["request_id", "user_id"]
    assert all(huge not in r.getMessage() and getattr(r, "request_id", "") != huge for r in caplog.records)
    for good in ("req-1", "a" * 128, "!~"):
        events = [
            e
            async for e in h.chat.StreamChat(
                pb.StreamChatRequest(model="default", messages=user("hi"), request_id=good, user_id=good), timeout=10
            )
        ]
        assert events[-1].HasField("done")
    failed = await stream_failure(h, pb.StreamChatRequest(model="default", messages=user("hi"), request_id="a" * 129))
    assert _fields(failed) == ["request_id"]


async def test_text_and_names_over_their_limits_are_named(h: Harness) -> None:
    text = "x" * (DEFAULT_BOUNDS.max_text_chars + 1)
    name = "n" * (DEFAULT_BOUNDS.max_name_chars + 1)
    request = pb.StreamChatRequest(
        model="default",
        messages=[pb.Message(role=pb.ROLE_USER, content=text, name=name)],
        tools=[pb.Tool(name=name)],
        sampling=pb.SamplingOptions(stop_sequences=[name]),
    )
    failed = await stream_failure(h, request)
    assert _fields(failed) == ["sampling.stop_sequences[0]", "messages[0].name", "messages[0].content", "tools[0].name"]


async def test_a_request_over_the_size_limit_is_refused_unread(h: Harness) -> None:
    big = "x" * (DEFAULT_BOUNDS.max_request_bytes // 2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h.chat.Chat(pb.ChatRequest(model="default", messages=user(big) * 3), timeout=10)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_the_limits_are_settings_of_the_config(sim: SimulatorHandle) -> None:
    cfg = gateway_config(sim.base_url, [Upstream("p", "openai", "primary", patient=True)])
    cfg = cfg.model_copy(update={"requests": RequestBounds(max_messages=2, max_request_bytes=64 * 1024)})
    async with serving(sim, cfg) as h:
        failed = await stream_failure(h, pb.StreamChatRequest(model="default", messages=user("a") * 3))
        assert _fields(failed) == ["messages"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.chat.Chat(pb.ChatRequest(model="default", messages=user("x" * 70_000)), timeout=10)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(ConfigError, match="requests.max_messages"):
        config.parse({**_minimal(sim.base_url), "requests": {"max_messages": 0}}, source="test", env={"SIM_KEY": "k"})


def _minimal(url: str) -> dict[str, object]:
    return {"providers": [Upstream("p", "openai", "primary").entry(url)], "routes": {"default": ["p/primary"]}}
