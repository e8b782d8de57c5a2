"""Routes in the config: the list form, the long form (targets, policy, weights), and what is refused at load."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_service import config
from gateway_service.errors import ConfigError

PROVIDERS = [
    {"name": "a", "type": "openai", "no_api_key": True, "base_url": "http://127.0.0.1:1/v1", "models": [{"name": "m"}]},
    {"name": "b", "type": "openai", "no_api_key": True, "base_url": "http://127.0.0.1:1/v1", "models": [{"name": "m"}]},
]


def parse(routes: dict[str, Any], **sections: Any) -> config.GatewayConfig:
    return config.parse({"providers": PROVIDERS, "routes": routes, **sections}, source="test.yaml", env={})


def refused(routes: dict[str, Any], **sections: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(routes, **sections)
    return str(caught.value)


def test_the_list_form_is_a_priority_route_in_the_order_written() -> None:
    route = parse({"default": ["b/m", "a/m"]}).routes["default"]
    assert route.policy == "priority" and route.targets == (("b", "m"), ("a", "m")) and route.weights == {}


def test_the_long_form_takes_a_policy_and_weights_with_one_by_default() -> None:
    cfg = parse({"default": {"targets": ["a/m", "b/m"], "policy": "weighted", "weights": {"b/m": 3}}})
    route = cfg.routes["default"]
    assert route.policy == "weighted" and route.weight("b", "m") == 3 and route.weight("a", "m") == 1


@pytest.mark.parametrize("policy", ["priority", "weighted", "lowest_latency", "lowest_cost", "least_busy"])
def test_every_policy_is_accepted(policy: str) -> None:
    assert parse({"r": {"targets": ["a/m"], "policy": policy}}).routes["r"].policy == policy


def test_an_unknown_policy_names_the_key() -> None:
    assert "test.yaml: routes.r.policy: must be one of" in refused({"r": {"targets": ["a/m"], "policy": "random"}})


def test_a_weight_for_a_target_not_in_the_route_is_an_error_naming_it() -> None:
    message = refused({"r": {"targets": ["a/m"], "policy": "weighted", "weights": {"b/m": 2}}})
    assert "routes.r.weights.b/m" in message and "'b/m' is not a target of this route" in message


def test_weights_on_another_policy_are_refused_rather_than_ignored() -> None:
    message = refused({"r": {"targets": ["a/m", "b/m"], "weights": {"b/m": 2}}})
    assert "routes.r.weights: only policy weighted takes weights (this route's policy is priority)" in message


@pytest.mark.parametrize("weight", [0, -1, 1.5, "3"])
def test_a_weight_is_a_positive_integer(weight: object) -> None:
    message = refused({"r": {"targets": ["a/m"], "policy": "weighted", "weights": {"a/m": weight}}})
    assert "routes.r.weights.a/m" in message


def test_a_route_hedges_after_a_fixed_delay_or_its_p95_time_to_first_token() -> None:
    fixed = parse({"r": {"targets": ["a/m", "b/m"], "hedge_after_ms": 400}}).routes["r"]
    assert (fixed.hedge_after_ms, fixed.hedge_after) == (400, None)
    p95 = parse({"r": {"targets": ["a/m", "b/m"], "hedge_after": "p95_ttft"}}).routes["r"]
    assert (p95.hedge_after_ms, p95.hedge_after) == (None, "p95_ttft")


@pytest.mark.parametrize(
    ("key", "value"), [("hedge_after_ms", 0), ("hedge_after_ms", "400"), ("hedge_after", "p99_ttft")]
)
def test_a_bad_hedge_delay_names_its_key(key: str, value: object) -> None:
    assert f"routes.r.{key}" in refused({"r": {"targets": ["a/m", "b/m"], key: value}})


def test_an_unknown_target_names_where_it_was_written_in_either_form() -> None:
    assert "routes.r[1]: unknown provider 'z'" in refused({"r": ["a/m", "z/m"]})
    assert "routes.r.targets[1]: unknown model 'x'" in refused({"r": {"targets": ["a/m", "b/x"]}})


def test_a_route_needs_a_target_and_no_unknown_key() -> None:
    assert "routes.r.targets" in refused({"r": {"targets": []}})
    assert "routes.r.order: unknown key" in refused({"r": {"targets": ["a/m"], "order": "x"}})


def test_the_slow_ramp_and_exploration_are_set_under_routing() -> None:
    cfg = parse({"r": ["a/m"]}, routing={"slow_start_window_s": 60.0, "slow_start_aggression": 2.0})
    assert cfg.routing.slow_start_window_s == 60.0 and cfg.routing.slow_start_aggression == 2.0
    assert cfg.routing.exploration == 0.05 and cfg.routing.slow_start_min_share == 0.1
    assert "routing.exploration" in refused({"r": ["a/m"]}, routing={"exploration": 0.9})


def test_check_config_shows_each_routes_policy_and_the_routing_keys_changed() -> None:
    from gateway_service.config import ServeSettings
    from gateway_service.config.summary import summary

    routes = {
        "plain": ["a/m", "b/m"],
        "spread": {"targets": ["a/m", "b/m"], "policy": "weighted", "weights": {"a/m": 3}},
    }
    lines = summary(parse(routes, routing={"slow_start_window_s": 60.0}), ServeSettings()).splitlines()
    assert "  plain: a/m, b/m" in lines  # priority, the default, is not spelt out
    assert "  spread (weighted, weights a/m=3): a/m, b/m" in lines
    assert "routing: slow_start_window_s=60.0" in lines
