"""The image build of tests/deploy/test_image.py, run once per test run in a background process.

Started as soon as the tests are collected so that its minute of pip (mostly waiting on the network)
overlaps the rest of the suite. Alone, the pytest process starts it (tests/deploy/conftest.py); with
pytest-xdist the controller does (tests/conftest.py), once, and the workers only wait for its result:
everything the build leaves is in one folder, `returncode` written last.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.deploy import dockerbuild
from tests.deploy.kustomize import ROOT

IMAGE_TESTS = "tests/deploy/test_image.py"
WORKER_KEY = "image_build"  # in an xdist worker's workerinput: the folder of the run's build
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


def scratch_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="llm-platform-image-"))


class ImageBuild:
    """`python -m tests.deploy.dockerbuild` on deploy/Dockerfile, in its own process group, into `scratch`."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        (scratch / "started").touch()
        command = [sys.executable, "-m", "tests.deploy.dockerbuild", str(ROOT / "deploy" / "Dockerfile"), str(ROOT)]
        # Niced: on a busy machine the suite's own tests come first, the build takes what is left.
        # The shell writes the exit code last, for whichever process waits (see result()).
        script = (
            'd=$1; shift; nice -n 10 "$@" >"$d/stages.json" 2>"$d/build.log"; '
            'echo $? >"$d/returncode.tmp" && mv "$d/returncode.tmp" "$d/returncode"'
        )
        self.proc = subprocess.Popen(
            ["sh", "-c", script, "sh", str(scratch), *command, str(scratch / "fs")],
            cwd=ROOT,
            env=pip_env(scratch),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # Two virtualenvs and a wheel folder: seconds of disk work, left to an `rm` that outlives the session.
        rm = 'rm -rf -- "$1" >/dev/null 2>&1 &'
        subprocess.run(["sh", "-c", rm, "sh", str(self.scratch)], check=True, timeout=10)


def result(scratch: Path) -> list[dockerbuild.Stage]:
    """The stages of the build writing into `scratch`, once it has finished (its own process or another's)."""
    if not (scratch / "started").exists():
        raise AssertionError(f"no image build was started for this run (one is, for {IMAGE_TESTS})")
    done = scratch / "returncode"
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while not done.exists():
        assert time.monotonic() < deadline, f"the image build did not finish in {BUILD_TIMEOUT_S} s"
        time.sleep(0.2)  # another process's file: nothing to await from a synchronous fixture
    if done.read_text().strip() != "0":
        raise AssertionError((scratch / "build.log").read_text()[-6000:])
    return dockerbuild.load((scratch / "stages.json").read_text())
