"""The Kubernetes manifests render, validate against the API schema, and keep the house rules."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.30.0"
BIN = Path(sys.executable).parent


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return of_kind(docs, "Deployment") + of_kind(docs, "Job")


def test_every_resource_validates_against_the_api_schema(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_pods_are_locked_down_and_sized(docs: list[dict[str, Any]]) -> None:
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_deployments_probe_with_native_grpc_and_drain_in_time(docs: list[dict[str, Any]]) -> None:
    for deployment in of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        port = container["ports"][0]["containerPort"]
        assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
        assert container["readinessProbe"]["grpc"] == {"port": port, "service": "readiness"}
        assert container["startupProbe"]["grpc"]["port"] == port
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = float(container["args"][container["args"].index("--shutdown-grace") + 1])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + grace


def test_each_deployment_has_a_pdb_and_a_headless_service(docs: list[dict[str, Any]]) -> None:
    pdbs = of_kind(docs, "PodDisruptionBudget")
    services = of_kind(docs, "Service")
    for deployment in of_kind(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert [p["spec"]["maxUnavailable"] for p in matching] == [1]
        headless = [s for s in services if s["spec"].get("clusterIP") == "None" and s["spec"]["selector"] == labels]
        assert len(headless) == 1, deployment["metadata"]["name"]


def test_network_is_denied_by_default(docs: list[dict[str, Any]]) -> None:
    policies = of_kind(docs, "NetworkPolicy")
    deny_all = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert len(deny_all) == 1
    assert set(deny_all[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_migrations_run_as_a_bounded_job(docs: list[dict[str, Any]]) -> None:
    (job,) = of_kind(docs, "Job")
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["activeDeadlineSeconds"] > 0
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["schema-service"] and container["args"][0] == "migrate"
    (schema,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "schema-service"]
    assert "--no-migrate" in schema["spec"]["template"]["spec"]["containers"][0]["args"]


def test_container_commands_use_flags_the_services_accept(docs: list[dict[str, Any]]) -> None:
    for workload in workloads(docs):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            command, (subcommand, *args) = container["command"][0], container["args"]
            usage = subprocess.run(
                [str(BIN / command), subcommand, "--help"], capture_output=True, text=True, timeout=60
            )
            assert usage.returncode == 0, usage.stderr
            for flag in (a for a in args if a.startswith("--")):
                assert re.search(rf"{re.escape(flag)}\b", usage.stdout), f"{command} {subcommand} has no {flag}"


@pytest.mark.parametrize(
    "config", ["deploy/k8s/base/gateway/gateway.yaml", "deploy/local/gateway.yaml"], ids=["k8s", "local"]
)
def test_shipped_gateway_configs_pass_the_gateways_own_check(config: str) -> None:
    checked = subprocess.run(
        [str(BIN / "gateway-service"), "serve", "--config", str(ROOT / config), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "routes=" in checked.stdout + checked.stderr
