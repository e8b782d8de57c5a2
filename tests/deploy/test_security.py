"""Security in the manifests: TLS and callers from Secrets in the base, insecure dev mode only in dev,
and the cert-manager component writing exactly the Secrets the Deployments mount."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.kustomize import compose, of_kind, render

Doc = dict[str, Any]


def containers(docs: list[Doc]) -> dict[str, Doc]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
        for d in of_kind(docs, "Deployment")
        if d["metadata"]["name"] in ("gateway", "schema-service")
    }


def mounted_secrets(deployment: Doc) -> dict[str, str]:
    """Mount path -> Secret name, for the Secret volumes of the Deployment's container."""
    pod = deployment["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    return {m["mountPath"]: secrets[m["name"]] for m in pod["containers"][0]["volumeMounts"] if m["name"] in secrets}


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_base_serves_tls_with_callers_from_secrets() -> None:
    docs = render("prod")
    for name, container in containers(docs).items():
        args = container["args"]
        assert "--insecure-dev" not in args
        (deployment,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == name]
        mounts = mounted_secrets(deployment)
        for option in ("--tls-cert", "--tls-key", "--callers"):
            path = Path(flag(args, option))
            assert str(path.parent) in mounts, f"{name}: {option} {path} is not on a mounted Secret"
        assert mounts["/var/run/secrets/tls"] == f"{name}-tls"
        assert mounts["/var/run/secrets/callers"] == f"{name}-callers"
    gateway = containers(docs)["gateway"]["args"]
    assert flag(gateway, "--schema-service-ca").startswith("/var/run/secrets/tls/")
    assert flag(gateway, "--schema-service-token-file").startswith("/var/run/secrets/schema-token/")


def test_dev_is_insecure_on_purpose_and_says_so() -> None:
    for container in containers(render("dev")).values():
        args = container["args"]
        assert "--insecure-dev" in args
        assert "--tls-cert" not in args and "--callers" not in args
        assert flag(args, "--health-port") == "8081"


def test_cert_manager_issues_the_secrets_the_deployments_mount(tmp_path: Path) -> None:
    docs = compose(tmp_path, "prod", ["cert-manager"])
    certificates = {c["spec"]["secretName"]: c for c in of_kind(docs, "Certificate")}
    assert set(certificates) == {"gateway-tls", "schema-service-tls"}
    for certificate in certificates.values():
        assert certificate["metadata"]["namespace"] == "llm-platform"
        assert certificate["spec"]["usages"] == ["server auth"]
        assert certificate["spec"]["issuerRef"]["kind"] in ("ClusterIssuer", "Issuer")
    # The gateway dials the schema service by its headless name: the certificate must name it.
    gateway_yaml = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("gateway-config")]
    address = gateway_yaml[0]["data"]["gateway.yaml"].split("schema_service: dns:///", 1)[1].split(":", 1)[0]
    assert address in certificates["schema-service-tls"]["spec"]["dnsNames"]
    for deployment in of_kind(docs, "Deployment"):
        if deployment["metadata"]["name"] in ("gateway", "schema-service"):
            assert f"{deployment['metadata']['name']}-tls" in mounted_secrets(deployment).values()


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_probes_never_need_tls(overlay: str) -> None:
    for container in containers(render(overlay)).values():
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"]["port"] == int(flag(container["args"], "--health-port"))
