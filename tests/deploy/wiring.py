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

from collections.abc import Callable
from pathlib import PurePosixPath

from tests.deploy.kustomize import Doc, is_platform, of_kind
from tests.deploy.netpol import EXTERNAL, Pod, allowed, selects
from tests.deploy.rendered import Rendered, address, connections

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterIssuer"}
# Labels that callers outside these manifests carry to be let in (docs/deploy.md): no pod here has them.
CLIENT_LABELS = ({"llm-platform/gateway-client": "true"}, {"llm-platform/schema-client": "true"})
PSA = {"pod-security.kubernetes.io/enforce": "restricted"}


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
            return None  # an emptyDir: the container's own scratch space
        return None if key in keys else f"{path}: {mount['name']} holds no key {key} (it holds {sorted(keys)})"
    return f"{path} is under no volume mount of {pod.name}/{container['name']}"


def check_mounted_files(rendered: Rendered) -> list[str]:
    """Every file a platform container is pointed at (a flag's absolute path, the gateway's api_key_file paths)
    is a key of the ConfigMap or Secret mounted there."""
    key_files = [p.api_key_file for p in rendered.gateway_config().providers if p.api_key_file]
    problems = []
    for pod in rendered.pods():
        for container in filter(is_platform, pod.containers()):
            paths = [a for a in container.get("args", []) if a.startswith("/")]
            paths += key_files if (pod.name, container["name"]) == ("Deployment/gateway", "gateway") else []
            problems += [problem for path in paths if (problem := mounted_file(rendered, pod, container, path))]
    return problems


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
