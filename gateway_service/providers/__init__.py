"""Provider adapters: one per wire format, created from a ProviderConfig by `create_adapter`."""

from __future__ import annotations

from gateway_service.providers.base import ProviderAdapter, ProviderConfig

PROVIDER_TYPES = ("openai", "openai_compatible", "anthropic", "gemini", "cohere")


def create_adapter(config: ProviderConfig) -> ProviderAdapter:
    """The adapter for `config.type`; SDK modules are imported only for the types in use."""
    if config.type in ("openai", "openai_compatible"):
        from gateway_service.providers.openai import OpenAIAdapter

        return OpenAIAdapter(config)
    if config.type == "anthropic":
        from gateway_service.providers.anthropic import AnthropicAdapter

        return AnthropicAdapter(config)
    if config.type == "gemini":
        from gateway_service.providers.gemini import GeminiAdapter

        return GeminiAdapter(config)
    if config.type == "cohere":
        from gateway_service.providers.cohere import CohereAdapter

        return CohereAdapter(config)
    raise ValueError(f"unknown provider type {config.type!r}; expected one of {', '.join(PROVIDER_TYPES)}")


__all__ = ["ProviderAdapter", "ProviderConfig", "PROVIDER_TYPES", "create_adapter"]
