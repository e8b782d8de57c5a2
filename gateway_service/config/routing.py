"""`routes:` and `routing:` of the gateway config: each route's targets and the policy that orders them.

A route is written either as a list of `provider/model` targets (policy `priority`, the order as written) or
in the long form:

    routes:
      default:
        targets: [gemini/gemini-2.0-flash, openai/gpt-4o-mini]
        policy: weighted            # priority (default) | weighted | lowest_latency | lowest_cost | least_busy
        weights: {openai/gpt-4o-mini: 3}
        hedge_after_ms: 400         # optional; or hedge_after: p95_ttft (chat/hedging.py)

The targets are checked against the providers by the config as a whole (model.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, Strict, model_validator
from pydantic_core import PydanticCustomError

from gateway_service.config.base import Frozen, NonNegativeFloat, PositiveInt, invalid

Policy = Literal["priority", "weighted", "lowest_latency", "lowest_cost", "least_busy"]


def _target(value: Any) -> Any:
    """`provider/model` -> (provider, model); both are checked against the providers once all are read."""
    if isinstance(value, tuple):
        return value  # already split (code building a config)
    if not isinstance(value, str):
        raise PydanticCustomError("config", "must be a `provider/model` string, got {value}", {"value": repr(value)})
    provider, _, model = value.partition("/")
    return (provider, model)


RouteTarget = Annotated[tuple[str, str], BeforeValidator(_target)]  # health's Target adds the key


class Route(Frozen):
    """One route: its targets and the policy that orders them for each request (docs/routing.md)."""

    targets: tuple[RouteTarget, ...] = Field(min_length=1)
    """The `provider/model` targets, each naming a provider and model above; a provider with several keys is
    several providers (one per key), each a target."""
    policy: Policy = "priority"
    """How the targets are ordered for each request: priority (as written) | weighted (smooth weighted
    round-robin by `weights`) | lowest_latency (recent time to first token and tokens per second) | lowest_cost
    (the request's estimated tokens at each model's prices) | least_busy (fewest streams in flight). Failover
    then walks them in that order."""
    weights: Mapping[str, PositiveInt] = {}
    """Policy weighted only: `provider/model` -> weight; a target left out weighs 1."""
    hedge_after_ms: PositiveInt | None = None
    """When an attempt has produced no output this many milliseconds after it started, the next candidate
    starts too; the first to produce output answers and the other is cancelled (one hedge per request)."""
    hedge_after: Literal["p95_ttft"] | None = None
    """Hedge after the attempt's target's recent p95 time to first token instead of a fixed delay (no hedge
    while the target has no first token measured); not with `hedge_after_ms`."""
    _short: bool = PrivateAttr(False)  # written as a plain list: errors name `routes.x[i]`, as it was written

    @model_validator(mode="wrap")
    @classmethod
    def _list_form(cls, data: Any, handler: Any) -> Any:
        short = isinstance(data, (list, tuple))
        route = handler({"targets": data} if short else data)
        route._short = short
        return route

    @model_validator(mode="after")
    def _weights_of_targets(self) -> Route:
        if self.weights and self.policy != "weighted":
            raise invalid("weights", f"only policy weighted takes weights (this route's policy is {self.policy})")
        labels = {f"{p}/{m}" for p, m in self.targets}
        for label in self.weights:
            if label not in labels:
                raise invalid(f"weights.{label}", f"{label!r} is not a target of this route")
        if self.hedge_after_ms is not None and self.hedge_after is not None:
            raise invalid("hedge_after", "give hedge_after_ms or hedge_after, not both")
        return self

    def target_path(self, alias: str, index: int) -> str:
        """Where target `index` was written, for an error about it."""
        return f"{alias}[{index}]" if self._short else f"{alias}.targets[{index}]"

    def weight(self, provider: str, model: str) -> int:
        return self.weights.get(f"{provider}/{model}", 1)


class RoutingSettings(Frozen):
    """What every route's policy shares: exploration and the slow ramp after a recovery (docs/routing.md)."""

    exploration: Annotated[float, Strict(), Field(ge=0, le=0.5)] = 0.05
    """Policy lowest_latency: the share of a route's requests sent first to a target other than the fastest
    (each in turn), so one that was slow, or has recovered, can show it is fast again."""
    slow_start_window_s: NonNegativeFloat = 30.0
    """After a target's breaker closes, its share of traffic grows over this many seconds instead of coming
    back at once (Envoy's slow start); 0 turns the ramp off."""
    slow_start_aggression: Annotated[float, Strict(), Field(gt=0, le=10)] = 1.0
    """Shape of the ramp: the share is (time since recovery / window) ^ (1 / aggression); 1 is linear, more
    sends traffic back sooner."""
    slow_start_min_share: Annotated[float, Strict(), Field(gt=0, le=1)] = 0.1
    """The share a recovering target gets at the start of the ramp."""
