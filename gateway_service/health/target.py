"""The Target: one provider + model + key, what health keeps its cooldowns and headroom by."""

from __future__ import annotations

from dataclasses import dataclass

ANY_MODEL = "*"  # a cooldown's model for a failure of the key itself (auth, quota): every model of it


@dataclass(frozen=True, slots=True)
class Target:
    """One provider + model + key: cooldowns follow the key; breakers and stall watches the provider + model."""

    provider: str
    model: str
    key_id: str

    @property
    def provider_model(self) -> tuple[str, str]:
        return (self.provider, self.model)

    def any_model(self) -> Target:
        return Target(self.provider, ANY_MODEL, self.key_id)
