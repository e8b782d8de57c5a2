"""Candidates for a request: the route's targets (or one `provider/model`), reordered by provider_order,
each with the rate-limit budget slots failover takes from before trying it."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from gateway_service.config import GatewayConfig, ModelSpec, ProviderSpec
from gateway_service.domain.request import ChatRequest
from gateway_service.errors import InvalidRequest, UnknownModel
from gateway_service.health import Target
from gateway_service.limits.budgets import Budgets
from gateway_service.limits.core import Slot
from gateway_service.providers.base import ProviderAdapter
from servicekit.errors import FieldViolation


@dataclass(frozen=True)
class Candidate:
    """One provider/model the pipeline may try; `adapter` is None when the provider has no key."""

    provider: ProviderSpec
    model: ModelSpec
    adapter: ProviderAdapter | None
    budget: tuple[Slot, ...] = ()  # the provider's and the model's rate-limit budgets, taken before an attempt

    @functools.cached_property
    def key_id(self) -> str:
        """The provider's key_id, hashed once per candidate (candidates are made once per provider/model, see
        Router._candidate) rather than on every request."""
        return self.provider.key_id

    @functools.cached_property
    def target(self) -> Target:
        """What health knows this candidate by (made once per candidate, like key_id)."""
        return Target(self.provider.name, self.model.name, self.key_id)

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.model.name}"


class Router:
    def __init__(
        self, config: GatewayConfig, adapters: Mapping[str, ProviderAdapter], budgets: Budgets | None = None
    ) -> None:
        self.config = config
        self.adapters = adapters
        self.budgets = budgets
        # Every input of a Candidate is fixed for the router's life: one per provider/model, made on first use.
        self._made: dict[tuple[str, str], Candidate] = {}

    def candidates(self, request: ChatRequest) -> list[Candidate]:
        """The ordered candidates; UnknownModel / InvalidRequest name the offending field."""
        targets = self._targets(request.model)
        order = self._preference(request.provider_order)
        # A stable sort keeps the route's order among providers the caller did not rank.
        targets = sorted(targets, key=lambda t: order.get(t[0], len(order)))
        return [self._candidate(provider, model) for provider, model in targets]

    def _targets(self, model: str) -> list[tuple[str, str]]:
        route = self.config.routes.get(model)
        if route is not None:
            return list(route)
        provider_name, slash, model_name = model.partition("/")
        provider = self.config.provider(provider_name) if slash else None
        if provider is None or provider.model(model_name) is None:
            known = ", ".join(sorted(self.config.routes)) or "none"
            raise UnknownModel(
                f"model {model!r} is neither a route ({known}) nor a configured provider/model",
                field_violations=[FieldViolation("model", "unknown route or provider/model")],
                metadata={"model": model},
            )
        return [(provider_name, model_name)]

    def _preference(self, provider_order: tuple[str, ...]) -> dict[str, int]:
        order: dict[str, int] = {}
        for index, name in enumerate(provider_order):
            if self.config.provider(name) is None:
                raise InvalidRequest(
                    f"provider_order names unknown provider {name!r}",
                    field_violations=[FieldViolation(f"provider_order[{index}]", f"unknown provider {name!r}")],
                )
            order.setdefault(name, index)
        return order

    def _candidate(self, provider_name: str, model_name: str) -> Candidate:
        made = self._made.get((provider_name, model_name))
        if made is None:
            made = self._made[provider_name, model_name] = self._make(provider_name, model_name)
        return made

    def _make(self, provider_name: str, model_name: str) -> Candidate:
        provider = self.config.provider(provider_name)
        assert provider is not None  # routes were validated at start-up
        model = provider.model(model_name)
        assert model is not None
        budget = self.budgets.candidate_slots(provider_name, model_name) if self.budgets is not None else ()
        return Candidate(provider, model, self.adapters.get(provider_name), budget)
