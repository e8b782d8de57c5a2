"""A Candidate: one provider/model a request may be sent to, with its adapter and rate-limit budget slots."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from gateway_service.config import ModelSpec, ProviderSpec
from gateway_service.health import Target
from gateway_service.limits.core import Slot
from gateway_service.providers.base import ProviderAdapter


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
