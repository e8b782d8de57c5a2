"""Routing policies and the slow ramp at the domain level: the real Router over the real MemoryHealth, with a
fake clock, attempts told to health as failover tells it (admit, then a result)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from gateway_service.accounting import Ledger
from gateway_service.chat.failover import Failover
from gateway_service.chat.router import CALLER_ORDER, Router
from gateway_service.config import GatewayConfig, ModelSpec, Route, RoutingSettings
from gateway_service.domain.events import AttemptStarted
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.health import MemoryHealth, Target
from tests.gateway.pipeline_helpers import Clock, ScriptedAdapter, chat_request, spec, words

NAMES = ("a", "b", "c")


@dataclass
class Routed:
    router: Router
    health: MemoryHealth
    clock: Clock

    def first(self, n: int, **request: Any) -> list[str]:
        """The provider put first for each of `n` requests."""
        return [self.router.candidates(chat_request(**request))[0].provider.name for _ in range(n)]

    def target(self, name: str) -> Target:
        provider = self.router.config.provider(name)
        assert provider is not None
        return Target(name, "m", provider.key_id)  # what the router's candidate for it is known by

    def answered(self, name: str, ttft_s: float, total_s: float, output_tokens: int) -> None:
        ticket = self.health.admit(self.target(name), 5.0)
        self.health.record_success(ticket, ttft_s, total_s, output_tokens)


def routed(
    policy: str = "priority",
    weights: dict[str, int] | None = None,
    models: dict[str, ModelSpec] | None = None,
    adapters: dict[str, ScriptedAdapter] | None = None,
    **routing: float,
) -> Routed:
    models = models or {}
    providers = tuple(spec(n, models.get(n, ModelSpec(name="m"))) for n in NAMES)
    route = Route(targets=tuple((n, "m") for n in NAMES), policy=policy, weights=weights or {})  # type: ignore[arg-type]
    config = GatewayConfig(
        providers=providers,
        routes={"default": route},
        routing=RoutingSettings(**routing),  # type: ignore[arg-type]
        failover={"breaker_failures": 1, "breaker_open_s": 1.0},  # type: ignore[arg-type]
    )
    clock = Clock()
    health = MemoryHealth(config.failover, clock)
    adapters = adapters or {n: ScriptedAdapter(n, []) for n in NAMES}
    return Routed(Router(config, adapters, health=health), health, clock)


def test_weighted_is_nginx_smooth_round_robin_exact_and_spread() -> None:
    r = routed("weighted", {"a/m": 5})
    # nginx's worked example for weights 5, 1, 1: a a b a c a a, then again.
    assert r.first(14) == list("aabacaa" * 2)


def test_weighted_shares_match_the_weights_over_any_whole_cycle() -> None:
    r = routed("weighted", {"a/m": 3, "c/m": 2})
    assert Counter(r.first(600)) == {"a": 300, "b": 100, "c": 200}


def test_weighted_orders_the_rest_for_failover_and_scores_by_weight() -> None:
    r = routed("weighted", {"a/m": 3, "c/m": 2})
    ranking = r.router.rank(chat_request())
    assert [c.provider.name for c in ranking.candidates] == ["a", "c", "b"]
    assert [ranking.choices[c.label] for c in ranking.candidates][0].score == 3.0
    assert {ranking.choices[c.label].policy for c in ranking.candidates} == {"weighted"}


def test_lowest_latency_prefers_the_fastest_and_explores_the_others_in_turn() -> None:
    r = routed("lowest_latency", exploration=0.1)
    r.answered("a", ttft_s=0.5, total_s=1.5, output_tokens=100)
    r.answered("b", ttft_s=0.05, total_s=0.55, output_tokens=100)
    r.answered("c", ttft_s=0.2, total_s=0.7, output_tokens=100)
    firsts = r.first(40)
    assert Counter(firsts) == {"b": 36, "c": 2, "a": 2}  # one request in ten goes to another, each in turn
    assert [i for i, name in enumerate(firsts) if name != "b"] == [9, 19, 29, 39]
    ranking = r.router.rank(chat_request(max_output_tokens=200))
    expected_ms = (0.05 + 200 / 200.0) * 1000  # ttft + 200 tokens at 200 tokens/s
    assert ranking.choices["b/m"].score == pytest.approx(expected_ms)


def test_lowest_latency_explores_exactly_its_share() -> None:
    """exploration 0.4 was `round(1 / 0.4)`: one request in 2, half of them instead of 40 %."""
    r = routed("lowest_latency", exploration=0.4)
    r.answered("a", ttft_s=0.5, total_s=1.5, output_tokens=100)
    r.answered("b", ttft_s=0.05, total_s=0.55, output_tokens=100)
    r.answered("c", ttft_s=0.2, total_s=0.7, output_tokens=100)
    firsts = r.first(10)
    assert Counter(firsts) == {"b": 6, "c": 2, "a": 2}
    assert [i for i, name in enumerate(firsts) if name != "b"] == [2, 4, 7, 9]


def test_lowest_latency_weighs_tokens_per_second_against_the_first_token() -> None:
    r = routed("lowest_latency", exploration=0.0)
    r.answered("a", ttft_s=0.05, total_s=2.05, output_tokens=100)  # quick to start, 50 tokens/s
    r.answered("b", ttft_s=0.3, total_s=0.4, output_tokens=100)  # slower to start, 1000 tokens/s
    r.answered("c", ttft_s=9.0, total_s=19.0, output_tokens=100)  # slow in every way
    assert r.first(1, max_output_tokens=10) == ["a"]
    assert r.first(1, max_output_tokens=1000) == ["b"]


def test_lowest_latency_tries_unmeasured_targets_first_in_route_order() -> None:
    r = routed("lowest_latency", exploration=0.0)
    r.answered("a", ttft_s=0.01, total_s=0.02, output_tokens=10)
    ranking = r.router.rank(chat_request())
    assert [c.provider.name for c in ranking.candidates] == ["b", "c", "a"]
    assert ranking.choices["b/m"].score is None


def test_lowest_latency_averages_decay_toward_the_recent_attempts() -> None:
    r = routed("lowest_latency", exploration=0.0)
    r.answered("a", ttft_s=0.05, total_s=0.1, output_tokens=10)
    r.answered("b", ttft_s=0.1, total_s=0.2, output_tokens=10)
    r.answered("c", ttft_s=9.0, total_s=9.1, output_tokens=10)
    assert r.first(1) == ["a"]
    for _ in range(10):
        r.answered("a", ttft_s=0.5, total_s=0.6, output_tokens=10)  # a slowed down
    assert r.first(1) == ["b"]


def priced(input_usd: str, output_usd: str) -> ModelSpec:
    return ModelSpec(name="m", input_usd_per_mtok=Decimal(input_usd), output_usd_per_mtok=Decimal(output_usd))


def test_lowest_cost_ranks_by_the_requests_estimated_tokens_at_each_price_unpriced_last() -> None:
    models = {"a": ModelSpec(name="m"), "b": priced("3", "1"), "c": priced("0.5", "8")}
    r = routed("lowest_cost", models=models)
    long_prompt, short_prompt = "x" * 40_000, "hi"
    assert [c.provider.name for c in r.router.candidates(chat_request(long_prompt, max_output_tokens=10))] == [
        "c",
        "b",
        "a",
    ]
    assert r.first(1, text=short_prompt, max_output_tokens=1000) == ["b"]
    ranking = r.router.rank(chat_request(long_prompt, max_output_tokens=10))
    assert ranking.choices["c/m"].score == pytest.approx((10_000 * 0.5 + 10 * 8) / 1e6)
    assert ranking.choices["a/m"].score is None


def test_least_busy_puts_the_target_with_fewest_in_flight_first_ties_in_turn() -> None:
    r = routed("least_busy")
    assert r.first(3) == ["a", "b", "c"]  # all idle: in turn
    a, b = r.target("a"), r.target("b")
    tickets = [r.health.admit(a, 5.0), r.health.admit(a, 5.0), r.health.admit(b, 5.0)]
    ranking = r.router.rank(chat_request())
    assert [c.provider.name for c in ranking.candidates] == ["c", "b", "a"]
    assert [ranking.choices[c.label].score for c in ranking.candidates] == [0.0, 1.0, 2.0]
    for ticket in tickets:
        r.health.record_cancelled(ticket)
    assert r.health.in_flight(a) == r.health.in_flight(b) == 0


def test_provider_order_wins_over_the_policy_and_says_so() -> None:
    r = routed("weighted", {"a/m": 5})
    ranking = r.router.rank(chat_request(provider_order=("c",)))
    assert [c.provider.name for c in ranking.candidates] == ["c", "a", "b"]
    assert ranking.choices["c/m"].policy == CALLER_ORDER and ranking.choices["c/m"].score == 1.0
    assert ranking.choices["a/m"].policy == "weighted"


def recover(r: Routed, name: str) -> None:
    """Open the target's breaker with one failure, wait it out, and close it with a good probe."""
    target = r.target(name)
    r.health.record_failure(r.health.admit(target, 5.0), ProviderError(FailureKind.SERVER_ERROR, "503"), 0.1)
    r.clock.now += 1.0
    r.health.record_success(r.health.admit(target, 5.0), 0.01, 0.02, 1)
    assert r.health.recovered_at(target) == r.clock.now


def share_first(r: Routed, name: str, at_s: float, requests: int = 100) -> float:
    start = r.health.recovered_at(r.target(name))
    assert start is not None
    r.clock.now = start + at_s
    return r.first(requests).count(name) / requests


def test_the_slow_ramp_grows_a_recovered_targets_share_over_the_window() -> None:
    r = routed("priority", slow_start_window_s=30.0)
    recover(r, "a")
    shares = [share_first(r, "a", t) for t in (0.0, 6.0, 15.0, 24.0, 30.0)]
    assert shares == [0.1, 0.2, 0.5, 0.8, 1.0]


def test_the_ramps_aggression_sends_traffic_back_sooner() -> None:
    r = routed("priority", slow_start_window_s=40.0, slow_start_aggression=2.0)
    recover(r, "a")
    assert share_first(r, "a", 10.0) == 0.5  # (10 / 40) ^ (1 / 2)


def test_the_slow_ramp_scales_a_weighted_targets_weight() -> None:
    r = routed("weighted", {"a/m": 2, "b/m": 1, "c/m": 1}, slow_start_window_s=30.0)
    recover(r, "a")
    start = r.health.recovered_at(r.target("a"))
    assert start is not None
    r.clock.now = start + 15.0  # a weighs 2 x 0.5 = 1: a third of the traffic
    assert Counter(r.first(300)) == {"a": 100, "b": 100, "c": 100}


def test_no_ramp_when_the_window_is_zero() -> None:
    r = routed("priority", slow_start_window_s=0.0)
    recover(r, "a")
    assert share_first(r, "a", 0.0) == 1.0


async def test_started_names_the_policy_and_the_score_that_chose_the_target() -> None:
    r = routed("weighted", {"b/m": 4}, adapters={n: ScriptedAdapter(n, [words(n)]) for n in NAMES})
    failover = Failover(r.router.config.failover, r.health, Ledger())
    request = chat_request()
    events = [e async for e in failover.run(request, r.router.rank(request), 5.0).events()]
    started = [e for e in events if isinstance(e, AttemptStarted)]
    assert [(s.provider, s.policy, s.score) for s in started] == [("b", "weighted", 4.0)]
