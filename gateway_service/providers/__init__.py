"""Provider adapters: one per wire format, created from a ProviderConfig by `create_adapter`.

`ADAPTERS` maps each provider type to the module and class of its adapter, as text: a module, and with it
its SDK, is imported only when a configured provider has that type (an SDK costs 10-48 MB of RSS once
imported, bench/RESULTS.md). A new wire format is one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from gateway_service.providers.base import ProviderAdapter, ProviderConfig

# type -> (module, class); imported on first use, never at start-up for a type nobody configured
ADAPTERS: dict[str, tuple[str, str]] = {
    "openai": ("gateway_service.providers.openai", "OpenAIAdapter"),
    "openai_compatible": ("gateway_service.providers.openai", "OpenAIAdapter"),
    "anthropic": ("gateway_service.providers.anthropic", "AnthropicAdapter"),
    "gemini": ("gateway_service.providers.gemini", "GeminiAdapter"),
    "cohere": ("gateway_service.providers.cohere", "CohereAdapter"),
}
PROVIDER_TYPES = tuple(ADAPTERS)


def adapter_class(provider_type: str) -> Callable[[ProviderConfig], ProviderAdapter]:
    """The adapter class for `provider_type`, importing its module (and SDK) now if not yet imported."""
    try:
        module, name = ADAPTERS[provider_type]
    except KeyError:
        raise ValueError(
            f"unknown provider type {provider_type!r}; expected one of {', '.join(PROVIDER_TYPES)}"
        ) from None
    cls: Callable[[ProviderConfig], ProviderAdapter] = getattr(importlib.import_module(module), name)
    return cls


def create_adapter(config: ProviderConfig) -> ProviderAdapter:
    """The adapter for `config.type`; SDK modules are imported only for the types in use."""
    return adapter_class(config.type)(config)


__all__ = ["ADAPTERS", "PROVIDER_TYPES", "ProviderAdapter", "ProviderConfig", "adapter_class", "create_adapter"]
