"""Rendering with kubectl's built-in kustomize, as `kubectl apply -k` would: overlays, and overlays plus
components composed in a scratch kustomization (the way an operator's own overlay would list them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"

Doc = dict[str, Any]


def kustomize(directory: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render(overlay: str) -> list[Doc]:
    return kustomize(K8S / "overlays" / overlay)


def compose(scratch: Path, overlay: str, components: Sequence[str]) -> list[Doc]:
    """An overlay with more components, rendered from a kustomization in `scratch`."""

    # kustomize refuses absolute paths to other kustomizations: relative ones, from the scratch folder.
    def relative(path: Path) -> str:
        return os.path.relpath(path, scratch)

    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [relative(K8S / "overlays" / overlay)],
        "components": [relative(K8S / "components" / c) for c in components],
    }
    # Objects a component adds get a namespace only from the kustomization listing it, as in an operator's overlay.
    namespace = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text()).get("namespace")
    if namespace:
        kustomization["namespace"] = namespace
    (scratch / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(scratch)


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def is_platform(container: Doc) -> bool:
    """One of this repository's services (the llm-platform image), not a third-party image such as Redis."""
    return str(container["image"]).split(":")[0] == "llm-platform"
