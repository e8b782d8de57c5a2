"""Every overlay, alone and with every set of the other components, is wired right (tests/deploy/wiring.py)."""

from __future__ import annotations

import pytest

from tests.deploy import wiring
from tests.deploy.kustomize import combinations, overlay_namespace, render_combination, render_name
from tests.deploy.rendered import Rendered, connections, rendered_from

RENDERS = {render_name(overlay, extra): (overlay, extra) for overlay, extra in combinations()}


@pytest.fixture(scope="module", params=list(RENDERS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    overlay, extra = RENDERS[request.param]
    return rendered_from(request.param, overlay_namespace(overlay), render_combination(overlay, extra))


@pytest.mark.parametrize("check", list(wiring.CHECKS))
def test_the_render_is_wired_right(rendered: Rendered, check: str) -> None:
    assert wiring.CHECKS[check](rendered) == []


def test_every_component_is_tried_with_every_overlay() -> None:
    assert {"dev", "prod", "prod+gateway-limits-redis", "dev+gateway-hpa"} <= set(RENDERS)
    assert "prod+gateway-limits-redis+postgres-in-cluster+redis-in-cluster" in RENDERS


def test_the_checks_see_the_connections_they_are_about() -> None:
    """Guard against checks that pass because they look at nothing: dev's connections are all found."""
    dev = rendered_from("dev", overlay_namespace("dev"), render_combination("dev", ()))
    found = {(client.name, host, port) for client, _, host, port in connections(dev)}
    assert ("Deployment/gateway", "schema-service-headless", 50052) in found
    assert ("Deployment/gateway", "llm-gateway-redis", 6379) in found
    assert ("Deployment/schema-service", "llm-platform-postgres", 5432) in found
    assert {port for _, host, port in found if host == "provider.example"} == {443}
