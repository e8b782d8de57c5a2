"""The Kubernetes manifests render, validate against the API schema, and keep the house rules."""

from __future__ import annotations

import base64
import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest

from tests.deploy.kustomize import combinations, is_platform, of_kind, render_combination, render_name

K8S_VERSION = "1.30.0"
BIN = Path(sys.executable).parent
# Every overlay alone and with every set of the components it does not list (as an operator's overlay would).
RENDERS = {render_name(overlay, extra): (overlay, extra) for overlay, extra in combinations()}
# Custom resources of operators a component may target (prometheus-operator, cert-manager): no API schema here.
CUSTOM_GROUPS = ("monitoring.coreos.com/", "cert-manager.io/")


@pytest.fixture(scope="module", params=list(RENDERS))
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render_combination(*RENDERS[request.param])


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet") + of_kind(docs, "Job")


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


@functools.cache
def validate(text: str) -> None:
    """Strictly against the API schema; the same object in several renders is validated once."""
    kubernetes_validate.validate(json.loads(text), K8S_VERSION, strict=True)


@functools.cache
def usage(command: str, subcommand: str) -> str:
    done = subprocess.run([str(BIN / command), subcommand, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def platform_deployments(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The services of this repository (gRPC, drained on shutdown), not third-party ones such as a dev Redis."""
    return [
        d for d in of_kind(docs, "Deployment") if all(map(is_platform, d["spec"]["template"]["spec"]["containers"]))
    ]


def test_every_resource_validates_against_the_api_schema(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if not doc["apiVersion"].startswith(CUSTOM_GROUPS):
            validate(json.dumps(doc, sort_keys=True))


def test_pods_are_locked_down_and_sized(docs: list[dict[str, Any]]) -> None:
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in containers(workload):
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


def test_migrations_gate_the_schema_service_pods(docs: list[dict[str, Any]]) -> None:
    """An init container migrates with the image about to serve; no Job whose immutable template blocks a new tag."""
    assert of_kind(docs, "Job") == []
    (schema,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "schema-service"]
    pod = schema["spec"]["template"]["spec"]
    (migrate,) = pod["initContainers"]
    (serve,) = pod["containers"]
    assert migrate["image"] == serve["image"] and migrate["env"][0] == serve["env"][0]  # same image, same database
    assert migrate["command"] == ["schema-service"] and migrate["args"][0] == "migrate"
    assert float(migrate["args"][migrate["args"].index("--lock-wait") + 1]) > 0  # bounded wait for other pods
    assert "--wait-for-database" in migrate["args"]  # a PostgreSQL still starting is waited for, not a crash loop
    assert "--no-migrate" in serve["args"]


def test_container_commands_use_flags_the_services_accept(docs: list[dict[str, Any]]) -> None:
    for workload in workloads(docs):
        for container in filter(is_platform, containers(workload)):
            command, (subcommand, *args) = container["command"][0], container["args"]
            for flag in (a for a in args if a.startswith("--")):
                assert re.search(rf"{re.escape(flag)}\b", usage(command, subcommand)), f"{command} {subcommand}: {flag}"


def test_no_password_is_written_in_a_manifest(docs: list[dict[str, Any]]) -> None:
    """Generated Secrets and literal env values may hold addresses, never a URL with a password in it."""
    literals = [
        base64.b64decode(v).decode() for secret in of_kind(docs, "Secret") for v in secret.get("data", {}).values()
    ]
    for workload in workloads(docs):
        for container in containers(workload):
            literals += [e["value"] for e in container.get("env", []) if "value" in e]
    assert literals  # the overlays do write some: the check looks at them
    for literal in literals:
        assert urlsplit(literal).password is None, "a URL with a password is written in a manifest"


DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def test_the_network_policy_text_matches_the_manifests(docs: list[dict[str, Any]]) -> None:
    """docs/deploy.md names the one namespace Prometheus may scrape from, and says callers are admitted by pod
    label in the policy's own namespace only: what the rules below do, checked rule by rule."""
    text = " ".join(DEPLOY_DOC.read_text().split())
    for policy in of_kind(docs, "NetworkPolicy"):
        if policy["metadata"]["name"] not in ("gateway", "schema-service"):
            continue
        scrape, *callers = policy["spec"]["ingress"]
        assert [p["port"] for p in scrape["ports"]] == [9464]
        (peer,) = scrape["from"]
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        assert f"only from a namespace named `{namespace}`" in text
        assert all(set(p) == {"podSelector"} for rule in callers for p in rule["from"])  # no namespaceSelector
        assert "in the same namespace: the NetworkPolicies select callers by pod label only" in text
