"""Candidates for a request, in order: the route's targets (or one `provider/model`) as its policy orders
them (chat/policies.py), a target still on its slow ramp after a recovery moved behind the others but for
its share of requests (health/ramp.py), then the caller's provider_order first; each candidate with the
rate-limit budget slots failover takes from before trying it, and the policy and score that placed it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway_service.chat.candidate import Candidate
from gateway_service.chat.policies import Policy, Priority, Scored, policy_for
from gateway_service.config import GatewayConfig, Route
from gateway_service.domain.request import ChatRequest
from gateway_service.errors import InvalidRequest, UnknownModel
from gateway_service.health import Health, MemoryHealth, SlowStart
from gateway_service.limits.budgets import Budgets
from gateway_service.providers.base import ProviderAdapter
from servicekit.errors import FieldViolation

__all__ = ["CALLER_ORDER", "Candidate", "Choice", "Ranking", "Router"]  # Candidate lives in candidate.py

CALLER_ORDER = "caller_order"  # the policy name of a candidate the request's provider_order placed


@dataclass(frozen=True)
class Choice:
    """Which policy put a candidate where it is, and its score there (None: nothing to score it by)."""

    policy: str
    score: float | None


@dataclass(frozen=True)
class Ranking:
    """A request's candidates in the order to try them, and the choice behind each."""

    candidates: list[Candidate]
    choices: dict[str, Choice] = field(default_factory=dict)  # by candidate label
    route: Route | None = None  # the route the request named (its hedge delay), None for one provider/model

    def choice(self, candidate: Candidate) -> Choice | None:
        return self.choices.get(candidate.label)


class Router:
    def __init__(
        self,
        config: GatewayConfig,
        adapters: Mapping[str, ProviderAdapter],
        budgets: Budgets | None = None,
        health: Health | None = None,
    ) -> None:
        self.config = config
        self.adapters = adapters
        self.budgets = budgets
        self.health = health if health is not None else MemoryHealth(config.failover)
        self.ramp = SlowStart(config.routing, self.health)
        self._policies: dict[str, Policy] = {
            alias: policy_for(route, config, self.health, self.ramp) for alias, route in config.routes.items()
        }
        # Every input of a Candidate is fixed for the router's life: one per provider/model, made on first use.
        self._made: dict[tuple[str, str], Candidate] = {}

    def candidates(self, request: ChatRequest) -> list[Candidate]:
        """The ordered candidates; UnknownModel / InvalidRequest name the offending field."""
        return self.rank(request).candidates

    def rank(self, request: ChatRequest) -> Ranking:
        """The ordered candidates and the choice behind each; UnknownModel / InvalidRequest name the field."""
        candidates = [self._candidate(provider, model) for provider, model in self._targets(request.model)]
        order = self._preference(request.provider_order)
        policy = self._policies.get(request.model) or Priority()
        scored = self._ramped(policy.order(candidates, request), policy.name)
        # A stable sort keeps the policy's order among providers the caller did not rank.
        scored = sorted(scored, key=lambda s: order.get(s[0].provider.name, len(order)))
        choices = {}
        for candidate, choice in scored:
            rank = order.get(candidate.provider.name)
            choices[candidate.label] = choice if rank is None else Choice(CALLER_ORDER, float(rank + 1))
        return Ranking([candidate for candidate, _ in scored], choices, self.config.routes.get(request.model))

    def _ramped(self, scored: Scored, policy: str) -> list[tuple[Candidate, Choice]]:
        """A target on its slow ramp keeps its place for its share of requests, else goes behind the others.

        A weighted route has scaled its weight by the share already."""
        kept: list[tuple[Candidate, Choice]] = []
        behind: list[tuple[Candidate, Choice]] = []
        for candidate, score in scored:
            share = 1.0 if policy == "weighted" else self.ramp.share(candidate.target)
            keeps = share >= 1.0 or self.ramp.keeps_place(candidate.target, share)
            (kept if keeps else behind).append((candidate, Choice(policy, score)))
        return kept + behind

    def _targets(self, model: str) -> list[tuple[str, str]]:
        route = self.config.routes.get(model)
        if route is not None:
            return list(route.targets)
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
