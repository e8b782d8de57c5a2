"""One running gateway's shared state: config, adapters, router, failover, health, ledger, telemetry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway_service.accounting import Ledger
from gateway_service.chat.failover import ChatRun, Failover
from gateway_service.chat.router import Router
from gateway_service.config import GatewayConfig, ProviderSpec
from gateway_service.domain.request import ChatRequest
from gateway_service.health import Health
from gateway_service.limits.budgets import Budgets, build_limiter, has_budgets
from gateway_service.limits.core import Clock
from gateway_service.providers.base import ProviderAdapter, ProviderConfig
from gateway_service.telemetry import Send, Telemetry

AdapterFactory = Callable[[ProviderConfig], ProviderAdapter]


def provider_config(spec: ProviderSpec) -> ProviderConfig:
    """What the adapter needs; the key is revealed only here, on its way into the SDK client."""
    return ProviderConfig(
        name=spec.name,
        type=spec.type,
        base_url=spec.base_url,
        api_key=spec.api_key.reveal() if spec.api_key else None,
        api_version=spec.api_version,
        connect_timeout_s=spec.connect_timeout_s,
        first_token_timeout_s=spec.first_token_timeout_s,
        idle_timeout_s=spec.idle_timeout_s,
        timeout_s=spec.timeout_s,
        http_client=spec.http_client,
        effort_models=frozenset(m.name for m in spec.models if m.reasoning == "effort"),
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
    _telemetry_task: asyncio.Task[None] | None = None

    def start_chat(self, request: ChatRequest, deadline_s: float | None) -> ChatRun:
        """A run over the request's candidates; raises UnknownModel / InvalidRequest for a bad route."""
        return self.failover.run(request, self.router.candidates(request), deadline_s)

    def start_background(self) -> None:
        if self.telemetry.enabled:
            self._telemetry_task = asyncio.create_task(self.telemetry.run())

    async def close(self) -> None:
        if self._telemetry_task is not None:
            self._telemetry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._telemetry_task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.telemetry.flush(), 2.0)
        for adapter in self.adapters.values():
            await adapter.aclose()
        if self.budgets is not None:
            await self.budgets.aclose()


def build_gateway(
    config: GatewayConfig, factory: AdapterFactory = default_factory, send: Send | None = None,
    limits_clock: Clock | None = None,
) -> Gateway:  # fmt: skip
    """Adapters for every provider that has a key; the others stay unconfigured but listed."""
    adapters = {p.name: factory(provider_config(p)) for p in config.providers if p.configured}
    health, ledger = Health(config.failover), Ledger()
    telemetry = Telemetry(config.telemetry, send)
    budgets = None
    if has_budgets(config):
        limiter = build_limiter(config.limits, limits_clock, telemetry.count)
        budgets = Budgets(config, limiter, on_exhausted=health.notify, count=telemetry.count)
    failover = Failover(config.failover, health, ledger, telemetry.observe, budgets)
    router = Router(config, adapters, budgets)
    return Gateway(config, adapters, router, failover, health, ledger, telemetry, budgets)
