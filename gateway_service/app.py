"""One running gateway's shared state: config, adapters, router, failover, health, ledger, telemetry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from gateway_service.accounting import Ledger, cl100k, openai_family
from gateway_service.chat.failover import ChatRun, Failover
from gateway_service.chat.router import Router
from gateway_service.config import GatewayConfig, ProviderSpec, ProviderTimeouts, ProviderTransport
from gateway_service.domain.request import ChatRequest
from gateway_service.health import Health, HealthState, ModelView, build_health, model_views, provider_state
from gateway_service.instruments import GatewayMetrics
from gateway_service.limits.backends import build_limiter, build_store
from gateway_service.limits.budgets import Budgets, has_budgets
from gateway_service.limits.callers import CallerRates
from gateway_service.limits.core import Clock, Limiter
from gateway_service.limits.spend import Spend
from gateway_service.providers.base import ProviderAdapter, ProviderConfig
from gateway_service.providers.http import TransportSettings
from gateway_service.schema_channel import UsageSend
from gateway_service.telemetry import Send, Telemetry
from gateway_service.usage import UsageFeed
from servicekit.tracing import Tracing

AdapterFactory = Callable[[ProviderConfig], ProviderAdapter]


def provider_config(spec: ProviderSpec, http_tracer: trace.Tracer | None = None) -> ProviderConfig:
    """What the adapter needs; the key is revealed only here, on its way into the SDK client.

    The timeouts and the transport go over as their config groups (ProviderTimeouts, ProviderTransport),
    key by key under the same names, so a key added to a group reaches the adapter without a line here.
    """
    timeouts = {key: getattr(spec, key) for key in ProviderTimeouts.model_fields}
    transport = {key: getattr(spec, key) for key in ProviderTransport.model_fields}
    return ProviderConfig(
        name=spec.name,
        type=spec.type,
        base_url=spec.base_url,
        api_key=spec.api_key.get_secret_value() if spec.api_key else None,
        api_version=spec.api_version,
        transport=TransportSettings(**transport, tracer=http_tracer),
        effort_models=frozenset(m.name for m in spec.models if m.reasoning == "effort"),
        stream_options=spec.stream_options,
        **timeouts,
    )


def default_factory(config: ProviderConfig) -> ProviderAdapter:
    from gateway_service.providers import create_adapter

    return create_adapter(config)


@dataclass
class Gateway:
    config: GatewayConfig
    adapters: Mapping[str, ProviderAdapter]
    router: Router
    failover: Failover
    health: Health
    ledger: Ledger
    telemetry: Telemetry
    budgets: Budgets | None = None  # None when no rate-limit budget is configured: nothing to take
    instruments: GatewayMetrics | None = None  # Prometheus families, when the server has a registry
    caller_rates: CallerRates | None = None  # per-caller request rates (callers file), when callers are checked
    limiter: Limiter | None = None  # what budgets and caller rates are kept in
    spend: Spend | None = None  # dollar budgets, when limits.spend sets any
    usage: UsageFeed | None = None  # usage records to the ledger, when there is a schema service
    _telemetry_task: asyncio.Task[None] | None = None
    _usage_task: asyncio.Task[None] | None = None
    _tokenizer: asyncio.Future[object] | None = None

    def provider_state(self, spec: ProviderSpec) -> tuple[HealthState, float | None]:
        """Health as callers and operators see it, budgets included (the policy is health/state.py)."""
        return provider_state(self.health, spec, self.budgets.exhausted_until if self.budgets else None)

    def model_views(self, spec: ProviderSpec) -> list[ModelView]:
        """Each model's state, recent statistics, headroom and prices (ListProviders and the metrics)."""
        return model_views(self.health, spec, self.budgets.exhausted_until if self.budgets else None)

    def all_model_views(self) -> list[ModelView]:
        return [view for spec in self.config.providers for view in self.model_views(spec)]

    def provider_states(self) -> list[tuple[str, str]]:
        """Each provider's name and health state, as `provider_state` tells it (for the metrics)."""
        return [(spec.name, self.provider_state(spec)[0].name.lower()) for spec in self.config.providers]

    def in_flight(self, method: str) -> contextlib.AbstractContextManager[object]:
        """Counts a chat call in `llm_gateway_streams_in_flight` while it runs."""
        if self.instruments is None:
            return contextlib.nullcontext()
        return self.instruments.in_flight.labels(method).track_inprogress()

    def start_chat(self, request: ChatRequest, deadline_s: float | None) -> ChatRun:
        """A run over the request's candidates; raises UnknownModel / InvalidRequest for a bad route."""
        return self.failover.run(request, self.router.rank(request), deadline_s)

    def start_background(self) -> None:
        self.health.start()
        if self.telemetry.enabled:
            self._telemetry_task = asyncio.create_task(self.telemetry.run())
        if self.usage is not None:
            self._usage_task = asyncio.create_task(self.usage.run())
        if any(openai_family(m.name) for p in self.config.providers for m in p.models):
            self._tokenizer = asyncio.get_running_loop().run_in_executor(None, cl100k)  # off the loop, once

    async def close(self) -> None:
        if self._telemetry_task is not None:
            await _stopped(self._telemetry_task)
            await self.telemetry.close(self.config.telemetry.shutdown_flush_s)
        if self._usage_task is not None and self.usage is not None:
            await _stopped(self._usage_task)
            await self.usage.close()
        if self._tokenizer is not None:
            await self._tokenizer
        for adapter in self.adapters.values():
            await adapter.aclose()
        await self.health.aclose()
        if self.limiter is not None:
            await self.limiter.aclose()
        if self.spend is not None:
            await self.spend.aclose()


def build_gateway(
    config: GatewayConfig,
    factory: AdapterFactory = default_factory,
    send: Send | None = None,
    limits_clock: Clock | None = None,
    instruments: GatewayMetrics | None = None,
    tracing: Tracing | None = None,
    caller_rates: bool = False,
    record_usage: UsageSend | None = None,
    health_clock: Callable[[], float] | None = None,
) -> Gateway:
    """Adapters for every provider that has a key; the others stay unconfigured but listed.

    `caller_rates`: callers are authenticated, so their request rates (callers file `limits`) are kept.
    `record_usage`: RecordUsage to the schema service, where the usage feed sends each attempt's record.
    `health_clock`: health's monotonic clock (breakers, cooldowns, the slow ramp), time.monotonic unless given.
    """
    tracing = tracing or Tracing()
    http_tracer = tracing.tracer("gateway_service.http") if tracing.enabled else None  # None: no HTTP hooks
    adapters = {p.name: factory(provider_config(p, http_tracer)) for p in config.providers if p.configured}
    health = build_health(config, health_clock, instruments.health_shared if instruments else None)
    ledger = Ledger()
    telemetry = Telemetry(config.telemetry, send, tracing.tracer("gateway_service.telemetry"))
    observe, count = telemetry.observe, telemetry.count
    if instruments is not None:
        observe, count = _both(observe, instruments.observe_attempt), _both(count, instruments.count)
    budgets = rates = limiter = None
    if has_budgets(config) or caller_rates:
        limiter = build_limiter(config.limits, limits_clock, count)
        if has_budgets(config):
            budgets = Budgets(config, limiter, on_exhausted=health.notify, count=count)
        if caller_rates:
            rates = CallerRates(limiter, config.limits.key_prefix, count)
    spend = Spend(config.limits, build_store(config.limits), count) if config.limits.spend.configured else None
    usage = UsageFeed(config.usage, record_usage) if record_usage is not None and config.usage.enabled else None
    failover = Failover(
        config.failover,
        health,
        ledger,
        observe,
        budgets,
        tracing.tracer("gateway_service.chat"),
        instruments.observe_failover if instruments else None,
        spend,
        usage.record if usage is not None else None,
    )
    router = Router(config, adapters, budgets, health)
    gateway = Gateway(
        config,
        adapters,
        router,
        failover,
        health,
        ledger,
        telemetry,
        budgets,
        instruments,
        rates,
        limiter,
        spend,
        usage,
    )
    if instruments is not None:
        instruments.watch(gateway.provider_states, telemetry, usage)
        instruments.watch_models(gateway.all_model_views)
    return gateway


async def _stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _both(first: Callable[..., None], second: Callable[..., None]) -> Callable[..., None]:
    def call(*args: Any) -> None:
        first(*args)
        second(*args)

    return call
