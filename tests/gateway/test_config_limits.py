"""The `limits:` keys of the gateway config: provider, model and user budgets, the backend, and their errors."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gateway_service import config
from gateway_service.config import Rate
from gateway_service.errors import ConfigError

BASE = """
providers:
  - name: openai
    type: openai
    api_key_env: OPENAI_API_KEY
    limits: {requests_per_minute: 500, tokens_per_minute: 200000}
    models:
      - {name: gpt-4o-mini, limits: {requests_per_day: 10000}}
      - {name: gpt-4o}
routes:
  default: [openai/gpt-4o-mini]
limits:
  backend: redis
  redis_url: ${REDIS_URL:-redis://:pw@127.0.0.1:6379/0}
  key_prefix: gw
  redis_timeout_ms: 20
  users: {requests_per_minute: 60, tokens_per_day: 1000000}
  user_overrides:
    batch-job: {requests_per_minute: 600}
"""


def parse(text: str = BASE, **changes: Any) -> config.GatewayConfig:
    data = yaml.safe_load(text)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value
    return config.parse(data, source="gw.yaml", env={})


def test_budgets_of_providers_models_and_users() -> None:
    cfg = parse()
    openai = cfg.providers[0]
    assert openai.limits == (Rate("requests_per_minute", 500, 60.0), Rate("tokens_per_minute", 200000, 60.0))
    assert openai.models[0].limits == (Rate("requests_per_day", 10000, 86400.0),)
    assert openai.models[1].limits == ()
    limits = cfg.limits
    assert limits.backend == "redis" and limits.key_prefix == "gw" and limits.redis_timeout_ms == 20
    assert limits.redis_url is not None and limits.redis_url.get_secret_value() == "redis://:pw@127.0.0.1:6379/0"
    assert "pw@" not in repr(cfg)  # --check-config prints the settings: the URL's password must not show
    default = (Rate("requests_per_minute", 60, 60.0), Rate("tokens_per_day", 1000000, 86400.0))
    assert limits.user_budget("alice") == default
    # An override replaces the rates it names and keeps the default's others.
    assert limits.user_budget("batch-job") == (
        Rate("tokens_per_day", 1000000, 86400.0),
        Rate("requests_per_minute", 600, 60.0),
    )


def test_calls_without_a_user_id_can_have_their_own_override() -> None:
    cfg = parse(limits__user_overrides={"": {"requests_per_minute": 1000}})
    assert cfg.limits.user_budget("") == (
        Rate("tokens_per_day", 1000000, 86400.0),
        Rate("requests_per_minute", 1000, 60.0),
    )
    assert cfg.limits.user_budget("someone")[0] == Rate("requests_per_minute", 60, 60.0)


def test_no_limits_section_means_memory_and_no_budgets() -> None:
    cfg = config.parse(
        {"providers": [{"name": "p", "type": "openai", "no_api_key": True, "models": [{"name": "m"}]}]},
        source="gw.yaml",
        env={},
    )
    assert cfg.limits.backend == "memory" and cfg.limits.users == () and cfg.providers[0].limits == ()
    assert config.load(env={}).limits.backend == "memory"


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"providers__0__limits": {"requests_per_minit": 5}},
            "gw.yaml: providers[0].limits.requests_per_minit: unknown key (allowed: requests_per_second, ",
        ),
        (
            {"providers__0__models__0__limits": {"tokens_per_minute": -1}},
            "gw.yaml: providers[0].models[0].limits.tokens_per_minute: must be a positive integer",
        ),
        (
            {"providers__0__limits": {"requests_per_minute": 0}},
            "gw.yaml: providers[0].limits.requests_per_minute: must be a positive integer (leave the key out",
        ),
        (
            {"providers__0__limits": {"requests_per_minute": 2.5}},
            "gw.yaml: providers[0].limits.requests_per_minute: must be a positive integer",
        ),
        (
            {"providers__0__limits": {"requests_per_minute": True}},
            "gw.yaml: providers[0].limits.requests_per_minute: must be a positive integer",
        ),
        ({"providers__0__limits": [1]}, "gw.yaml: providers[0].limits: must be a mapping"),
        ({"limits__backend": "memcached"}, "gw.yaml: limits.backend: must be one of memory, redis, got 'memcached'"),
        ({"limits__redis_url": None}, "gw.yaml: limits.redis_url: is required with backend: redis"),
        ({"limits__redis_url": "http://127.0.0.1:6379"}, "gw.yaml: limits.redis_url: must start with redis://"),
        (
            {"limits__redis_url": "redis://:pw@127.0.0.1:port/0"},
            "gw.yaml: limits.redis_url: not a valid Redis URL: Port could not be cast to integer value as 'port'",
        ),
        ({"limits__redis_timeout_ms": 0}, "gw.yaml: limits.redis_timeout_ms: must be greater than 0, got 0"),
        ({"limits__redis_retry_s": -1}, "gw.yaml: limits.redis_retry_s: must be a non-negative number"),
        ({"limits__users": {"requests_per_minute": -5}}, "gw.yaml: limits.users.requests_per_minute: must be a posit"),
        ({"limits__user_overrides": {"bob": {"tokens": 5}}}, "gw.yaml: limits.user_overrides.bob.tokens: unknown key"),
        ({"limits__user_overrides": {"bob": 5}}, "gw.yaml: limits.user_overrides.bob: must be a mapping"),
        ({"limits__burst": 5}, "gw.yaml: limits.burst: unknown key (allowed: backend, redis_url, key_prefix, "),
    ],
)
def test_bad_limits_stop_start_up_naming_the_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(**changes)
    assert str(error.value).startswith(message), str(error.value)
