"""Provider protos for ListProviders / WatchProviders: configuration, health, statistics, headroom and prices,
per provider and per model."""

from __future__ import annotations

from gateway_service.api.to_proto import REASONS
from gateway_service.app import Gateway
from gateway_service.config import ProviderSpec
from gateway_service.health import HeadroomView, HealthState, ModelView, WindowCounts, summed
from llmgateway.v1 import provider_service_pb2 as ppb

TYPES = {
    "openai": ppb.PROVIDER_TYPE_OPENAI,
    "gemini": ppb.PROVIDER_TYPE_GEMINI,
    "anthropic": ppb.PROVIDER_TYPE_ANTHROPIC,
    "openai_compatible": ppb.PROVIDER_TYPE_OPENAI_COMPATIBLE,
    "cohere": ppb.PROVIDER_TYPE_COHERE,
}
STATES = {
    HealthState.UNCONFIGURED: ppb.HEALTH_STATE_UNCONFIGURED,
    HealthState.HEALTHY: ppb.HEALTH_STATE_HEALTHY,
    HealthState.DEGRADED: ppb.HEALTH_STATE_DEGRADED,
    HealthState.COOLING_DOWN: ppb.HEALTH_STATE_COOLING_DOWN,
    HealthState.UNHEALTHY: ppb.HEALTH_STATE_UNHEALTHY,
    HealthState.MISCONFIGURED: ppb.HEALTH_STATE_MISCONFIGURED,
}
# What the SDKs call when no base_url is configured.
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "cohere": "https://api.cohere.com",
}


def all_providers(gateway: Gateway) -> list[ppb.Provider]:
    return [provider(gateway, spec) for spec in gateway.config.providers]


def one_provider(gateway: Gateway, name: str) -> ppb.Provider:
    spec = gateway.config.provider(name)
    assert spec is not None  # health only reports configured providers
    return provider(gateway, spec)


def state_key(message: ppb.Provider) -> tuple[object, ...]:
    """What counts as a change for WatchProviders (statistics and headroom alone do not)."""
    models = tuple((m.health, m.cooldown_until.seconds) for m in message.models)
    return (message.health, message.cooldown_until.seconds, message.configured, message.last_error, models)


def provider(gateway: Gateway, spec: ProviderSpec) -> ppb.Provider:
    state, until = gateway.provider_state(spec)
    stats, totals = gateway.health.stats(spec.name), gateway.ledger.totals(spec.name)
    views = gateway.model_views(spec)
    message = ppb.Provider(
        name=spec.name,
        type=TYPES[spec.type],
        configured=spec.configured,
        credential_source=spec.credential_source,
        base_url=spec.base_url or DEFAULT_BASE_URLS.get(spec.type, ""),
        health=STATES[state],
        models=[model(view) for view in views],
        stats=ppb.ProviderStats(
            requests=stats.requests,
            failures=stats.failures,
            error_rate=stats.error_rate,
            ttft_p50_ms=stats.ttft_p50_ms,
            ttft_p95_ms=stats.ttft_p95_ms,
            latency_p50_ms=stats.latency_p50_ms,
            latency_p95_ms=stats.latency_p95_ms,
            cost_usd=float(totals.cost_usd),
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            windows=[window(w) for w in summed(views)],
            in_flight=sum(v.stats.in_flight for v in views),
        ),
        last_error=gateway.health.last_error(spec.name),
    )
    if until is not None:
        message.cooldown_until.FromNanoseconds(int(until * 1e9))
    return message


def model(view: ModelView) -> ppb.Model:
    spec, stats = view.model, view.stats
    message = ppb.Model(
        name=spec.name,
        context_window=spec.context_window,
        input_usd_per_mtok=float(spec.input_usd_per_mtok),
        output_usd_per_mtok=float(spec.output_usd_per_mtok),
        health=STATES[view.state],
        stats=ppb.ModelStats(
            windows=[window(w) for w in stats.windows],
            ttft_p50_ms=stats.ttft_p50_ms,
            ttft_p95_ms=stats.ttft_p95_ms,
            output_tokens_per_second=stats.output_tokens_per_s,
            in_flight=stats.in_flight,
        ),
        headroom=[headroom(h) for h in view.headroom],
    )
    if view.until is not None:
        message.cooldown_until.FromNanoseconds(int(view.until * 1e9))
    return message


def window(counts: WindowCounts) -> ppb.WindowStats:
    message = ppb.WindowStats(requests=counts.requests, failures=counts.failures, success_rate=counts.success_rate)
    message.window.FromSeconds(counts.window_s)
    ranked = sorted(counts.errors.items(), key=lambda item: (-item[1], item[0].value))
    message.errors.extend(ppb.ErrorCount(reason=REASONS[kind], count=count) for kind, count in ranked)
    return message


def headroom(view: HeadroomView) -> ppb.RateLimitHeadroom:
    message = ppb.RateLimitHeadroom(limit=view.limit, remaining=view.remaining, limit_value=view.of or 0)
    message.resets_at.FromNanoseconds(int(view.resets_at * 1e9))
    return message
