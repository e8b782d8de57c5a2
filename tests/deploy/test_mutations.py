"""Ten wiring mistakes, each applied alone to a scratch copy of deploy/: the wiring checks catch every one.

These are the mistakes the manifests' earlier tests let through (issue #11); each must make at least one
check of tests/deploy/wiring.py report a problem, and the unchanged copy must make none, so a check that
goes blind fails here.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.deploy import wiring
from tests.deploy.kustomize import PARALLEL_RENDERS, ROOT, overlay_namespace, render
from tests.deploy.rendered import rendered_from

NAME_LABEL = "matchLabels: {app.kubernetes.io/name: "
# (what, file under deploy/k8s, text, replacement, the check that must catch it)
MUTATIONS = {
    "egress 443 changed to 8443": (
        "base/gateway/networkpolicy.yaml",
        "{protocol: TCP, port: 443}",
        "{protocol: TCP, port: 8443}",
        "connections",
    ),
    "UDP DNS egress removed": (
        "base/gateway/networkpolicy.yaml",
        "        - {protocol: UDP, port: 53}\n",
        "",
        "connections",
    ),
    "gateway egress selector names a wrong schema label": (
        "base/gateway/networkpolicy.yaml",
        NAME_LABEL + "schema-service}",
        NAME_LABEL + "schema}",
        "connections",
    ),
    "schema ingress names a wrong gateway label": (
        "base/schema-service/networkpolicy.yaml",
        NAME_LABEL + "gateway}",
        NAME_LABEL + "llm-gateway}",
        "connections",
    ),
    "wrong schema host in the gateway config": (
        "base/gateway/gateway.yaml",
        "dns:///schema-service-headless:",
        "dns:///schema-headless:",
        "connections",
    ),
    "wrong Service targetPort": (
        "base/schema-service/service.yaml",
        "targetPort: grpc",
        "targetPort: http",
        "services",
    ),
    "wrong Secret key": (
        "base/schema-service/deployment.yaml",
        "{name: schema-service-database, key: url}",
        "{name: schema-service-database, key: uri}",
        "secrets",
    ),
    "prod image tag set to latest": (
        "overlays/prod/kustomization.yaml",
        "    digest: sha256:",
        "    newTag: latest\n    # sha256:",
        "images",
    ),
    "key mount path no longer matching api_key_file": (
        "base/gateway/deployment.yaml",
        "mountPath: /var/run/secrets/llm,",
        "mountPath: /var/run/secrets/keys,",
        "mounted files",
    ),
    "rollout maxUnavailable 2": (
        "base/gateway/deployment.yaml",
        "maxUnavailable: 0, maxSurge: 1",
        "maxUnavailable: 2, maxSurge: 1",
        "rollouts",
    ),
}


def problems_of(deploy: Path) -> dict[str, list[str]]:
    k8s = deploy / "k8s"
    return wiring.problems(rendered_from("prod", overlay_namespace("prod", k8s), render("prod", k8s), k8s))


def mutated_copy(scratch: Path, mistake: str | None) -> Path:
    """A copy of deploy/ with one mistake made (or none)."""
    deploy = Path(shutil.copytree(ROOT / "deploy", scratch / (mistake or "unchanged").replace(" ", "-") / "deploy"))
    if mistake is not None:
        path, text, replacement, _ = MUTATIONS[mistake]
        target = deploy / "k8s" / path
        original = target.read_text()
        assert text in original, f"the mutation no longer applies to {path}: update it with the manifests"
        target.write_text(original.replace(text, replacement, 1))
    return deploy


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str | None, dict[str, list[str]]]:
    """The problems found in each mutated copy (and the unchanged one), all rendered at once."""
    scratch = tmp_path_factory.mktemp("mutations")
    copies = {mistake: mutated_copy(scratch, mistake) for mistake in [None, *MUTATIONS]}
    with ThreadPoolExecutor(PARALLEL_RENDERS) as pool:
        return dict(zip(copies, pool.map(problems_of, copies.values()), strict=True))


def test_the_unchanged_copy_is_clean(found: dict[str | None, dict[str, list[str]]]) -> None:
    assert found[None] == {}


@pytest.mark.parametrize("mistake", list(MUTATIONS))
def test_the_checks_catch_the_mistake(found: dict[str | None, dict[str, list[str]]], mistake: str) -> None:
    check = MUTATIONS[mistake][3]
    assert found[mistake].get(check), f"{mistake}: not caught by the {check} check (found: {found[mistake]})"
