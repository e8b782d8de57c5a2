"""In-test adapters implementing the ProviderAdapter protocol, for the failover state machine's domain tests.

They stand in for a provider at the adapter boundary only (the end-to-end tests use the real
adapters, SDKs and the simulator over HTTP); each call plays one scripted list of steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from pydantic import SecretStr

from gateway_service.config import (
    FailoverSettings,
    GatewayConfig,
    ModelSpec,
    ProviderSpec,
)
from gateway_service.domain.deadlines import StreamDeadlines
from gateway_service.domain.request import (
    ChatRequest,
    Finished,
    FinishReason,
    Message,
    ProviderEvent,
    Role,
    TextDelta,
    carries_output,
)
from gateway_service.providers.base import ProviderConfig
from gateway_service.providers.streaming import Pacer


@dataclass
class Clock:
    """Health's monotonic clock in a test: it moves only when the test moves it."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Pause:
    """Wait this long before the next step (a slow or stalled upstream)."""

    seconds: float


@dataclass(frozen=True)
class Gate:
    """Wait until the test sets this event (an upstream held exactly as long as the test needs)."""

    opened: asyncio.Event


Step = ProviderEvent | Exception | Pause | Gate


@dataclass
class Call:
    request: ChatRequest
    model: str
    deadlines: StreamDeadlines
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    steps_played: int = 0


class ScriptedAdapter:
    """Plays `scripts[i]` on the i-th call; records each call and whether its stream was closed.

    Like every adapter, it keeps the deadlines it is given with a Pacer (a Pause past one is a TIMEOUT).
    """

    def __init__(self, name: str, scripts: Sequence[Sequence[Step]]) -> None:
        self.config = ProviderConfig(name=name, type="openai", base_url=None, api_key="test-key")
        self.scripts = list(scripts)
        self.calls: list[Call] = []

    def stream(self, request: ChatRequest, model: str, *, deadlines: StreamDeadlines) -> AsyncIterator[ProviderEvent]:
        call = Call(request, model, deadlines)
        self.calls.append(call)
        return self._play(self.scripts[len(self.calls) - 1], call, Pacer(deadlines))

    async def _play(self, steps: Sequence[Step], call: Call, pacer: Pacer) -> AsyncIterator[ProviderEvent]:
        try:
            for step in steps:
                call.steps_played += 1
                if isinstance(step, Pause):
                    await pacer.wait(asyncio.sleep(step.seconds))
                elif isinstance(step, Gate):
                    await pacer.wait(step.opened.wait())
                elif isinstance(step, Exception):
                    raise step
                else:
                    if carries_output(step):
                        pacer.output()
                    yield step
        finally:
            pacer.close()
            call.closed.set()

    async def aclose(self) -> None:
        return None


def words(*texts: str, reason: FinishReason = FinishReason.STOP) -> list[Step]:
    return [*(TextDelta(t) for t in texts), Finished(reason, upstream_request_id="up-1")]


def spec(name: str, *models: ModelSpec, key: str | None = "k", type_: str = "openai", **kw: float) -> ProviderSpec:
    return ProviderSpec(
        name=name,
        type=type_,
        models=models,
        api_key_env=f"{name.upper()}_API_KEY",
        api_key=SecretStr(key + name) if key else None,
        **kw,  # type: ignore[arg-type]
    )


def gateway_config(*providers: ProviderSpec, route: Sequence[str] = (), **failover: float) -> GatewayConfig:
    targets = tuple(tuple(t.split("/", 1)) for t in route) or tuple((p.name, p.models[0].name) for p in providers)
    return GatewayConfig(
        providers=providers,
        routes={"default": targets},  # type: ignore[dict-item]
        failover=FailoverSettings(**failover),  # type: ignore[arg-type]
    )


def chat_request(text: str = "hi", model: str = "default", **kw: object) -> ChatRequest:
    return ChatRequest(model=model, messages=(Message(Role.USER, text),), request_id="req-1", **kw)  # type: ignore[arg-type]
