"""Routing policies: each puts a route's candidates in an order for one request, with a score for each.

    priority        as written; score: the position (1 first)
    weighted        smooth weighted round-robin (nginx): each target's current weight grows by its weight
                    every request, the largest goes first and gives back the total; so over any `sum of
                    weights` requests each target goes first exactly `weight` times, evenly spread, never
                    drawn at random; score: the weight (times its slow-ramp share)
    lowest_latency  the lowest expected time: the decaying average time to first token plus the request's
                    output (max_output_tokens, else OUTPUT_GUESS tokens) at the decaying tokens per second
                    (health/statistics.py Speed); a target not measured yet goes first, to be measured;
                    `routing.exploration` of the requests (counted), in turn, send another target first, so a slow or
                    recovered one shows when it is fast again; score: the expected milliseconds
    lowest_cost     the request's estimated input tokens and max_output_tokens (else
                    `limits.spend.default_output_tokens`) at each model's prices; a model without prices goes
                    last; score: the estimated US dollars
    least_busy      the fewest attempts in flight on the target; ties go round in turn; score: in flight

Ties keep the route's order. A policy only orders: skips, breakers, the last resort and Retry-After stay
failover's (chat/rules.py), which walks the candidates in this order. The slow ramp (health/ramp.py) and
the caller's provider_order are applied after the policy, by the router.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway_service.accounting import Tokens, estimate_tokens, price_of
from gateway_service.chat.candidate import Candidate
from gateway_service.config import GatewayConfig, Route
from gateway_service.domain.request import ChatRequest
from gateway_service.health import Health, SlowStart

OUTPUT_GUESS = 256  # output tokens lowest_latency expects of a request without max_output_tokens
Scored = list[tuple[Candidate, float | None]]


class Policy(Protocol):
    name: str

    def order(self, candidates: Sequence[Candidate], request: ChatRequest) -> Scored:
        """The candidates in the order to try them, each with its score (None: nothing to score it by)."""
        ...


class Priority:
    name = "priority"

    def order(self, candidates: Sequence[Candidate], request: ChatRequest) -> Scored:
        return [(c, float(i + 1)) for i, c in enumerate(candidates)]


class Weighted:
    name = "weighted"

    def __init__(self, route: Route, ramp: SlowStart) -> None:
        self.route = route
        self.ramp = ramp
        self._current: dict[str, float] = {}

    def order(self, candidates: Sequence[Candidate], request: ChatRequest) -> Scored:
        weights = [self.route.weight(c.provider.name, c.model.name) * self.ramp.share(c.target) for c in candidates]
        for candidate, weight in zip(candidates, weights, strict=True):
            self._current[candidate.label] = self._current.get(candidate.label, 0.0) + weight
        ranked = sorted(range(len(candidates)), key=lambda i: -self._current[candidates[i].label])
        self._current[candidates[ranked[0]].label] -= sum(weights)
        return [(candidates[i], weights[i]) for i in ranked]


class LowestLatency:
    name = "lowest_latency"

    def __init__(self, health: Health, exploration: float) -> None:
        self.health = health
        self.exploration = exploration
        self._credit = 0.0  # each request adds `exploration`; one that brings it to 1 explores (and spends the 1)
        self._explored = itertools.count()

    def order(self, candidates: Sequence[Candidate], request: ChatRequest) -> Scored:
        output = request.max_output_tokens or OUTPUT_GUESS
        expected = [(c, self._expected_ms(c, output)) for c in candidates]
        # Not measured yet first (in route order): one attempt measures it.
        scored = sorted(expected, key=lambda pair: (pair[1] is not None, pair[1] or 0.0))
        if len(scored) > 1 and self._explores():
            pick = 1 + next(self._explored) % (len(scored) - 1)
            scored.insert(0, scored.pop(pick))
        return scored

    def _explores(self) -> bool:
        """Counted, not drawn, so the share is exact over any run of requests (0.4: 4 in 10, not 1 in 2)."""
        self._credit += self.exploration
        if self._credit < 1.0 - 1e-9:  # ten shares of 0.1 add up to 0.999...: still one request
            return False
        self._credit -= 1.0
        return True

    def _expected_ms(self, candidate: Candidate, output_tokens: int) -> float | None:
        speed = self.health.speed(candidate.target)
        if speed.ttft_s is None:
            return None
        flowing = output_tokens / speed.tokens_per_s if speed.tokens_per_s else 0.0
        return (speed.ttft_s + flowing) * 1000


class LowestCost:
    name = "lowest_cost"

    def __init__(self, default_output_tokens: int) -> None:
        self.default_output_tokens = default_output_tokens

    def order(self, candidates: Sequence[Candidate], request: ChatRequest) -> Scored:
        tokens = Tokens(
            input=estimate_tokens(sum(len(m.content) for m in request.messages)),
            output=request.max_output_tokens or self.default_output_tokens,
        )
        return _ranked([(c, _cost(c, tokens)) for c in candidates])


def _cost(candidate: Candidate, tokens: Tokens) -> float | None:
    price = price_of(candidate.model)
    return float(price.cost(tokens)) if price.configured else None  # a score to rank by, never summed as money


class LeastBusy:
    name = "least_busy"

    def __init__(self, health: Health) -> None:
        self.health = health
        self._turn = itertools.count()

    def order(self, candidates: Sequence[Candidate], request: ChatRequest) -> Scored:
        turn, count = next(self._turn), len(candidates)
        busy = [self.health.in_flight(c.target) for c in candidates]
        ranked = sorted(range(count), key=lambda i: (busy[i], (i - turn) % count))
        return [(candidates[i], float(busy[i])) for i in ranked]


def _ranked(scored: Scored) -> Scored:
    """Lowest score first, unscored last; a stable sort keeps the route's order among equals."""
    return sorted(scored, key=lambda pair: (pair[1] is None, pair[1] or 0.0))


def policy_for(route: Route, config: GatewayConfig, health: Health, ramp: SlowStart) -> Policy:
    makers: dict[str, Callable[[], Policy]] = {
        "priority": Priority,
        "weighted": lambda: Weighted(route, ramp),
        "lowest_latency": lambda: LowestLatency(health, config.routing.exploration),
        "lowest_cost": lambda: LowestCost(config.limits.spend.default_output_tokens),
        "least_busy": lambda: LeastBusy(health),
    }
    return makers[route.policy]()
