"""One caller can never take all of a provider's connections (issue #18, point 10).

Before: one caller's 110 long streams held a provider's 100 connections and another caller's chat
waited for one until "no first token within 10s". Now each caller holds at most its share of a
provider's `max_connections` (half by default): past it, its calls skip that provider.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway_service.app import build_gateway
from gateway_service.config import ModelSpec
from gateway_service.domain.events import AttemptStarted, GatewayEvent, OutputDelta, SkipReason
from gateway_service.domain.request import TextDelta
from gateway_service.errors import AllProvidersRateLimited
from gateway_service.providers.base import ProviderConfig
from tests.gateway.pipeline_helpers import Gate, ScriptedAdapter, Step, chat_request, gateway_config, spec, words

pytestmark = pytest.mark.timeout(10)


async def collect(events: object) -> list[GatewayEvent]:
    return [e async for e in events]  # type: ignore[attr-defined]


async def test_a_caller_past_its_share_of_a_provider_fails_over_and_others_still_get_it() -> None:
    held = asyncio.Event()
    long_stream: list[Step] = [TextDelta("..."), Gate(held), *words("done")]
    scripts = {"a": [long_stream, words("a for other")], "b": [words("b for hog")]}
    adapters: dict[str, ScriptedAdapter] = {}

    def factory(provider: ProviderConfig) -> ScriptedAdapter:
        adapters[provider.name] = ScriptedAdapter(provider.name, scripts[provider.name])
        return adapters[provider.name]

    # max_connections 2: each caller may hold one of a's connections.
    config = gateway_config(spec("a", ModelSpec(name="m"), max_connections=2), spec("b", ModelSpec(name="m")))
    gateway = build_gateway(config, factory)  # type: ignore[arg-type]
    first = gateway.start_chat(chat_request(caller="hog"), 5.0).events()
    assert isinstance(await anext(first), AttemptStarted)  # the hog's long stream holds a connection of a
    assert isinstance(await anext(first), OutputDelta)

    second = gateway.start_chat(chat_request(caller="hog"), 5.0)
    started = [e for e in await collect(second.events()) if isinstance(e, AttemptStarted)]
    assert [(s.provider, [r.outcome for r in s.skipped]) for s in started] == [("b", [SkipReason.BUDGET_EXHAUSTED])]
    assert "share of the provider's connections (1)" in second.skipped[0].message

    other = await collect(gateway.start_chat(chat_request(caller="other"), 5.0).events())
    assert [e.provider for e in other if isinstance(e, AttemptStarted)] == ["a"]
    held.set()
    await collect(first)


async def test_with_no_other_provider_the_call_is_refused_with_a_retry_delay() -> None:
    held = asyncio.Event()
    scripts = [[TextDelta("..."), Gate(held), *words("done")]]
    config = gateway_config(spec("a", ModelSpec(name="m"), max_connections=2))
    gateway = build_gateway(config, lambda p: ScriptedAdapter(p.name, scripts))  # type: ignore[arg-type]
    first = gateway.start_chat(chat_request(caller="hog"), 5.0).events()
    await anext(first)
    with pytest.raises(AllProvidersRateLimited) as refused:
        await collect(gateway.start_chat(chat_request(caller="hog"), 5.0).events())
    assert refused.value.retry_after_s == 1.0
    held.set()
    await collect(first)
