"""The image build (tests/deploy/imagebuild.py) starts in a background process as soon as collection ends,
and the tests that need it run last: its minute of pip (mostly waiting on the network) overlaps the rest of
the suite instead of adding to it. Run alone, the image tests simply wait for it. With pytest-xdist the
controller starts the one build of the run (tests/conftest.py) and tells each worker where it writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import dockerbuild, kustomize
from tests.deploy.imagebuild import WORKER_KEY, ImageBuild, result, scratch_folder

IMAGE_FIXTURE = "image_stages"
BUILD = pytest.StashKey[ImageBuild]()


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and kustomize.SHARED_RENDERS_KEY in workerinput:
        kustomize.share_renders(Path(workerinput[kustomize.SHARED_RENDERS_KEY]))


def needs_image(item: pytest.Item) -> bool:
    return IMAGE_FIXTURE in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=needs_image)  # stable: everything else keeps its order, the image tests go last


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput") or config.option.collectonly:
        return  # an xdist worker: the controller has started the build
    if any(map(needs_image, session.items)):
        config.stash[BUILD] = ImageBuild(scratch_folder())


def pytest_sessionfinish(session: pytest.Session) -> None:
    build = session.config.stash.get(BUILD, None)
    if build is not None:
        build.close()


@pytest.fixture(scope="session")
def image_stages(pytestconfig: pytest.Config) -> list[dockerbuild.Stage]:
    workerinput = getattr(pytestconfig, "workerinput", None)
    if workerinput is not None:
        return result(Path(workerinput[WORKER_KEY]))
    build = pytestconfig.stash.get(BUILD, None)
    if build is None:  # e.g. selected in a way the collection hook did not see
        build = pytestconfig.stash[BUILD] = ImageBuild(scratch_folder())
    return result(build.scratch)
