"""Rendering with kubectl's built-in kustomize, as `kubectl apply -k` would: overlays, and overlays plus
components composed in a scratch kustomization (the way an operator's own overlay would list them, with
the overlay's namespace, as docs/deploy.md tells operators to)."""

from __future__ import annotations

import copy
import fcntl
import itertools
import os
import pickle
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")

Doc = dict[str, Any]


def kustomize(directory: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render(overlay: str, k8s: Path = K8S) -> list[Doc]:
    return kustomize(k8s / "overlays" / overlay)


def kustomization(directory: Path) -> Doc:
    loaded: Doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return loaded


def overlay_namespace(overlay: str, k8s: Path = K8S) -> str:
    return str(kustomization(k8s / "overlays" / overlay)["namespace"])


def compose(scratch: Path, overlay: str, components: Sequence[str], k8s: Path = K8S) -> list[Doc]:
    """An overlay with more components, rendered from a kustomization in `scratch`."""

    # kustomize refuses absolute paths to other kustomizations: relative ones, from the scratch folder.
    def relative(path: Path) -> str:
        return os.path.relpath(path, scratch)

    scratch.mkdir(parents=True, exist_ok=True)
    composed = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": overlay_namespace(overlay, k8s),
        "resources": [relative(k8s / "overlays" / overlay)],
        "components": [relative(k8s / "components" / c) for c in components],
    }
    (scratch / "kustomization.yaml").write_text(yaml.safe_dump(composed))
    return kustomize(scratch)


def combinations(k8s: Path = K8S) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every overlay with every set of the components it does not list itself."""
    every = sorted(p.name for p in (k8s / "components").iterdir() if (p / "kustomization.yaml").is_file())
    for overlay in OVERLAYS:
        listed = {Path(c).name for c in kustomization(k8s / "overlays" / overlay).get("components", [])}
        others = [c for c in every if c not in listed]
        for n in range(len(others) + 1):
            yield from ((overlay, extra) for extra in itertools.combinations(others, n))


Key = tuple[str, tuple[str, ...]]
_RENDERED: dict[Key, list[Doc]] = {}
PARALLEL_RENDERS = 4  # kubectl processes at once: each is mostly start-up, so more than the cores
# With pytest-xdist: the run's file where the first worker to want the renders leaves them all (tests/conftest.py).
_SHARED: list[Path] = []
SHARED_RENDERS_KEY = "k8s_renders"  # its path, in a worker's workerinput


def share_renders(path: Path) -> None:
    _SHARED[:] = [path]


def render_combination(overlay: str, components: tuple[str, ...]) -> list[Doc]:
    """An overlay, alone or with more components; rendered once per run, a fresh copy per caller.

    The first call renders every combination at once (in parallel), since the tests want them all."""
    if not _RENDERED:
        _RENDERED.update(_every_render())
    if (overlay, components) not in _RENDERED:
        _RENDERED[(overlay, components)] = render_fresh(overlay, components)
    return copy.deepcopy(_RENDERED[(overlay, components)])


def _every_render() -> dict[Key, list[Doc]]:
    """Every combination, rendered here or, with workers, by whichever worker came first."""
    if not _SHARED:
        return _render_parallel(sorted(combinations()))
    path = _SHARED[0]
    with path.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second worker waits here while the first renders; released on exit
        if path.exists():
            loaded: dict[Key, list[Doc]] = pickle.loads(path.read_bytes())
            return loaded
        rendered = _render_parallel(sorted(combinations()))
        path.write_bytes(pickle.dumps(rendered))
        return rendered


def _render_parallel(wanted: list[Key]) -> dict[Key, list[Doc]]:
    with ThreadPoolExecutor(PARALLEL_RENDERS) as pool:
        return dict(zip(wanted, pool.map(lambda key: render_fresh(*key), wanted), strict=True))


def render_fresh(overlay: str, components: tuple[str, ...], k8s: Path = K8S) -> list[Doc]:
    if not components:
        return render(overlay, k8s)
    with tempfile.TemporaryDirectory(prefix="kustomize-") as scratch:
        return compose(Path(scratch), overlay, components, k8s)


def render_name(overlay: str, components: Sequence[str]) -> str:
    return "+".join([overlay, *components])


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def is_platform(container: Doc) -> bool:
    """One of this repository's services (the llm-platform image), not a third-party image such as Redis."""
    return str(container["image"]).split("@")[0].split(":")[0].rsplit("/", 1)[-1] == "llm-platform"
