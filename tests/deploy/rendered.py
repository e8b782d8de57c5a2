"""A rendered overlay as the services will meet it: its pods, its Secrets (generated, or the operator's from
deploy/k8s/examples/operator-secrets.yaml), the gateway's config read by the gateway's own parser with
the container's environment, and the connections each service will open (the gateway's schema address
and provider URLs, DATABASE_URL and REDIS_URL), resolved to a Service's pods or to an outside address.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from gateway_service import config
from tests.deploy.kustomize import K8S, Doc, is_platform, of_kind
from tests.deploy.netpol import EXTERNAL, Pod, selects

WORKLOADS = ("Deployment", "StatefulSet", "Job")
CERT_MANAGER_KEYS = ("tls.crt", "tls.key", "ca.crt")
DEFAULT_PORTS = {"https": 443, "http": 80, "postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379}


@dataclass(frozen=True)
class Rendered:
    name: str
    namespace: str
    docs: list[Doc]
    operator_secrets: dict[str, dict[str, str]]  # Secrets the operator creates: name -> key -> example value
    pinned: bool  # images must be referenced by digest (prod)

    def pods(self) -> list[Pod]:
        return [Pod(w) for kind in WORKLOADS for w in of_kind(self.docs, kind)]

    def pod(self, name: str) -> Pod:
        [pod] = [p for p in self.pods() if p.workload["metadata"]["name"] == name]
        return pod

    def secrets(self) -> dict[str, dict[str, str]]:
        """Every Secret a pod may name: generated ones (by their hashed names), cert-manager's, and the operator's."""
        rendered = {
            s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
            for s in of_kind(self.docs, "Secret")
        }
        # cert-manager writes a Certificate's Secret with these keys (components/cert-manager).
        issued = {
            c["spec"]["secretName"]: dict.fromkeys(CERT_MANAGER_KEYS, "") for c in of_kind(self.docs, "Certificate")
        }
        return self.operator_secrets | issued | rendered

    def env(self, pod: Pod, container: Doc) -> dict[str, str]:
        """A container's environment as the kubelet builds it: literals and Secret keys (missing ones left out)."""
        env = {}
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif "secretKeyRef" in entry.get("valueFrom", {}):
                ref = entry["valueFrom"]["secretKeyRef"]
                value = self.secrets().get(ref["name"], {}).get(ref["key"])
                if value is not None:
                    env[entry["name"]] = value
        return env

    def gateway_config(self) -> config.GatewayConfig:
        """The rendered gateway.yaml through the gateway's own parser, with the container's environment."""
        [text] = [
            c["data"]["gateway.yaml"] for c in of_kind(self.docs, "ConfigMap") if "gateway.yaml" in c.get("data", {})
        ]
        gateway = self.pod("gateway")
        return config.parse(
            yaml.safe_load(text), source="gateway-config", env=self.env(gateway, gateway_container(gateway))
        )


def load_operator_secrets(k8s: Path = K8S) -> dict[str, dict[str, str]]:
    path = k8s / "examples" / "operator-secrets.yaml"
    return {d["metadata"]["name"]: dict(d["stringData"]) for d in yaml.safe_load_all(path.read_text()) if d}


def gateway_container(pod: Pod) -> Doc:
    [container] = [c for c in pod.spec["containers"] if c["name"] == "gateway"]
    return container


def address(rendered: Rendered, host: str, port: int) -> tuple[Pod | None, int] | str:
    """Where host:port leads: a Service of the render (its pods, the container port), or EXTERNAL; or a problem."""
    services = {s["metadata"]["name"]: s for s in of_kind(rendered.docs, "Service")}
    short = host.removesuffix(f".{rendered.namespace}.svc.cluster.local").removesuffix(f".{rendered.namespace}")
    if short not in services:
        return (EXTERNAL, port) if "." in host else f"{host} names no Service of the render"
    service = services[short]
    [service_port] = [p for p in service["spec"]["ports"] if p["port"] == port] or [None]
    if service_port is None:
        return f"Service {short} has no port {port}"
    pods = [p for p in rendered.pods() if selects({"matchLabels": service["spec"]["selector"]}, p.labels)]
    if not pods:
        return f"Service {short} selects no pod"
    target = pods[0].port(service_port.get("targetPort", port))
    return (pods[0], target) if target is not None else f"Service {short} port {port}: no such container port"


def grpc_target(target: str) -> tuple[str, int]:
    """host and port of a gRPC target such as dns:///schema-service-headless:50052."""
    authority = target.removeprefix("dns:").lstrip("/")
    host, _, port = authority.rpartition(":")
    return host, int(port)


def url_endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme.split("+")[0]]


def connections(rendered: Rendered) -> Iterator[tuple[Pod, str, str, int]]:
    """(client pod, what for, host, port) for everything a platform pod dials."""
    gateway = rendered.pod("gateway")
    settings = rendered.gateway_config()
    if settings.schema_service:
        yield gateway, "the schema service (gateway.yaml schema_service)", *grpc_target(settings.schema_service)
    for provider in settings.providers:
        # No base_url: the SDK's own endpoint, always https.
        yield gateway, f"provider {provider.name}", *url_endpoint(provider.base_url or "https://provider.example")
    for pod in rendered.pods():
        for container in filter(is_platform, pod.containers()):
            env = rendered.env(pod, container)
            for variable in ("DATABASE_URL", "REDIS_URL"):
                if env.get(variable):
                    yield pod, f"{variable} of container {container['name']}", *url_endpoint(env[variable])


def rendered_from(name: str, namespace: str, docs: list[Doc], k8s: Path = K8S) -> Rendered:
    """A render with the operator's example Secrets of the same deploy/ folder; prod renders must pin images."""
    return Rendered(name, namespace, docs, load_operator_secrets(k8s), pinned=name.startswith("prod"))
