"""The opt-in monitoring component: PodMonitors that find the pods' metrics port, and the dashboards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.kustomize import compose, of_kind


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return compose(tmp_path_factory.mktemp("monitoring"), "prod", ["monitoring"])


def test_pod_monitors_select_pods_that_serve_metrics(docs: list[dict[str, Any]]) -> None:
    monitors = of_kind(docs, "PodMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"gateway", "schema-service"}
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        (pod,) = [
            d["spec"]["template"]
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        (container,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert endpoint["port"] in ports
        args = container["args"]
        assert args[args.index("--metrics-port") + 1] == str(ports[endpoint["port"]])
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports[endpoint["port"]])
        assert monitor["metadata"]["namespace"] == pod_namespace(docs)


def pod_namespace(docs: list[dict[str, Any]]) -> str:
    (namespace,) = {d["metadata"]["namespace"] for d in of_kind(docs, "Deployment")}
    return str(namespace)


def test_network_policies_let_the_scraper_reach_the_metrics_port(docs: list[dict[str, Any]]) -> None:
    for name in ("gateway", "schema-service"):
        (policy,) = [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == name]
        scrape = [r for r in policy["spec"]["ingress"] if {"protocol": "TCP", "port": 9464} in r.get("ports", [])]
        assert scrape and "namespaceSelector" in scrape[0]["from"][0]


def test_dashboards_are_provisioned_for_the_grafana_sidecar(docs: list[dict[str, Any]]) -> None:
    (config_map,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == "llm-platform-dashboards"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == pod_namespace(docs)
    boards = {name: json.loads(text) for name, text in config_map["data"].items()}
    assert set(boards) == {"gateway.json", "schema-service.json"}
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "components" / "monitoring" / "dashboards"
    for name, board in boards.items():
        assert board == json.loads((shipped / name).read_text())
        assert board["panels"] and all(panel["targets"] for panel in board["panels"])
