"""components/gateway-limits-redis (budgets shared through Redis) and components/redis-in-cluster (dev's Redis).

Rendered as an operator would use them: prod plus the first component (an external Redis behind a Secret
the operator creates) and the dev overlay, which lists both. The gateway's own config parser reads the
rendered ConfigMap with the environment the rendered Deployment gives the container.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway_service import config
from tests.deploy.kustomize import Doc, compose, named, of_kind, render
from tests.deploy.rendered import Rendered, rendered_from

REDIS_RULE = {"ports": [{"protocol": "TCP", "port": 6379}]}


@pytest.fixture(scope="module")
def prod() -> list[Doc]:
    return render("prod")


@pytest.fixture(scope="module")
def prod_redis(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    return compose(tmp_path_factory.mktemp("kustomize"), "prod", ["gateway-limits-redis"])


@pytest.fixture(scope="module")
def dev() -> list[Doc]:
    return render("dev")


def gateway_container(docs: list[Doc]) -> Doc:
    container: Doc
    [container] = named(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    return container


def as_rendered(docs: list[Doc]) -> Rendered:
    """With the operator's example Secrets (deploy/k8s/examples) for what the render does not generate."""
    [namespace] = of_kind(docs, "Namespace")
    return rendered_from("docs", namespace["metadata"]["name"], docs)


def container_env(docs: list[Doc]) -> dict[str, str]:
    """The gateway container's environment as the kubelet would build it: literals, and Secret keys."""
    rendered = as_rendered(docs)
    return rendered.env(rendered.pod("gateway"), gateway_container(docs))


def gateway_config(docs: list[Doc]) -> config.GatewayConfig:
    """The rendered gateway.yaml through the gateway's own parser, with the container's environment."""
    return as_rendered(docs).gateway_config()


def redis_url_ref(docs: list[Doc]) -> dict[str, Any]:
    [entry] = [e for e in gateway_container(docs)["env"] if e["name"] == "REDIS_URL"]
    assert set(entry) == {"name", "valueFrom"}, "REDIS_URL must come from a Secret, never a literal value"
    ref: dict[str, Any] = entry["valueFrom"]["secretKeyRef"]
    return ref


@pytest.mark.parametrize("render_name", ["prod_redis", "dev"])
def test_the_gateway_keeps_budgets_in_the_redis_the_secret_names(
    render_name: str, request: pytest.FixtureRequest
) -> None:
    docs = request.getfixturevalue(render_name)
    ref = redis_url_ref(docs)
    assert ref["key"] == "url" and ref["name"].startswith("llm-gateway-redis")
    settings = gateway_config(docs).limits
    assert settings.backend == "redis" and gateway_config(docs).health.backend == "redis"  # health shared too
    assert settings.redis_url is not None and settings.redis_url.get_secret_value() == container_env(docs)["REDIS_URL"]


def test_prod_alone_expects_the_operators_secret_and_dev_generates_its_own(
    prod_redis: list[Doc], dev: list[Doc]
) -> None:
    assert redis_url_ref(prod_redis)["name"] == "llm-gateway-redis" and not of_kind(prod_redis, "Secret")
    [secret] = [s for s in of_kind(dev, "Secret") if s["metadata"]["name"].startswith("llm-gateway-redis")]
    assert redis_url_ref(dev)["name"] == secret["metadata"]["name"]  # kustomize's hashed name, followed


def test_without_the_component_budgets_stay_in_each_replica(prod: list[Doc]) -> None:
    assert "REDIS_URL" not in container_env(prod)
    settings = gateway_config(prod).limits
    assert settings.backend == "memory" and settings.redis_url is None
    assert gateway_config(prod).health.backend == "memory"


@pytest.mark.parametrize("render_name", ["prod_redis", "dev"])
def test_the_gateway_may_reach_the_redis_port_and_nothing_more(
    render_name: str, request: pytest.FixtureRequest, prod: list[Doc]
) -> None:
    before = named(prod, "NetworkPolicy", "gateway")["spec"]
    after = named(request.getfixturevalue(render_name), "NetworkPolicy", "gateway")["spec"]
    assert after["ingress"] == before["ingress"] and after["policyTypes"] == before["policyTypes"]
    assert after["egress"] == [*before["egress"], REDIS_RULE]


def test_dev_redis_admits_only_the_gateway_on_the_port_of_its_url(dev: list[Doc]) -> None:
    redis = named(dev, "Deployment", "llm-gateway-redis")
    pod_labels = redis["spec"]["template"]["metadata"]["labels"]
    gateway_labels = named(dev, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    policy = named(dev, "NetworkPolicy", "llm-gateway-redis")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and not policy.get("egress")  # dials no one
    [rule] = policy["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"} and source["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    assert rule["ports"] == REDIS_RULE["ports"]

    url = urlsplit(container_env(dev)["REDIS_URL"])
    service = named(dev, "Service", "llm-gateway-redis")
    [port] = service["spec"]["ports"]
    [container] = redis["spec"]["template"]["spec"]["containers"]
    [container_port] = container["ports"]
    assert (url.hostname, url.port) == (service["metadata"]["name"], port["port"]) and url.password is None
    assert service["spec"]["selector"].items() <= pod_labels.items() and port["targetPort"] == container_port["name"]
    assert container_port["containerPort"] == 6379 and container["args"][:2] == ["--port", "6379"]


def test_dev_redis_writes_only_to_an_empty_dir(dev: list[Doc]) -> None:
    pod = named(dev, "Deployment", "llm-gateway-redis")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts == {"data": "/data"} and "emptyDir" in volumes["data"]
    assert named(dev, "Deployment", "llm-gateway-redis")["spec"]["strategy"] == {"type": "Recreate"}
