"""Budgets inside the pipeline (domain level, no gRPC): what is taken when, with a clock the test moves."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway_service.app import Gateway, build_gateway
from gateway_service.config import GatewayConfig, LimitSettings, ModelSpec, Rate
from gateway_service.domain.events import GatewayEvent, SkipReason
from gateway_service.domain.request import ChatRequest, UsageReport
from gateway_service.errors import AllProvidersRateLimited, NotConfigured, UserBudgetExhausted
from gateway_service.limits.core import Charge, Exceeded
from gateway_service.limits.memory import MemoryLimiter
from gateway_service.providers.base import ProviderConfig
from gateway_service.telemetry import Send
from schemaservice.v1 import metrics_service_pb2 as mpb
from tests.gateway.pipeline_helpers import ScriptedAdapter, Step, chat_request, gateway_config, spec, words

RPM_1 = (Rate("requests_per_minute", 1, 60.0),)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLimiter(MemoryLimiter):
    """The in-process limiter, counting its calls (each would be one Redis round trip)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.calls = 0

    async def acquire(self, charges: Sequence[Charge], then: Sequence[Charge] = ()) -> list[Exceeded]:
        self.calls += 1
        return await super().acquire(charges, then)


def answers(n: int, usage: UsageReport | None = None) -> list[list[Step]]:
    return [[*([usage] if usage else []), *words("ok")] for _ in range(n)]


def pipeline(
    config: GatewayConfig, scripts: dict[str, list[list[Step]]], clock: Clock, send: Send | None = None
) -> Gateway:
    def factory(provider: ProviderConfig) -> ScriptedAdapter:
        return ScriptedAdapter(provider.name, scripts.get(provider.name, []))

    return build_gateway(config, factory, send=send, limits_clock=clock)  # type: ignore[arg-type]


async def run(gateway: Gateway, request: ChatRequest) -> list[GatewayEvent]:
    return [event async for event in gateway.start_chat(request, 5.0).events()]


def with_limits(config: GatewayConfig, **limits: object) -> GatewayConfig:
    return config.model_copy(update={"limits": LimitSettings(**limits)})  # type: ignore[arg-type]


async def test_the_user_and_the_first_candidate_cost_one_take_and_the_window_refills_on_the_clock() -> None:
    clock = Clock()
    config = with_limits(gateway_config(spec("a", ModelSpec(name="m", limits=RPM_1))), users=RPM_1)
    gateway = pipeline(config, {"a": answers(2)}, clock)
    assert gateway.budgets is not None
    limiter = CountingLimiter(clock)
    gateway.budgets.limiter = limiter

    await run(gateway, chat_request(user_id="u"))
    assert limiter.calls == 1
    with pytest.raises(UserBudgetExhausted) as refused:
        await run(gateway, chat_request(user_id="u"))
    assert refused.value.retry_after_s == pytest.approx(60.0)
    assert [v.subject for v in refused.value.quota_violations] == ["user:u"]
    clock.now += 60.0
    await run(gateway, chat_request(user_id="u"))
    assert limiter.calls == 3


async def test_a_refused_user_takes_nothing_from_the_candidate() -> None:
    rpm_2 = (Rate("requests_per_minute", 2, 60.0),)
    config = with_limits(gateway_config(spec("a", ModelSpec(name="m"), limits=rpm_2)), user_overrides={"poor": RPM_1})
    gateway = pipeline(config, {"a": answers(3)}, Clock())
    await run(gateway, chat_request(user_id="poor"))
    with pytest.raises(UserBudgetExhausted):
        await run(gateway, chat_request(user_id="poor"))
    # Had the refused call taken the candidate's second request, this one would find no room.
    assert (await run(gateway, chat_request(user_id="rich")))[-1].provider == "a"  # type: ignore[union-attr]
    with pytest.raises(AllProvidersRateLimited):
        await run(gateway, chat_request(user_id="rich"))


async def test_over_budget_is_the_answer_even_when_no_candidate_could_be_tried() -> None:
    config = with_limits(gateway_config(spec("a", ModelSpec(name="m"), key=None)), users=RPM_1)
    gateway = pipeline(config, {}, Clock())
    with pytest.raises(NotConfigured):
        await run(gateway, chat_request(user_id="u"))
    with pytest.raises(UserBudgetExhausted):
        await run(gateway, chat_request(user_id="u"))


async def test_an_answer_longer_than_estimated_owes_its_tokens() -> None:
    clock = Clock()
    tpm = (Rate("tokens_per_minute", 100, 60.0),)
    config = with_limits(gateway_config(spec("a", ModelSpec(name="m"), limits=tpm), spec("b", ModelSpec(name="m"))))
    gateway = pipeline(config, {"a": answers(2, UsageReport(30, 90)), "b": answers(3)}, clock)
    first = gateway.start_chat(chat_request("x" * 200), 5.0)  # estimated 50 tokens, reported 120
    assert [e async for e in first.events()][-1].provider == "a"  # type: ignore[union-attr]
    second = gateway.start_chat(chat_request("x" * 4), 5.0)
    events = [e async for e in second.events()]
    assert events[-1].provider == "b"  # type: ignore[union-attr]
    [skipped] = [r for r in second.records if r.attempt == 0]
    assert skipped.outcome is SkipReason.BUDGET_EXHAUSTED and skipped.retry_after_s == pytest.approx(12.6)
    clock.now += 12.61
    third = gateway.start_chat(chat_request("x" * 4), 5.0)
    assert [e async for e in third.events()][-1].provider == "a"  # type: ignore[union-attr]


async def test_skips_and_user_refusals_reach_telemetry_as_counts_since_the_last_flush() -> None:
    batches: list[mpb.WriteMetricsRequest] = []

    async def send(batch: mpb.WriteMetricsRequest) -> None:
        batches.append(batch)

    async def counts() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        batches.clear()
        await gateway.telemetry.flush()
        metrics = [m for b in batches for m in b.metrics if m.unit == "count"]
        return {(m.name, tuple(sorted(m.labels.items()))): m.value for m in metrics}

    clock = Clock()
    rpm_2 = (Rate("requests_per_minute", 2, 60.0),)
    providers = spec("a", ModelSpec(name="m"), limits=RPM_1), spec("b", ModelSpec(name="n"))
    config = with_limits(gateway_config(*providers), users=rpm_2)
    gateway = pipeline(config, {"a": answers(1), "b": answers(2)}, clock, send)
    for _ in range(2):  # the second finds no room at `a` and goes to `b`
        await run(gateway, chat_request(user_id="alice"))
    with pytest.raises(UserBudgetExhausted):
        await run(gateway, chat_request(user_id="alice"))
    skipped = ("llm.limits.candidate_skipped", (("model", "m"), ("provider", "a")))
    refused = ("llm.limits.user_refused", (("limits", "requests_per_minute"),))
    assert await counts() == {skipped: 1.0, refused: 1.0}  # no user_id in any label: callers choose them freely
    clock.now += 30.0  # alice has room again; `a` not until 60 s
    await run(gateway, chat_request(user_id="alice"))
    assert await counts() == {skipped: 1.0}
    assert await counts() == {}
