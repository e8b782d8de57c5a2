"""Candidates for a request: route targets, `provider/model`, provider_order, unconfigured providers, key ids."""

from __future__ import annotations

import pytest

from gateway_service.chat.router import Router
from gateway_service.config import ModelSpec
from gateway_service.errors import InvalidRequest, UnknownModel
from tests.gateway.pipeline_helpers import ScriptedAdapter, chat_request, gateway_config, spec

M1, M2 = ModelSpec(name="m1"), ModelSpec(name="m2")


def router() -> Router:
    config = gateway_config(
        spec("a", M1, M2), spec("b", M1), spec("c", M1, key=None), route=["a/m1", "b/m1", "c/m1", "a/m2"]
    )
    return Router(config, {"a": ScriptedAdapter("a", []), "b": ScriptedAdapter("b", [])})


def labels(r: Router, **kw: object) -> list[str]:
    return [c.label for c in r.candidates(chat_request(**kw))]


def test_route_order_is_kept_without_a_preference() -> None:
    assert labels(router()) == ["a/m1", "b/m1", "c/m1", "a/m2"]


def test_provider_order_moves_preferred_providers_first_and_keeps_the_rest_in_route_order() -> None:
    assert labels(router(), provider_order=("c", "b")) == ["c/m1", "b/m1", "a/m1", "a/m2"]


def test_a_provider_model_names_one_candidate() -> None:
    assert labels(router(), model="a/m2") == ["a/m2"]


@pytest.mark.parametrize("model", ["nope", "a/m9", "z/m1", "a"])
def test_unknown_models_name_the_field(model: str) -> None:
    with pytest.raises(UnknownModel) as caught:
        router().candidates(chat_request(model=model))
    assert [v.field for v in caught.value.field_violations] == ["model"]


def test_unknown_provider_in_provider_order_names_its_index() -> None:
    with pytest.raises(InvalidRequest) as caught:
        router().candidates(chat_request(provider_order=("b", "x")))
    assert [v.field for v in caught.value.field_violations] == ["provider_order[1]"]


def test_unconfigured_providers_have_no_adapter_and_keys_have_stable_non_secret_ids() -> None:
    a1, b1, c1, a2 = router().candidates(chat_request())
    assert c1.adapter is None and c1.key_id == ""
    assert a1.key_id == a2.key_id != b1.key_id
    assert len(a1.key_id) == 12 and "ka" not in a1.key_id
