"""Shared fixtures: a real PostgreSQL, one fresh database per test.

`DATABASE_URL` (a server where the role may create databases) is used when set;
otherwise an embedded PostgreSQL (pgserver) is started under `.data/test-postgres`.
The schema is migrated once per run into a template database; each test that wants
it gets `CREATE DATABASE ... TEMPLATE` of that, which takes milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from schema_service.database import with_database
from schema_service.embedded import start_postgres
from tests.deploy.imagebuild import IMAGE_TESTS, WORKER_KEY, ImageBuild, scratch_folder
from tests.deploy.kustomize import SHARED_RENDERS_KEY
from tests.pg import admin_dsn_for

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a role that can create databases, on the shared or embedded server."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield admin_dsn_for(url)
        return
    server = start_postgres(ROOT / ".data" / "test-postgres")
    yield server


async def _create_database(admin_dsn: str, name: str, template: str = "template0") -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def _drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class _Drops:
    """Test databases dropped behind the tests, one at a time, all of them before the session ends.

    PostgreSQL makes every DROP DATABASE wait for an immediate checkpoint, and on the shared server, with
    other sessions writing, one took 52 s (its log: "write=46.206 s, sync=5.422 s"), so a teardown that waited
    for it ran a test past its timeout. One drop at a time, so a slow checkpoint cannot pile up connections.
    """

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self._one_at_a_time = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()

    def drop(self, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._drop(name))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _drop(self, name: str) -> None:
        async with self._one_at_a_time:
            await _drop_database(self.admin_dsn, name)

    async def wait(self) -> None:
        await asyncio.gather(*self._pending)


@pytest.fixture(scope="session")
async def _drops(pg_admin_dsn: str) -> AsyncIterator[_Drops]:
    drops = _Drops(pg_admin_dsn)
    yield drops
    await drops.wait()


@pytest.fixture
async def empty_db(pg_admin_dsn: str, _drops: _Drops) -> AsyncIterator[str]:
    """DSN of a fresh, empty database, dropped after the test (without the test waiting for it)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = await _create_database(pg_admin_dsn, name)
    yield dsn
    _drops.drop(name)


@pytest.fixture(scope="session")
async def migrated_template(pg_admin_dsn: str) -> AsyncIterator[str]:
    """Name of a template database holding the full application schema, built once per run."""
    from schema_service.migrate import apply_migrations

    name = f"tpl_{uuid.uuid4().hex[:12]}"
    dsn = await _create_database(pg_admin_dsn, name)
    await apply_migrations(dsn)
    yield name
    await _drop_database(pg_admin_dsn, name)


@pytest.fixture
async def migrated_db(pg_admin_dsn: str, migrated_template: str, _drops: _Drops) -> AsyncIterator[str]:
    """DSN of a fresh database with the full application schema applied (dropped as empty_db's is)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = await _create_database(pg_admin_dsn, name, template=migrated_template)
    yield dsn
    _drops.drop(name)


# pytest-xdist's controller starts the run's one image build (tests/deploy/imagebuild.py); the workers wait for it.
# It also names the file where the first worker to render the kustomize overlays leaves them for the other.
IMAGE_SCRATCH = pytest.StashKey[Path]()
RUN_FOLDER = pytest.StashKey[Path]()
IMAGE_BUILD = pytest.StashKey[ImageBuild]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: WorkerController) -> None:
    """Each worker is told the folder the image build writes into, and the file of the kustomize renders."""
    stash = node.config.stash
    if IMAGE_SCRATCH not in stash:
        stash[IMAGE_SCRATCH] = scratch_folder()
        stash[RUN_FOLDER] = Path(tempfile.mkdtemp(prefix="llm-platform-tests-"))
    node.workerinput[WORKER_KEY] = str(stash[IMAGE_SCRATCH])
    node.workerinput[SHARED_RENDERS_KEY] = str(stash[RUN_FOLDER] / "k8s-renders.pickle")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: WorkerController, ids: list[str]) -> None:
    """The first worker to have collected image tests starts the build (before any test runs)."""
    config = node.config
    if IMAGE_BUILD not in config.stash and not config.option.collectonly and any(map(_is_image_test, ids)):
        config.stash[IMAGE_BUILD] = ImageBuild(config.stash[IMAGE_SCRATCH])


def _is_image_test(nodeid: str) -> bool:
    return nodeid.startswith(IMAGE_TESTS)


def pytest_sessionfinish(session: pytest.Session) -> None:
    stash = session.config.stash
    build = stash.get(IMAGE_BUILD, None)
    if build is not None:
        build.close()
    elif IMAGE_SCRATCH in stash:
        shutil.rmtree(stash[IMAGE_SCRATCH], ignore_errors=True)
    if RUN_FOLDER in stash:
        shutil.rmtree(stash[RUN_FOLDER], ignore_errors=True)
