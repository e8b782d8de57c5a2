"""With no database URL the service starts an embedded PostgreSQL under its data folder."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncpg
import pytest

from servicekit.procs import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
async def test_serve_without_database_url_runs_embedded_postgres() -> None:
    data_dir = ROOT / ".data" / "test-embedded"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    service = ServiceProcess(
        "schema-service", "--embedded", "--data-dir", str(data_dir), "--readiness-interval", "0.2", env=env
    )
    with service:
        await service.wait_serving("readiness", timeout_s=150)
        assert (data_dir / "PG_VERSION").read_text().strip() == "16"
        pid_file = (data_dir / "postmaster.pid").read_text().splitlines()
        socket_dir, port = pid_file[4], pid_file[3]
        conn = await asyncpg.connect(host=socket_dir, port=int(port), user="postgres", database="app")
        try:
            assert await conn.fetchval("SELECT current_database()") == "app"
        finally:
            await conn.close()
        service.terminate()
        assert await service.wait_exit(timeout_s=60) == 0
        # Start and stop are quiet: no multi-line command dumps at INFO, no gRPC fork warning at exit.
        lines = service.output().splitlines()
        assert not [line for line in lines if '"logger": "pgserver"' in line and '"level": "INFO"' in line]
        assert not [line for line in lines if "fork_posix" in line or "\\n" in line], lines


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(180)
async def test_a_killed_service_does_not_leave_its_embedded_postgres_running(tmp_path: Path) -> None:
    """The server is held by a helper process without gRPC (schema_service.embedded), which stops it when the
    service is gone, however it went: here SIGKILL, where no exit handler of the service runs."""
    data_dir = tmp_path / "pgdata"  # fresh: pgserver never forgets a holder that was killed itself
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    service = ServiceProcess(
        "schema-service", "--embedded", "--data-dir", str(data_dir), "--readiness-interval", "0.2", env=env
    )
    with service:
        await service.wait_serving("readiness", timeout_s=150)
        postmaster = _postmaster_pid(data_dir)
        assert postmaster is not None and _running(postmaster)
        service.proc.kill()
        service.proc.wait(10)
        deadline = time.monotonic() + 60
        while _running(postmaster):
            assert time.monotonic() < deadline, f"postgres {postmaster} still runs a minute after the service died"
            await asyncio.sleep(0.1)  # another process's exit: nothing to await
