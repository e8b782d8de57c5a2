"""The Kubernetes manifests render, validate against the API schema, and keep the house rules."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest

from tests.deploy.kustomize import ROOT, compose, is_platform, of_kind, render

K8S_VERSION = "1.30.0"
BIN = Path(sys.executable).parent
# The shipped overlays, and prod with the opt-in shared budgets the way an operator's overlay would add them.
RENDERS = {"dev": (), "prod": (), "prod+gateway-limits-redis": ("gateway-limits-redis",)}


@pytest.fixture(scope="module", params=list(RENDERS))
def docs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    components = RENDERS[request.param]
    if not components:
        return render(request.param)
    return compose(tmp_path_factory.mktemp("kustomize"), request.param.split("+")[0], components)


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return of_kind(docs, "Deployment") + of_kind(docs, "Job")


def platform_deployments(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The services of this repository (gRPC, drained on shutdown), not third-party ones such as a dev Redis."""
    return [
        d for d in of_kind(docs, "Deployment") if all(map(is_platform, d["spec"]["template"]["spec"]["containers"]))
    ]


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
    for deployment in platform_deployments(docs):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        # The kubelet's gRPC probes speak plaintext: they use the health-only port (--health-port), not TLS.
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "health"]
        args = container["args"]
        assert args[args.index("--health-port") + 1] == str(port)
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
        if deployment not in platform_deployments(docs):
            continue  # a headless Service is for gRPC's client-side round_robin
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
        for container in filter(is_platform, workload["spec"]["template"]["spec"]["containers"]):
            command, (subcommand, *args) = container["command"][0], container["args"]
            usage = subprocess.run(
                [str(BIN / command), subcommand, "--help"], capture_output=True, text=True, timeout=60
            )
            assert usage.returncode == 0, usage.stderr
            for flag in (a for a in args if a.startswith("--")):
                assert re.search(rf"{re.escape(flag)}\b", usage.stdout), f"{command} {subcommand} has no {flag}"


def test_no_password_is_written_in_a_manifest(docs: list[dict[str, Any]]) -> None:
    """Generated Secrets and literal env values may hold addresses, never a URL with a password in it."""
    literals = [
        base64.b64decode(v).decode() for secret in of_kind(docs, "Secret") for v in secret.get("data", {}).values()
    ]
    for workload in workloads(docs):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            literals += [e["value"] for e in container.get("env", []) if "value" in e]
    assert literals  # the overlays do write some: the check looks at them
    for literal in literals:
        assert urlsplit(literal).password is None, "a URL with a password is written in a manifest"


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
    assert "\nroutes (" in checked.stdout and "  default: " in checked.stdout  # the --check-config summary
