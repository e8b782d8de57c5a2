"""The image, built as deploy/Dockerfile builds it (tests/deploy/dockerbuild.py), and what it ships.

Built once per session, in the background while the rest of the suite runs (tests/deploy/conftest.py).
The build stage makes both wheels and every dependency's (through the machine's usual PyPI access and
pip cache); the runtime stage installs them into a fresh virtualenv with `--no-index` and no pip
configuration at all, so an incomplete wheel set fails here as it would in `docker build`. That
virtualenv is then the image's Python: it migrates a fresh database and checks the shipped gateway
configs, run from outside the repository so that nothing is imported from the checkout.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from tests.deploy import dockerbuild
from tests.deploy.kustomize import ROOT

pytestmark = pytest.mark.timeout(420)

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PINNED = re.compile(r"^[\w.\-/:]+@sha256:[0-9a-f]{64}$")
PACKAGES = {"gateway_service", "schema_service", "servicekit"}


@pytest.fixture(scope="module")
def image_bin(image_stages: list[dockerbuild.Stage]) -> Path:
    return image_stages[-1].python.parent


def wheel(image_stages: list[dockerbuild.Stage], pattern: str) -> Path:
    [built] = image_stages[0].host("/wheels").glob(pattern)
    return built


def run_in_image(image_bin: Path, cwd: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A command of the image, from outside the repository, with the image's PATH only."""
    clean = {"PATH": f"{image_bin}:/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8", **env}
    return subprocess.run(
        [str(image_bin / command[0]), *command[1:]], cwd=cwd, env=clean, capture_output=True, text=True, timeout=120
    )


def test_every_base_image_is_pinned_by_digest() -> None:
    bases = [s["value"].split()[0] for s in dockerbuild.instructions(DOCKERFILE) if s["instruction"] == "FROM"]
    assert len(bases) == 2 and len(set(bases)) == 1, "build and runtime stages share one base"
    assert all(PINNED.match(base) for base in bases), bases
    # The emulation's virtualenvs use this machine's Python: the same minor version as the image's.
    assert bases[0].startswith("python:%d.%d." % sys.version_info[:2]), bases[0]


def test_the_build_context_is_only_the_sources() -> None:
    sent = dockerbuild.context_files(ROOT)
    tops = {name.split("/")[0] for name in sent}
    assert tops == {"contracts", *PACKAGES, "pyproject.toml", "constraints.txt", ".dockerignore"}
    assert not [n for n in sent if "__pycache__" in n or n.endswith(".pyc")]


def test_the_runtime_stage_installs_only_the_built_wheels(image_stages: list[dockerbuild.Stage]) -> None:
    build, runtime = image_stages
    [install] = runtime.runs
    assert install[1:5] == ["-m", "pip", "install", "--no-cache-dir"] and "--no-index" in install
    assert Path(install[install.index("--find-links") + 1]).resolve() == build.host("/wheels").resolve()
    names = {p.name.split("-")[0] for p in build.host("/wheels").iterdir()}
    assert {"llm_platform", "llm_platform_contracts", "grpcio", "asyncpg"} <= names
    assert "pgserver" not in names  # the `embedded` extra (34 MB) is for make run and the tests, not the image


def test_the_service_wheel_holds_its_packages_and_each_migration_once(image_stages: list[dockerbuild.Stage]) -> None:
    names = zipfile.ZipFile(wheel(image_stages, "llm_platform-*.whl")).namelist()
    assert [n for n, count in Counter(names).items() if count > 1] == []
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == PACKAGES  # no llm_simulator, tests or bench
    migrations = sorted(n.removeprefix("schema_service/migrations/") for n in names if "/migrations/" in n)
    assert migrations == sorted(p.name for p in (ROOT / "schema_service" / "migrations").glob("*.sql"))


def test_python_build_makes_the_same_wheel_from_the_sdist(
    image_stages: list[dockerbuild.Stage], tmp_path: Path
) -> None:
    """`python -m build` (sdist, then the wheel from the sdist) ships what the image's wheel ships."""
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [from_sdist] = tmp_path.glob("llm_platform-*.whl")
    ours = zipfile.ZipFile(wheel(image_stages, "llm_platform-*.whl")).namelist()
    assert sorted(zipfile.ZipFile(from_sdist).namelist()) == sorted(ours)


def test_the_image_runs_its_entrypoint_as_the_manifests_user(image_bin: Path) -> None:
    steps = {s["instruction"]: s["value"] for s in dockerbuild.instructions(DOCKERFILE)}
    [entrypoint] = re.findall(r'"([^"]+)"', steps["ENTRYPOINT"])
    assert (image_bin / entrypoint).is_file()
    assert steps["USER"] == "10001:10001"  # runAsUser/runAsGroup in deploy/k8s


def test_the_image_migrates_a_fresh_database(image_bin: Path, empty_db: str, tmp_path: Path) -> None:
    migrated = run_in_image(image_bin, tmp_path, "schema-service", "migrate", DATABASE_URL=empty_db)
    assert migrated.returncode == 0, migrated.stderr
    shipped = sorted(p.stem for p in (ROOT / "schema_service" / "migrations").glob("*.sql"))
    status = run_in_image(image_bin, tmp_path, "schema-service", "status", DATABASE_URL=empty_db)
    assert status.returncode == 0, status.stderr
    assert shipped[-1].split("_")[0].lstrip("0") in status.stdout + status.stderr


def test_the_image_refuses_embedded_in_one_line(image_bin: Path, tmp_path: Path) -> None:
    refused = run_in_image(image_bin, tmp_path, "schema-service", "status", "--embedded")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "schema-service: --embedded needs the embedded PostgreSQL (pgserver), which is not installed here: "
        "pip install 'llm-platform[embedded]', or give a database URL (DATABASE_URL or --database-url)"
    ]
    assert not (tmp_path / ".data").exists()


@pytest.mark.parametrize("config", ["deploy/k8s/base/gateway/gateway.yaml", "deploy/local/gateway.yaml"])
def test_the_image_accepts_the_shipped_gateway_configs(image_bin: Path, config: str, tmp_path: Path) -> None:
    checked = run_in_image(
        image_bin,
        tmp_path,
        "gateway-service",
        "serve",
        "--config",
        str(ROOT / config),
        "--check-config",
        "--insecure-dev",  # the config is what is checked here; the manifests give TLS and callers
    )
    assert checked.returncode == 0, checked.stderr
    assert "\nroutes (" in checked.stdout and "  default: " in checked.stdout  # the --check-config summary
