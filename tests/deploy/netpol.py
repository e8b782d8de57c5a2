"""Pods, label selectors and NetworkPolicy semantics, enough to tell whether one pod may reach another.

A pod selected by a policy of a type (Ingress or Egress) may only do what one of those policies' rules
allows; a rule without `to`/`from` admits any peer, without `ports` any port; a `podSelector` peer is a
pod of the same namespace, an `ipBlock` or `namespaceSelector` peer stands for anything elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.deploy.kustomize import Doc, of_kind

EXTERNAL = None  # a destination outside the namespace's pods: a provider, a managed database, DNS


@dataclass(frozen=True)
class Pod:
    workload: Doc

    @property
    def name(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}"

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.workload["spec"]["template"]["metadata"].get("labels", {})
        return labels

    @property
    def spec(self) -> Doc:
        spec: Doc = self.workload["spec"]["template"]["spec"]
        return spec

    def containers(self) -> list[Doc]:
        return [*self.spec.get("initContainers", []), *self.spec["containers"]]

    def port(self, port: int | str) -> int | None:
        """A container port by number or name, as a Service targetPort or a policy port names it."""
        for container in self.spec["containers"]:
            for p in container.get("ports", []):
                if port in (p["containerPort"], p.get("name")):
                    return int(p["containerPort"])
        return None


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    tests: dict[str, Callable[[str, list[str]], bool]] = {
        "In": lambda key, values: labels.get(key) in values,
        "NotIn": lambda key, values: labels.get(key) not in values,
        "Exists": lambda key, values: key in labels,
        "DoesNotExist": lambda key, values: key not in labels,
    }
    return all(tests[e["operator"]](e["key"], e.get("values", [])) for e in selector.get("matchExpressions", []))


def peer_matches(peer: Doc, other: Pod | None) -> bool:
    """A policy peer against the other end: a pod of this namespace, or EXTERNAL (any other address)."""
    if "podSelector" in peer and "namespaceSelector" not in peer:
        return other is not EXTERNAL and selects(peer["podSelector"], other.labels)
    return other is EXTERNAL  # ipBlock or namespaceSelector: addresses and pods elsewhere


def port_matches(rule: Doc, port: int, protocol: str, destination: Pod | None) -> bool:
    """Whether a rule's ports (all, when it lists none) admit the port; named ports are the destination's."""
    if "ports" not in rule:
        return True
    for entry in rule["ports"]:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        number = entry["port"]
        if isinstance(number, str):
            number = destination.port(number) if destination is not EXTERNAL else None
        if number is not None and number <= port <= entry.get("endPort", number):
            return True
    return False


def allowed(docs: list[Doc], source: Pod | None, destination: Pod | None, port: int, protocol: str) -> bool:
    """Whether the policies let `source` open a connection to `destination`'s port: egress, then ingress."""
    for direction, subject, other, peers in (
        ("Egress", source, destination, "to"),
        ("Ingress", destination, source, "from"),
    ):
        if subject is EXTERNAL:
            continue
        policies = [
            p["spec"]
            for p in of_kind(docs, "NetworkPolicy")
            if selects(p["spec"]["podSelector"], subject.labels) and direction in p["spec"].get("policyTypes", [])
        ]
        rules = [r for p in policies for r in p.get(direction.lower(), [])]
        if policies and not any(
            (peers not in r or any(peer_matches(peer, other) for peer in r[peers]))
            and port_matches(r, port, protocol, destination)
            for r in rules
        ):
            return False
    return True
