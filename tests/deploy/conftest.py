"""The image build (tests/deploy/test_image.py) starts in a background process as soon as collection ends,
and the tests that need it run last: its minute of pip (mostly waiting on the network) overlaps the rest of
the suite instead of adding to it. Run alone, the image tests simply wait for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.deploy import dockerbuild
from tests.deploy.kustomize import ROOT

IMAGE_FIXTURE = "image_stages"
BUILD_TIMEOUT_S = 600


def pip_env(home: Path) -> dict[str, str]:
    """The machine's way to PyPI (certificates, timeout, cache), none of its pip configuration or local wheels,
    so that the runtime stage's `--no-index` install has nothing but the built wheels, as in `docker build`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HOME": str(home)}
    env["PIP_CACHE_DIR"] = str(Path.home() / ".cache" / "pip")
    cert = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if cert:
        env["PIP_CERT"] = cert
    if "PIP_DEFAULT_TIMEOUT" in os.environ:
        env["PIP_DEFAULT_TIMEOUT"] = os.environ["PIP_DEFAULT_TIMEOUT"]
    return env


class ImageBuild:
    """`python -m tests.deploy.dockerbuild` on deploy/Dockerfile, in its own process group."""

    def __init__(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="llm-platform-image-"))
        self.out = (self.scratch / "stages.json").open("w")
        self.err = (self.scratch / "build.log").open("w")
        command = [sys.executable, "-m", "tests.deploy.dockerbuild", str(ROOT / "deploy" / "Dockerfile"), str(ROOT)]
        # Niced: on a busy machine the suite's own tests come first, the build takes what is left.
        self.proc = subprocess.Popen(
            ["nice", "-n", "10", *command, str(self.scratch / "fs")],
            cwd=ROOT,
            env=pip_env(self.scratch),
            stdout=self.out,
            stderr=self.err,
            start_new_session=True,
        )

    def stages(self) -> list[dockerbuild.Stage]:
        returncode = self.proc.wait(BUILD_TIMEOUT_S)
        self.out.close(), self.err.close()
        if returncode != 0:
            raise AssertionError((self.scratch / "build.log").read_text()[-6000:])
        return dockerbuild.load((self.scratch / "stages.json").read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.out.close(), self.err.close()
        # Two virtualenvs and a wheel folder: seconds of disk work, left to an `rm` that outlives the session.
        rm = 'rm -rf -- "$1" >/dev/null 2>&1 &'
        subprocess.run(["sh", "-c", rm, "sh", str(self.scratch)], check=True, timeout=10)


BUILD = pytest.StashKey[ImageBuild]()


def needs_image(item: pytest.Item) -> bool:
    return IMAGE_FIXTURE in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=needs_image)  # stable: everything else keeps its order, the image tests go last


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.option.collectonly and any(map(needs_image, session.items)):
        session.config.stash[BUILD] = ImageBuild()


def pytest_sessionfinish(session: pytest.Session) -> None:
    build = session.config.stash.get(BUILD, None)
    if build is not None:
        build.close()


@pytest.fixture(scope="session")
def image_stages(pytestconfig: pytest.Config) -> list[dockerbuild.Stage]:
    build = pytestconfig.stash.get(BUILD, None)
    if build is None:  # e.g. selected in a way the collection hook did not see
        build = pytestconfig.stash[BUILD] = ImageBuild()
    return build.stages()
