"""Wiring checks on rendered manifests: what points at what, worked out from the rendered YAML alone.

Each check takes a `Rendered` and returns the problems it finds, as sentences naming the objects; the
tests assert there are none, and tests/deploy/test_mutations.py asserts that each of ten known wiring
mistakes makes at least one appear. The connections the services need are read from what they will be
told at run time: the gateway's rendered config (schema address, provider URLs, key files), the
DATABASE_URL and REDIS_URL its Secrets hold (generated ones from the render, the operator's from
deploy/k8s/examples/operator-secrets.yaml), and then checked against NetworkPolicy semantics: a pod
selected by a policy of a type may only do what one of those policies' rules allows.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import yaml

from gateway_service import config
from tests.deploy.kustomize import K8S, Doc, is_platform, of_kind
from tests.deploy.netpol import EXTERNAL, Pod, allowed, selects

WORKLOADS = ("Deployment", "StatefulSet", "Job")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterIssuer"}
# Labels that callers outside these manifests carry to be let in (README "Deploying"): no pod here has them.
CLIENT_LABELS = ({"llm-platform/gateway-client": "true"}, {"llm-platform/schema-client": "true"})
DEFAULT_PORTS = {"https": 443, "http": 80, "postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379}
PSA = {"pod-security.kubernetes.io/enforce": "restricted"}


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
        """Every Secret a pod may name: generated ones (by their hashed names) and the operator's."""
        rendered = {
            s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
            for s in of_kind(self.docs, "Secret")
        }
        return self.operator_secrets | rendered

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


# --- the connections the services will make -----------------------------------------------------------


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


# --- the checks ------------------------------------------------------------------------------------------


def check_connections(rendered: Rendered) -> list[str]:
    """Each connection names something that exists, and the policies allow it (both ends); and DNS."""
    problems = []
    dialers = set()
    for client, purpose, host, port in connections(rendered):
        dialers.add(client.name)
        where = address(rendered, host, port)
        if isinstance(where, str):
            problems.append(f"{client.name} -> {purpose}: {where}")
        elif not allowed(rendered.docs, client, where[0], where[1], "TCP"):
            problems.append(f"{client.name} -> {purpose} ({host}:{port}): NetworkPolicy does not allow it")
    for pod in rendered.pods():
        for protocol in ("UDP", "TCP") if pod.name in dialers else ():
            if not allowed(rendered.docs, pod, EXTERNAL, 53, protocol):
                problems.append(f"{pod.name} dials names but may not reach DNS on {protocol} 53")
    return problems


def check_selectors(rendered: Rendered) -> list[str]:
    """Every selector selects a pod: policies and their peers, Services, PDBs, spread constraints, HPA targets."""
    pods = rendered.pods()

    def dangling(selector: Doc) -> bool:
        return selector != {} and not any(selects(selector, p.labels) for p in pods)

    problems = []
    for policy in of_kind(rendered.docs, "NetworkPolicy"):
        spec, name = policy["spec"], policy["metadata"]["name"]
        if dangling(spec["podSelector"]):
            problems.append(f"NetworkPolicy {name} selects no pod")
        for rule in spec.get("ingress", []) + spec.get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                selector = peer.get("podSelector")
                if selector and "namespaceSelector" not in peer and dangling(selector):
                    if selector.get("matchLabels") not in CLIENT_LABELS:
                        problems.append(f"NetworkPolicy {name}: peer {selector} matches no pod")
    for service in of_kind(rendered.docs, "Service"):
        if dangling({"matchLabels": service["spec"].get("selector", {})}):
            problems.append(f"Service {service['metadata']['name']} selects no pod")
    for pdb in of_kind(rendered.docs, "PodDisruptionBudget"):
        if dangling(pdb["spec"]["selector"]):
            problems.append(f"PodDisruptionBudget {pdb['metadata']['name']} selects no pod")
    for pod in pods:
        for constraint in pod.spec.get("topologySpreadConstraints", []):
            if not selects(constraint["labelSelector"], pod.labels):
                problems.append(f"{pod.name}: topologySpreadConstraint does not select its own pods")
    deployments = {d["metadata"]["name"] for d in of_kind(rendered.docs, "Deployment")}
    for hpa in of_kind(rendered.docs, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            problems.append(f"HorizontalPodAutoscaler {hpa['metadata']['name']} scales no rendered Deployment")
    return problems


def check_policy_ports(rendered: Rendered) -> list[str]:
    """Ingress ports are ports the selected pods listen on; egress ports to pods are ports those pods listen on."""
    problems = []
    for policy in of_kind(rendered.docs, "NetworkPolicy"):
        spec, name = policy["spec"], policy["metadata"]["name"]
        selected = [p for p in rendered.pods() if selects(spec["podSelector"], p.labels)]
        for rule in spec.get("ingress", []):
            for entry in rule.get("ports", []):
                for pod in selected:
                    if pod.port(entry["port"]) is None:
                        problems.append(
                            f"NetworkPolicy {name}: ingress port {entry['port']} is not a port of {pod.name}"
                        )
        for rule in spec.get("egress", []):
            peers = [p["podSelector"] for p in rule.get("to", []) if set(p) == {"podSelector"}]
            targets = [p for p in rendered.pods() for s in peers if selects(s, p.labels)]
            for entry in rule.get("ports", []):
                for pod in targets:
                    if pod.port(entry["port"]) is None:
                        problems.append(
                            f"NetworkPolicy {name}: egress port {entry['port']} is not a port of {pod.name}"
                        )
    return problems


def check_services(rendered: Rendered) -> list[str]:
    """Every Service targetPort is a (named) container port of every pod it selects."""
    problems = []
    for service in of_kind(rendered.docs, "Service"):
        selector = {"matchLabels": service["spec"].get("selector", {})}
        for pod in (p for p in rendered.pods() if selects(selector, p.labels)):
            for port in service["spec"]["ports"]:
                if pod.port(port.get("targetPort", port["port"])) is None:
                    problems.append(
                        f"Service {service['metadata']['name']} targetPort {port.get('targetPort')} "
                        f"is no container port of {pod.name}"
                    )
    return problems


def check_secrets(rendered: Rendered) -> list[str]:
    """Every Secret key a pod takes exists in a generated Secret or in deploy/k8s/examples/operator-secrets.yaml."""
    secrets = rendered.secrets()
    problems = []
    for pod in rendered.pods():
        for container in pod.containers():
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in secrets.get(ref["name"], {}):
                    problems.append(f"{pod.name}/{container['name']}: Secret {ref['name']} has no key {ref['key']}")
        for volume in pod.spec.get("volumes", []):
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                if name not in secrets:
                    problems.append(f"{pod.name}: Secret {name} is neither generated nor in the operator's examples")
                for item in volume["secret"].get("items", []):
                    if item["key"] not in secrets.get(name, {}):
                        problems.append(f"{pod.name}: Secret {name} has no key {item['key']}")
    return problems


def mounted_file(rendered: Rendered, pod: Pod, container: Doc, path: str) -> str | None:
    """The problem with reading `path` in the container from a mounted ConfigMap or Secret key, if any."""
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        inside = PurePosixPath(path)
        if not inside.is_relative_to(mount["mountPath"]):
            continue
        key = str(inside.relative_to(mount["mountPath"]))
        volume = volumes[mount["name"]]
        if "secret" in volume:
            keys = set(rendered.secrets().get(volume["secret"]["secretName"], {}))
        elif "configMap" in volume:
            [config_map] = [
                c for c in of_kind(rendered.docs, "ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"]
            ]
            keys = set(config_map.get("data", {}))
        else:
            return f"{path} lies in volume {mount['name']}, which is neither a ConfigMap nor a Secret"
        return None if key in keys else f"{path}: {mount['name']} holds no key {key} (it holds {sorted(keys)})"
    return f"{path} is under no volume mount of {pod.name}/{container['name']}"


def check_mounted_files(rendered: Rendered) -> list[str]:
    """The gateway's --config file and every provider api_key_file are keys of the volumes mounted there."""
    gateway = rendered.pod("gateway")
    container = gateway_container(gateway)
    args = container["args"]
    paths = [args[args.index("--config") + 1]]
    paths += [p.api_key_file for p in rendered.gateway_config().providers if p.api_key_file]
    return [problem for path in paths if (problem := mounted_file(rendered, gateway, container, path))]


def check_images(rendered: Rendered) -> list[str]:
    """Pinned renders (prod) reference every image by digest."""
    images = [(pod.name, c["image"]) for pod in rendered.pods() for c in pod.containers()]
    return [
        f"{name}: image {image} is not pinned by digest"
        for name, image in images
        if rendered.pinned and "@sha256:" not in image
    ]


def check_rollouts(rendered: Rendered) -> list[str]:
    """A rollout never takes capacity away: surge first (maxUnavailable 0); Recreate only for one replica."""
    problems = []
    for deployment in of_kind(rendered.docs, "Deployment"):
        name, strategy = deployment["metadata"]["name"], deployment["spec"].get("strategy", {})
        if strategy.get("type") == "Recreate":
            if deployment["spec"].get("replicas", 1) != 1:
                problems.append(f"Deployment {name}: Recreate with more than one replica")
            continue
        rolling = strategy.get("rollingUpdate", {})
        if str(rolling.get("maxUnavailable", "25%")) not in ("0", "0%") or str(rolling.get("maxSurge", "25%")) in (
            "0",
            "0%",
        ):
            problems.append(f"Deployment {name}: rollingUpdate {rolling} may drop below the desired replicas")
    return problems


def check_namespace(rendered: Rendered) -> list[str]:
    """Every object is in the overlay's namespace, and that Namespace enforces Pod Security 'restricted'."""
    problems = [
        f"{d['kind']} {d['metadata']['name']} is in namespace {d['metadata'].get('namespace')!r}"
        for d in rendered.docs
        if d["kind"] not in CLUSTER_SCOPED and d["metadata"].get("namespace") != rendered.namespace
    ]
    namespaces = [d for d in of_kind(rendered.docs, "Namespace") if d["metadata"]["name"] == rendered.namespace]
    if not namespaces or not PSA.items() <= namespaces[0]["metadata"].get("labels", {}).items():
        problems.append(f"no Namespace {rendered.namespace} enforcing Pod Security 'restricted'")
    return problems


CHECKS: dict[str, Callable[[Rendered], list[str]]] = {
    "connections": check_connections,
    "selectors": check_selectors,
    "policy ports": check_policy_ports,
    "services": check_services,
    "secrets": check_secrets,
    "mounted files": check_mounted_files,
    "images": check_images,
    "rollouts": check_rollouts,
    "namespace": check_namespace,
}


def problems(rendered: Rendered) -> dict[str, list[str]]:
    found = {name: check(rendered) for name, check in CHECKS.items()}
    return {name: found_ for name, found_ in found.items() if found_}


def rendered(name: str, namespace: str, docs: list[Doc], k8s: Path = K8S) -> Rendered:
    return Rendered(name, namespace, docs, load_operator_secrets(k8s), pinned=name.startswith("prod"))
