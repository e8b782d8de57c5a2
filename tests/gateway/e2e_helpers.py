"""End-to-end harness: the real gateway on a grpc.aio server at 127.0.0.1:0, real adapters and SDKs,
and the simulator speaking each provider's wire format over HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import yaml
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway_service import config, server
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc, provider_service_pb2_grpc
from servicekit.security import Security

# The faulty provider gives up fast (slow and stalled streams are the faults under test); providers that
# must answer get time to spare, so a busy CI machine does not turn a slow first token into a failure.
FAST_TIMEOUTS = {"connect_timeout_s": 1.0, "first_token_timeout_s": 0.5, "idle_timeout_s": 0.3, "timeout_s": 10.0}
PATIENT_TIMEOUTS = {"connect_timeout_s": 2.0, "first_token_timeout_s": 3.0, "idle_timeout_s": 2.0, "timeout_s": 10.0}


@dataclass(frozen=True)
class Upstream:
    """One provider entry pointed at the simulator."""

    name: str
    type: str
    model: str
    context_window: int = 100_000
    key_env: str = "SIM_KEY"
    patient: bool = False
    timeouts: dict[str, float] = field(default_factory=dict)  # over the fast or patient ones

    def entry(self, base_url: str) -> dict[str, Any]:
        url = f"{base_url}/v1" if self.type in ("openai", "openai_compatible") else base_url
        entry: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "base_url": url,
            "api_key_env": self.key_env,
            **(PATIENT_TIMEOUTS if self.patient else FAST_TIMEOUTS),
            **self.timeouts,
            "models": [
                {
                    "name": self.model,
                    "context_window": self.context_window,
                    "input_usd_per_mtok": 1.0,
                    "output_usd_per_mtok": 2.0,
                }
            ],
        }
        if self.type == "gemini":
            entry["api_version"] = "v1beta"
        return entry


@dataclass
class Harness:
    sim: SimulatorHandle
    running: server.Running
    channel: grpc.aio.Channel
    chat: chat_service_pb2_grpc.ChatServiceStub
    providers: provider_service_pb2_grpc.ProviderServiceStub


def gateway_config(
    sim_url: str,
    upstreams: Sequence[Upstream],
    route: Sequence[str] | None = None,
    env: dict[str, str] | None = None,
    **failover: float,
) -> config.GatewayConfig:
    data = {
        "providers": [u.entry(sim_url) for u in upstreams],
        "routes": {"default": list(route or [f"{u.name}/{u.model}" for u in upstreams])},
        "failover": {"min_attempt_budget_s": 0.01, **failover},
    }
    return config.parse(yaml.safe_load(yaml.safe_dump(data)), source="test", env=env or {"SIM_KEY": "sk-sim-key-1234"})


@contextlib.asynccontextmanager
async def gateway(
    sim: SimulatorHandle,
    upstreams: Sequence[Upstream],
    route: Sequence[str] | None = None,
    env: dict[str, str] | None = None,
    **failover: float,
) -> AsyncIterator[Harness]:
    sim.simulator.clear()
    async with serving(sim, gateway_config(sim.base_url, upstreams, route, env, **failover)) as harness:
        yield harness


@contextlib.asynccontextmanager
async def serving(
    sim: SimulatorHandle,
    cfg: config.GatewayConfig,
    security: Security | None = None,
    health_clock: Callable[[], float] | None = None,
) -> AsyncIterator[Harness]:
    """A gateway server for `cfg` on 127.0.0.1 and a channel to it; both closed afterwards.

    Plaintext, and every caller allowed unless `security` names a callers file; `health_clock` replaces
    health's monotonic clock (breakers, cooldowns, the slow ramp) with one the test moves.
    """
    settings = server.ServeSettings(host="127.0.0.1", port=0, security=security or Security(insecure_dev=True))
    running = await server.start(cfg, settings, health_clock=health_clock)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Harness(
            sim,
            running,
            channel,
            chat_service_pb2_grpc.ChatServiceStub(channel),
            provider_service_pb2_grpc.ProviderServiceStub(channel),
        )
    finally:
        await channel.close()
        await running.server.stop(0)
        await running.close()


def user(text: str) -> list[pb.Message]:
    return [pb.Message(role=pb.ROLE_USER, content=text)]


def kinds(events: Sequence[pb.StreamChatResponse]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def text_of(events: Sequence[pb.StreamChatResponse]) -> str:
    return "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")


async def stream(h: Harness, request: pb.StreamChatRequest, timeout: float = 5.0) -> list[pb.StreamChatResponse]:
    """All events of a stream that ends OK."""
    return [event async for event in h.chat.StreamChat(request, timeout=timeout)]


@dataclass
class Failed:
    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo
    retry: error_details_pb2.RetryInfo | None
    bad_request: error_details_pb2.BadRequest | None
    events: list[pb.StreamChatResponse]


def details(error: grpc.aio.AioRpcError, events: list[pb.StreamChatResponse]) -> Failed:
    status: status_pb2.Status | None = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status in the trailers of {error!r}"
    unpacked: dict[str, Any] = {}
    for any_detail in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.BadRequest):
            if any_detail.Is(cls.DESCRIPTOR):
                message = cls()
                any_detail.Unpack(message)
                unpacked[cls.__name__] = message
    return Failed(
        error.code(),
        status.message,
        unpacked["ErrorInfo"],
        unpacked.get("RetryInfo"),
        unpacked.get("BadRequest"),
        events,
    )


async def stream_failure(h: Harness, request: pb.StreamChatRequest, timeout: float = 5.0) -> Failed:
    """The events and the google.rpc details of a stream that must end with a non-OK status."""
    events: list[pb.StreamChatResponse] = []
    call = h.chat.StreamChat(request, timeout=timeout)
    try:
        async for event in call:
            events.append(event)
    except grpc.aio.AioRpcError as error:
        return details(error, events)
    raise AssertionError(f"stream ended OK: {kinds(events)}")


async def chat_failure(h: Harness, request: pb.ChatRequest, timeout: float = 5.0) -> Failed:
    try:
        response = await h.chat.Chat(request, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        return details(error, [])
    raise AssertionError(f"Chat succeeded: {response}")
