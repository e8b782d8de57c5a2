"""The gateway server: health names, reflection, request validation, no keys, SIGTERM draining."""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway_service import config, server
from llm_simulator import SimulatorHandle, start_simulator
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc
from servicekit.procs import ServiceProcess
from tests.gateway.e2e_helpers import Harness, Upstream, chat_failure, gateway, stream_failure, user

KEY_VARS = ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY")


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[SimulatorHandle]:
    handle = await start_simulator(chunk_delay_s=0.02)
    yield handle
    await handle.close()


@pytest.fixture
async def h(sim: SimulatorHandle) -> AsyncIterator[Harness]:
    async with gateway(sim, [Upstream("p", "openai", "primary", patient=True)]) as harness:
        yield harness


async def test_health_names_and_reflection(h: Harness) -> None:
    stub = health_pb2_grpc.HealthStub(h.channel)
    for name in ("", "liveness", "readiness", "llmgateway.v1.ChatService", "llmgateway.v1.ProviderService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, name
    reflection = reflection_pb2_grpc.ServerReflectionStub(h.channel)
    call = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    listed = {s.name async for r in call for s in r.list_services_response.service}
    assert {"llmgateway.v1.ChatService", "llmgateway.v1.ProviderService", "grpc.health.v1.Health"} <= listed


async def test_bad_requests_name_every_field(h: Harness) -> None:
    messages = [
        pb.Message(role=pb.ROLE_SYSTEM, content="be brief"),
        pb.Message(role=pb.ROLE_USER, content="hi"),
        pb.Message(content="no role"),
        pb.Message(role=pb.ROLE_TOOL, content="42"),
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[pb.ToolCall(id="c1", name="f", arguments_json="[1]")]),
    ]
    request = pb.StreamChatRequest(
        model="",
        messages=messages,
        sampling=pb.SamplingOptions(temperature=3.0),
        tools=[pb.Tool(name="")],
        tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_TOOL, tool_name="missing"),
        response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
    )
    failed = await stream_failure(h, request)
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT and failed.info.reason == "INVALID_ARGUMENT"
    assert failed.bad_request is not None
    fields = [v.field for v in failed.bad_request.field_violations]
    assert fields == [
        "model",
        "messages[2].role",
        "messages[3].tool_call_id",
        "messages[4].tool_calls[0].arguments_json",
        "tools[0].name",
        "sampling.temperature",
        "tool_choice.tool_name",
        "response_format.json_schema",
    ]
    assert failed.events == [] and h.sim.simulator.observations == []
    chat = await chat_failure(h, pb.ChatRequest(model="default"))
    assert chat.bad_request is not None and [v.field for v in chat.bad_request.field_violations] == ["messages"]


async def test_unknown_model_and_provider_order(h: Harness) -> None:
    failed = await stream_failure(h, pb.StreamChatRequest(model="nope/x", messages=user("hi")))
    assert (failed.code, failed.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_MODEL")
    assert failed.bad_request is not None and failed.bad_request.field_violations[0].field == "model"
    failed = await stream_failure(h, pb.StreamChatRequest(model="default", messages=user("hi"), provider_order=["zz"]))
    assert failed.bad_request is not None and failed.bad_request.field_violations[0].field == "provider_order[0]"


async def test_tools_and_json_schema_reach_the_provider(h: Harness) -> None:
    params = struct_pb2.Struct()
    params.update({"type": "object", "properties": {"city": {"type": "string"}}})
    request = pb.ChatRequest(
        model="default",
        messages=user('weather? [[call:get_weather {"city": "Paris"}]]'),
        tools=[pb.Tool(name="get_weather", description="weather", parameters=params)],
    )
    response = await h.chat.Chat(request, timeout=5)
    assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    call = response.message.tool_calls[0]
    assert (call.name, call.arguments_json) == ("get_weather", '{"city": "Paris"}')
    sent = h.sim.simulator.observations[0].body
    assert sent["tools"][0]["function"]["parameters"]["properties"] == {"city": {"type": "string"}}


async def test_without_keys_it_starts_and_chats_fail_precondition_naming_the_variable() -> None:
    running = await server.start(config.load(None, env={}), server.ServeSettings(host="127.0.0.1", port=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = chat_service_pb2_grpc.ChatServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Chat(pb.ChatRequest(model="default", messages=user("hi")), timeout=2)
            assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY"):
                assert variable in str(caught.value.details())
            call = stub.StreamChat(pb.StreamChatRequest(model="openai/gpt-4o-mini", messages=user("hi")), timeout=2)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
            assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "OPENAI_API_KEY" in str(caught.value.details())
    finally:
        await running.server.stop(0)
        await running.close()


@pytest.mark.timeout(60)
async def test_sigterm_drains_the_open_stream_and_refuses_new_calls(sim: SimulatorHandle, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        textwrap.dedent(f"""
        providers:
          - {{name: sim, type: openai, base_url: "{sim.base_url}/v1", api_key_env: SIM_KEY,
             models: [{{name: m, context_window: 1000}}]}}
        routes: {{default: [sim/m]}}
    """)
    )
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS} | {"SIM_KEY": "sk-sim"}
    with ServiceProcess("gateway-service", "--config", str(path), "--shutdown-grace", "10", env=env) as proc:
        await proc.wait_serving(timeout_s=30)
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = chat_service_pb2_grpc.ChatServiceStub(channel)
            words = " ".join(f"w{i}" for i in range(100))  # 100 chunks, 20 ms apart: still running at SIGTERM
            call = stub.StreamChat(
                pb.StreamChatRequest(model="default", messages=user(f"[[reply:{words}]]")), timeout=20
            )
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="readiness"))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            assert (await call.read()).HasField("started")
            assert (await call.read()).HasField("delta")
            proc.terminate()
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await refused(stub)
            rest = []
            while (event := await call.read()) is not grpc.aio.EOF:
                rest.append(event)
            assert rest[-1].HasField("done") and "".join(e.delta.text for e in rest).endswith("w99")
        assert await proc.wait_exit(timeout_s=15) == 0
        assert "sk-sim" not in proc.output()


async def refused(stub: chat_service_pb2_grpc.ChatServiceStub) -> bool:
    """True once new calls are refused; the server stops accepting right after readiness flips."""
    for _ in range(50):
        try:
            await stub.Chat(pb.ChatRequest(model="default", messages=user("[[reply:x]]")), timeout=2)
        except grpc.aio.AioRpcError as error:
            return error.code() is grpc.StatusCode.UNAVAILABLE
        await asyncio.sleep(0.01)
    return False


def test_cli_reports_config_errors_and_checks_config_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from gateway_service.__main__ import main

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        bad = tmp_path / "bad.yaml"
        bad.write_text("providers: []\nroutes: {}\nbogus: 1\n")
        assert main(["serve", "--config", str(bad)]) == 2
        assert f"{bad}: bogus: unknown key" in capsys.readouterr().err
        monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-value")
        assert main(["serve", "--check-config", "--insecure-dev"]) == 0  # the security flags are checked too
        printed = capsys.readouterr().out
        assert "**********" in printed and "sk-very-secret-value" not in printed
        assert main(["serve", "--port", "fifty"]) == 2
        assert "Config 'port' (--port, env GATEWAY_PORT) must be an integer, got 'fifty'" in capsys.readouterr().err
    finally:
        root.handlers[:], root.level = handlers, level
