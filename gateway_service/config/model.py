"""The gateway config as a whole: providers, routes, routing, failover, telemetry, usage and limits sections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from gateway_service.config.base import (
    DERIVED,
    Flag,
    Frozen,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    Text,
    invalid,
    refuse_derived,
)
from gateway_service.config.limits import LimitSettings
from gateway_service.config.providers import ModelSpec, ProviderSpec
from gateway_service.config.routing import Route, RoutingSettings
from gateway_service.config.usage import UsageFeedSettings
from servicekit.addresses import grpc_target_problem


def _grpc_target(value: str | None) -> str | None:
    problem = grpc_target_problem(value) if value else None
    if problem:
        raise PydanticCustomError("config", "{message}", {"message": problem})
    return value


class FailoverSettings(Frozen):
    """How attempts are run (docs/failover.md)."""

    min_attempt_budget_s: NonNegativeFloat = 0.05
    """No attempt starts with less of the caller's deadline left."""
    default_deadline_s: NonNegativeFloat = 300.0
    """Used when the caller sets no gRPC deadline."""
    commit_window_ms: NonNegativeInt = 0
    """Default hold of output (the request's commit_window_ms overrides)."""
    commit_window_tokens: NonNegativeInt = 0
    """Default hold in deltas (the request's commit_window_tokens overrides)."""
    rate_limit_cooldown_s: NonNegativeFloat = 1.0
    """Cooldown after a 429 without Retry-After / retry-after-ms / RetryInfo."""
    quota_cooldown_s: NonNegativeFloat = 3600.0
    """Cooldown after a billing failure (OpenAI insufficient_quota)."""
    auth_cooldown_s: NonNegativeFloat = 300.0
    """Cooldown after 401/403 (the provider shows HEALTH_STATE_MISCONFIGURED)."""
    breaker_failures: NonNegativeInt = 5
    """Consecutive failures (5xx, timeouts, resets, malformed) that open the breaker."""
    breaker_open_s: NonNegativeFloat = 2.0
    """First open of a breaker; doubles for each failed probe (docs/failover.md)."""
    breaker_max_open_s: NonNegativeFloat = 30.0
    """Longest open of a breaker, however many probes failed."""
    breaker_window_s: PositiveFloat = 10.0
    """Sliding window over which a breaker measures the error rate."""
    breaker_min_requests: NonNegativeInt = 10
    """Results the window must hold before its error rate may open the breaker."""
    breaker_error_rate: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.5
    """Failed share of the window's results that opens the breaker."""
    stall_factor: PositiveFloat = 4.0
    """An attempt waiting this many times the usual (p90) time to first token marks its provider suspect."""
    stall_floor_s: NonNegativeFloat = 0.5
    """...but never one that waited less than this."""
    stats_window: NonNegativeInt = 200
    """Attempts kept per provider for ListProviders statistics."""
    rate_limit_headers: Flag = True
    """Read each provider's rate-limit response headers and skip a candidate whose stated headroom cannot take
    the request, before any 429 (docs/rate-limits.md)."""


class HealthSettings(Frozen):
    """Where provider health is kept: cooldowns, breakers, the half-open probe (docs/failover.md)."""

    backend: Literal["memory", "redis"] = "memory"
    """memory: each replica its own | redis: shared by every replica through the Redis of `limits.redis_url`
    (its key prefix and timeout too); while Redis is away each replica keeps its own, and says so."""


class TelemetrySettings(Frozen):
    """Metrics sent to the schema service; only used with `schema_service`."""

    buffer_size: NonNegativeInt = 10_000
    """Metrics held in memory, queued or in flight (while the schema service is away too); beyond it new ones
    are dropped, counted and logged (reason `buffer_full`)."""
    batch_size: NonNegativeInt = 500
    """Metrics per WriteMetrics call."""
    flush_interval_s: NonNegativeFloat = 1.0
    """Longest wait before a partial batch is sent."""
    retry_initial_s: PositiveFloat = 0.5
    """First wait before a failed batch is sent again; it doubles on each failure (with jitter)."""
    retry_max_s: PositiveFloat = 30.0
    """Longest wait between two tries of a batch (a RetryInfo from the schema service may ask for more)."""
    retry_for_s: PositiveFloat = 600.0
    """How long a batch is retried, from its first try, before it is dropped (counted, reason `expired`)."""
    shutdown_flush_s: NonNegativeFloat = 5.0
    """On shutdown, how long what waits may take to be sent; the rest is dropped (reason `shutdown`)."""


PositiveInt = Annotated[int, Field(gt=0, strict=True)]


class RequestBounds(Frozen):
    """What one chat request may hold (docs/gateway.md#request-bounds); over one: INVALID_ARGUMENT naming the field."""

    max_request_bytes: PositiveInt = 4 * 1024 * 1024
    """Largest gRPC message in or out; larger requests get RESOURCE_EXHAUSTED before they are read."""
    max_messages: PositiveInt = 1_000
    """Messages per chat."""
    max_tools: PositiveInt = 128
    """Tools per chat."""
    max_list_items: PositiveInt = 64
    """stop_sequences, provider_order, and tool_calls and reasoning entries per message."""
    max_text_chars: PositiveInt = 1024 * 1024
    """Characters of content, reasoning text, a tool description or arguments_json."""
    max_name_chars: PositiveInt = 256
    """Characters of model, names, tool call ids, schema_name, each stop sequence and provider_order entry."""
    max_json_depth: PositiveInt = 32
    """Nesting of arguments_json, Tool.parameters and ResponseFormat.json_schema (an object or array is a level)."""
    max_parts: PositiveInt = 64
    """Parts of one message (text, images, documents)."""
    max_part_bytes: PositiveInt = 5 * 1024 * 1024
    """Bytes of one image or document part (Anthropic's image limit is 5 MB; providers refuse larger)."""
    max_parts_bytes: PositiveInt = 20 * 1024 * 1024
    """Bytes of every image and document part of one request together; also bounded by max_request_bytes on
    gRPC and the OpenAI port."""


class GatewayConfig(Frozen):
    """The whole gateway config file."""

    schema_service: Annotated[Text | None, AfterValidator(_grpc_target)] = None
    """host:port of the schema service (a gRPC target: dns:///host:port too); metrics go there (WriteMetrics
    batches). SCHEMA_SERVICE_ADDR wins."""
    providers: tuple[ProviderSpec, ...] = Field(min_length=1)
    """The upstreams, each with its models (non-empty, names unique)."""
    routes: Mapping[str, Route] = {}
    """Alias -> a list of `provider/model` targets tried in that order, or a route in the long form (below)."""
    routing: RoutingSettings = RoutingSettings()
    """What the routes' policies share: exploration and the slow ramp after a recovery."""
    failover: FailoverSettings = FailoverSettings()
    """How attempts are run."""
    health: HealthSettings = HealthSettings()
    """Where provider health is kept (below)."""
    telemetry: TelemetrySettings = TelemetrySettings()
    """The metrics buffer."""
    usage: UsageFeedSettings = UsageFeedSettings()
    """Usage records to the schema service's ledger, and their spool (docs/usage.md)."""
    limits: LimitSettings = LimitSettings()
    """Where rate-limit budgets are kept, and each caller's budget (see "Rate-limit budgets")."""
    requests: RequestBounds = RequestBounds()
    """Sizes, counts and nesting a chat request may have (see "Request bounds")."""
    source: str = Field("<built-in default>", json_schema_extra=DERIVED)
    """The file this was read from (set by the loader, never written in the file)."""

    @model_validator(mode="before")
    @classmethod
    def _no_source_in_file(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            refuse_derived(data, "source", info)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        if self.health.backend == "redis" and self.limits.redis_url is None:
            raise invalid("health.backend", "redis needs limits.redis_url (the Redis the budgets use)")
        for index, provider in enumerate(self.providers):
            if provider.name in (p.name for p in self.providers[:index]):
                raise invalid(f"providers[{index}].name", f"duplicate name {provider.name!r}")
        for alias, route in self.routes.items():
            for index, (provider_name, model_name) in enumerate(route.targets):
                spec = self.provider(provider_name)
                if spec is None:
                    raise invalid(
                        f"routes.{route.target_path(alias, index)}",
                        f"unknown provider {provider_name!r} in '{provider_name}/{model_name}'",
                    )
                if spec.model(model_name) is None:
                    raise invalid(
                        f"routes.{route.target_path(alias, index)}",
                        f"unknown model {model_name!r} of provider {provider_name!r}",
                    )
        return self

    def provider(self, name: str) -> ProviderSpec | None:
        return next((p for p in self.providers if p.name == name), None)


__all__ = ["FailoverSettings", "GatewayConfig", "HealthSettings", "ModelSpec", "ProviderSpec", "TelemetrySettings"]
