"""What `gateway-service serve --check-config` prints: the settings a person checks, one short line each.

Keys and the Redis URL show as `**********` with where they came from; defaults are left out of
the per-provider lines so what was written stands out.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from gateway_service.config.limits import LimitSettings, Rate
from gateway_service.config.model import GatewayConfig
from gateway_service.config.providers import ModelSpec, ProviderSpec, price_version
from gateway_service.config.routing import Route
from gateway_service.config.serve import ServeSettings

SECRET = "**********"


def summary(config: GatewayConfig, serve: ServeSettings) -> str:
    return "\n".join(_lines(config, serve)) + "\n"


def _lines(config: GatewayConfig, serve: ServeSettings) -> Iterator[str]:
    yield f"config: {config.source}"
    yield f"listen: {serve.host}:{serve.port}, shutdown grace {serve.shutdown_grace_s:g} s, " + (
        f"metrics on :{serve.metrics_port}" if serve.metrics_port else "metrics off"
    )
    security = serve.security
    yield "security: " + ", ".join(
        [
            f"TLS {security.tls_cert}" + (" (mTLS)" if security.tls_client_ca else "")
            if security.tls_cert
            else "no TLS",
            f"callers {security.callers}" if security.callers else "no callers file",
            *(["INSECURE DEV"] if security.insecure_dev else []),
        ]
    )
    client = serve.schema_client
    over = (" over TLS" + (" with a token" if client.token_file else "")) if client.tls else ""
    yield f"schema_service: {config.schema_service + over if config.schema_service else 'none (no metrics sent)'}"
    yield f"providers ({len(config.providers)}):"
    for provider in config.providers:
        yield from _provider(provider)
    yield f"routes ({len(config.routes)}):"
    for alias, route in config.routes.items():
        yield f"  {alias}{_policy(route)}: {', '.join(f'{p}/{m}' for p, m in route.targets)}"
    yield f"routing: {_changed(config.routing)}"
    yield f"failover: {_changed(config.failover)}"
    yield f"telemetry: {_changed(config.telemetry)}"
    yield from _limits(config.limits)
    yield from price_warnings(config)


def price_warnings(config: GatewayConfig) -> Iterator[str]:
    """A warning per routed model without prices: its attempts would be recorded as free."""
    models = {(p.name, m.name): m for p in config.providers for m in p.models}
    seen: set[tuple[str, str]] = set()
    for alias, route in config.routes.items():
        for target in route.targets:
            model = models.get(target)
            if model is None or target in seen or model.input_usd_per_mtok or model.output_usd_per_mtok:
                continue
            seen.add(target)
            yield (
                f"warning: {target[0]}/{target[1]} (route {alias}) has no prices: its usage is costed at $0 "
                "(set input_usd_per_mtok and output_usd_per_mtok)"
            )


def _policy(route: Route) -> str:
    """` (weighted, weights a/m=3)` after the alias; nothing for the default, priority."""
    if route.policy == "priority":
        return ""
    weights = ", ".join(f"{label}={weight}" for label, weight in route.weights.items())
    return f" ({route.policy}, weights {weights})" if weights else f" ({route.policy})"


def _provider(provider: ProviderSpec) -> Iterator[str]:
    key = (
        f"key {SECRET} from {provider.credential_source}"
        if provider.api_key_env or provider.api_key_file
        else ("no key (no_api_key)")
    )
    if not provider.configured:
        key = f"NOT CONFIGURED: no key in {provider.credential_source}"
    where = f", {provider.base_url}" if provider.base_url else ""
    yield f"  {provider.name} ({provider.type}{where}): {key}"
    timeouts = (
        f"timeouts: attempt {provider.timeout_s:g} s, connect {provider.connect_timeout_s:g} s, "
        f"first token {provider.first_token_timeout_s:g} s, idle {provider.idle_timeout_s:g} s"
    )
    yield f"    {timeouts}; http_client {provider.http_client}" + _budget(", limits ", provider.limits)
    for model in provider.models:
        yield f"    - {model.name}: {_model(model)}"


def _model(model: ModelSpec) -> str:
    parts = [
        f"context {model.context_window or 'unknown'}",
        f"${model.input_usd_per_mtok:g}/${model.output_usd_per_mtok:g} per Mtok in/out"
        + _cache_prices(model)
        + f", price version {price_version(model)}",
        f"reasoning {model.reasoning}",
    ]
    if model.assistant_prefill:
        parts.append("assistant prefill")
    return ", ".join(parts) + _budget(", limits ", model.limits)


def _cache_prices(model: ModelSpec) -> str:
    cached = model.cached_input_usd_per_mtok
    written = model.cache_write_usd_per_mtok
    text = f", cached ${cached:g}" if cached is not None else ", cached = input"
    text += f", cache write ${written:g}" if written is not None else ""
    reasoning = model.reasoning_usd_per_mtok
    return text + (f", reasoning ${reasoning:g}" if reasoning is not None else "")


def _budget(prefix: str, rates: tuple[Rate, ...]) -> str:
    return prefix + " ".join(f"{r.name}={r.limit}" for r in rates) if rates else ""


def _limits(limits: LimitSettings) -> Iterator[str]:
    where = f"redis {SECRET}, prefix {limits.key_prefix}" if limits.backend == "redis" else "memory"
    yield f"limits: {where}" + _budget("; users ", limits.users)
    for user, rates in limits.user_overrides.items():
        yield f"  user {user or '(no user_id)'}: " + " ".join(f"{r.name}={r.limit}" for r in rates)
    if limits.spend.configured:
        yield f"spend (dollar budgets, on backend error {limits.spend.on_backend_error}): {_changed(limits.spend)}"


def _changed(section: BaseModel) -> str:
    """The keys set away from their defaults, or `defaults`."""
    fields = type(section).model_fields
    changed = [f"{k}={v}" for k, v in section if v != fields[k].default]
    return ", ".join(changed) if changed else "defaults"
