"""Gateway settings: a YAML file (or the built-in default) plus the environment -> frozen pydantic models.

Everything is validated at start-up: an unknown key, a route naming an unknown provider or
model, a bad value or a missing file raises ConfigError naming the file and the key path
(`providers[1].models[0].context_window`). String values may use `${NAME}` or `${NAME:-default}`
from the environment. Secrets (provider keys, the Redis URL) are SecretStr: they print as `**********`.

    base.py       what every section shares (frozen, extra="forbid", strict numbers)
    providers.py  providers, their keys, timeouts, transport and models
    limits.py     rate-limit budgets and the limits backend
    usage.py      the usage feed to the schema service's ledger, and its spool
    routing.py    routes (targets, policy, weights) and what their policies share
    model.py      the file as a whole: failover, health, telemetry, request bounds
    loading.py    YAML + `${VAR}` -> models, errors naming the key path
    serve.py      the `serve` command's settings (flags and environment, pydantic-settings)
    summary.py    what `serve --check-config` prints

"Limits" means one thing in the gateway: rate limits and the budgets kept for them (the `limits:`
sections, limits.py here, the gateway_service/limits/ package). What one chat request may hold are its
bounds (RequestBounds, the `requests:` section); an attempt's deadlines and commit window its timing
(chat/attempt.py AttemptTiming).
"""

from __future__ import annotations

from gateway_service.config.limits import Budget, LimitSettings, Rate, RateLimits, SpendLimits, SpendSettings
from gateway_service.config.loading import DEFAULT_CONFIG_YAML, interpolate, load, parse
from gateway_service.config.model import (
    FailoverSettings,
    GatewayConfig,
    HealthSettings,
    RequestBounds,
    TelemetrySettings,
)
from gateway_service.config.providers import (
    DEFAULT_TIMEOUTS,
    DEFAULT_TRANSPORT,
    ModelSpec,
    ProviderSpec,
    ProviderTimeouts,
    ProviderTransport,
)
from gateway_service.config.routing import Policy, Route, RoutingSettings
from gateway_service.config.serve import ServeSettings
from gateway_service.config.usage import UsageFeedSettings

__all__ = [
    "DEFAULT_CONFIG_YAML",
    "DEFAULT_TIMEOUTS",
    "DEFAULT_TRANSPORT",
    "Budget",
    "FailoverSettings",
    "GatewayConfig",
    "HealthSettings",
    "LimitSettings",
    "SpendLimits",
    "SpendSettings",
    "ModelSpec",
    "ProviderSpec",
    "ProviderTimeouts",
    "ProviderTransport",
    "Policy",
    "RequestBounds",
    "Route",
    "RoutingSettings",
    "Rate",
    "RateLimits",
    "ServeSettings",
    "TelemetrySettings",
    "UsageFeedSettings",
    "interpolate",
    "load",
    "parse",
]
