"""A provider type is registered everywhere or nowhere: the config's `type` values, the adapters' registry, the
ProviderService enum mapping and the GenAI span names list the same types, and each type makes its adapter."""

from __future__ import annotations

from typing import get_args

import pytest

from gateway_service.api.providers_view import TYPES
from gateway_service.chat.spans import PROVIDER_NAMES
from gateway_service.config.providers import ProviderType
from gateway_service.providers import PROVIDER_TYPES, ProviderConfig, create_adapter
from llmgateway.v1 import provider_service_pb2 as ppb


def test_the_same_types_everywhere() -> None:
    assert set(get_args(ProviderType)) == set(PROVIDER_TYPES) == set(TYPES)
    assert set(PROVIDER_TYPES) <= set(PROVIDER_NAMES)
    assert len(set(TYPES.values())) == len(TYPES) and ppb.PROVIDER_TYPE_UNSPECIFIED not in TYPES.values()


@pytest.mark.parametrize("kind", PROVIDER_TYPES)
async def test_each_type_makes_its_adapter(kind: str) -> None:
    adapter = create_adapter(ProviderConfig(kind, kind, "http://127.0.0.1:1", "sk-test"))
    try:
        module = "openai" if kind.startswith("openai") else kind  # openai_compatible shares openai's adapter
        assert (type(adapter).__module__, adapter.config.type) == (f"gateway_service.providers.{module}", kind)
    finally:
        await adapter.aclose()
