"""Provider adapters: one per wire format, created from a ProviderConfig by `create_adapter`."""

from __future__ import annotations

from gateway_service.providers.base import (
    FailureKind,
    ProviderAdapter,
    ProviderConfig,
    ProviderError,
)

PROVIDER_TYPES = ("openai", "openai_compatible", "anthropic", "gemini")


def create_adapter(config: ProviderConfig) -> ProviderAdapter:
    """The adapter for `config.type`; SDK modules are imported only for the types in use."""
    if config.type in ("openai", "openai_compatible"):
        from gateway_service.providers.openai import OpenAIAdapter

        return OpenAIAdapter(config)
    if config.type in ("anthropic", "gemini"):
        # Landing next; until then the factory refuses them loudly rather than pretending.
        raise NotImplementedError(f"provider type {config.type!r} is not implemented yet")
    raise ValueError(f"unknown provider type {config.type!r}; expected one of {', '.join(PROVIDER_TYPES)}")


__all__ = ["FailureKind", "ProviderAdapter", "ProviderConfig", "ProviderError", "PROVIDER_TYPES", "create_adapter"]
