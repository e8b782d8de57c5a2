"""schemaservice.v1.MigrationService on a real grpc.aio server and channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from schema_service import server
from schema_service.config import MigrationSettings
from schema_service.database import with_database
from schemaservice.v1 import migration_service_pb2 as pb
from schemaservice.v1 import migration_service_pb2_grpc
from servicekit.server import Lifecycle
from tests.schema.migration_fixtures.helpers import (
    FIXTURES,
    READ_HISTORY,
    fetchval,
    restricted_role,
    wait_for_lock_wait,
    write_migrations,
)
from tests.schemaserver import schema_server, settings_for


@dataclass
class Served:
    running: server.Running
    stub: migration_service_pb2_grpc.MigrationServiceStub

    @property
    def lifecycle(self) -> Lifecycle:
        return self.running.lifecycle


@asynccontextmanager
async def migration_server(dsn: str, folder: Path, **migration: object) -> AsyncIterator[Served]:
    """The schema service as `serve --no-migrate` starts it (the migrations are the test's to run) on `folder`;
    not waiting for readiness, which waits for those migrations."""
    migrations = MigrationSettings(migrations_dir=folder, migrate_on_start=False, **migration)  # type: ignore[arg-type]
    settings = settings_for(dsn, migration=migrations)
    async with schema_server(settings, ready=False) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Served(running, migration_service_pb2_grpc.MigrationServiceStub(channel))


def _details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.BadRequest | None]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), None
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            packed.Unpack(info)
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
    return info, bad


THREE = {
    "001_a.sql": "CREATE TABLE a (x int);\n",
    "002_b.sql": "-- migrate: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS a_x_idx ON a (x);\n"
    "CREATE TABLE IF NOT EXISTS b (x int);\n",
    "003_c.sql": "CREATE TABLE c (x int);\n",
}


async def test_migrate_streams_plan_progress_and_done(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, THREE)
    async with migration_server(empty_db, folder) as running:
        dry = [r async for r in running.stub.Migrate(pb.MigrateRequest(dry_run=True), timeout=20)]
        assert [r.WhichOneof("event") for r in dry] == ["plan", "done"]
        assert [(m.version, m.transactional, m.statement_count) for m in dry[0].plan.migrations] == [
            (1, True, 1),
            (2, False, 2),
            (3, True, 1),
        ]
        assert await fetchval(empty_db, "SELECT to_regclass('a')") is None

        events = [r async for r in running.stub.Migrate(pb.MigrateRequest(target_version=2), timeout=20)]

    kinds = [r.WhichOneof("event") for r in events]
    assert kinds == [
        "plan",
        "migration_started",
        "statement_finished",
        "migration_finished",
        "migration_started",
        "statement_finished",
        "statement_finished",
        "migration_finished",
        "done",
    ]
    assert events[-1].done.current_version == 2 and events[-1].done.applied_count == 2
    finished = [e.statement_finished for e in events if e.HasField("statement_finished")]
    assert [(f.version, f.statement_index, f.statement_count) for f in finished] == [(1, 1, 1), (2, 1, 2), (2, 2, 2)]
    assert len(events[3].migration_finished.checksum) == 64


async def test_failed_migration_is_failed_precondition_with_position(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_bad.sql": "CREATE TABLE a (x int);\nSELECT nope FROM a;\n"})
    async with migration_server(empty_db, folder) as running:
        seen: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for response in running.stub.Migrate(pb.MigrateRequest(), timeout=20):
                seen.append(response.WhichOneof("event"))
    assert seen == ["plan", "migration_started", "statement_finished"]
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = _details(caught.value)
    assert info.reason == "MIGRATION_FAILED" and info.domain == "schemaservice"
    assert dict(info.metadata) == {"file": "001_bad.sql", "line": "2", "column": "8", "sqlstate": "42703"}


async def test_get_status_reports_history_pending_problems_and_lock_holder(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_a.sql": "CREATE TABLE a (x int);\n"})
    async with migration_server(empty_db, folder) as running:
        assert (await running.stub.GetStatus(pb.GetStatusRequest(), timeout=10)).current_version == 0
        await _drain(running.stub.Migrate(pb.MigrateRequest(), timeout=20))
        (folder / "001_a.sql").write_text("CREATE TABLE a (x bigint);\n")
        write_migrations(folder, {"002_b.sql": "SELECT count(*) FROM a;\n"})
        changed = await running.stub.GetStatus(pb.GetStatusRequest(), timeout=10)
        assert any("001_a.sql was changed" in p for p in changed.problems)

        blocker = await asyncpg.connect(empty_db)
        try:
            await blocker.execute("BEGIN; LOCK TABLE a IN ACCESS EXCLUSIVE MODE")
            run = asyncio.create_task(_run_with_repair(empty_db, folder))
            await wait_for_lock_wait(empty_db)
            report = await running.stub.GetStatus(pb.GetStatusRequest(), timeout=10)
            await blocker.execute("ROLLBACK")
            await run
        finally:
            await blocker.close()

    assert report.current_version == 1
    assert [(m.version, m.success, len(m.checksum)) for m in report.applied] == [(1, True, 64)]
    assert report.applied[0].applied_by and report.applied[0].applied_at.seconds > 0
    assert report.lock_holder.application_name.startswith("schema-service-migrate-lock ")
    assert report.lock_holder.backend_pid > 0 and report.lock_holder.since.seconds > 0
    assert [p.version for p in report.pending] == [2]
    assert list(report.problems) == []


async def _run_with_repair(dsn: str, folder: Path) -> None:
    from schema_service.migrate import apply_migrations
    from schema_service.migrate.ops import repair

    await repair(dsn, MigrationSettings(migrations_dir=folder))
    await apply_migrations(dsn, folder, lock_timeout_s=30)


async def _drain(call: grpc.aio.UnaryStreamCall) -> list[pb.MigrateResponse]:  # type: ignore[type-arg]
    return [r async for r in call]


async def test_wait_for_version_returns_when_a_migration_commits(empty_db: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, THREE)
    async with migration_server(empty_db, folder) as running:
        waiter = asyncio.ensure_future(running.stub.WaitForVersion(pb.WaitForVersionRequest(version=3), timeout=20))
        await _drain(running.stub.Migrate(pb.MigrateRequest(target_version=2), timeout=20))
        assert not waiter.done()
        await _drain(running.stub.Migrate(pb.MigrateRequest(), timeout=20))
        assert (await waiter).current_version == 3
        again = await running.stub.WaitForVersion(pb.WaitForVersionRequest(version=1), timeout=5)
        assert again.current_version == 3


async def test_wait_for_version_deadline(empty_db: str, tmp_path: Path) -> None:
    async with migration_server(empty_db, write_migrations(tmp_path, THREE)) as running:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.WaitForVersion(pb.WaitForVersionRequest(version=9), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_wait_for_version_ends_at_shutdown(empty_db: str, tmp_path: Path) -> None:
    async with migration_server(empty_db, write_migrations(tmp_path, THREE)) as running:
        waiter = asyncio.ensure_future(running.stub.WaitForVersion(pb.WaitForVersionRequest(version=9), timeout=20))
        await wait_for_listener(empty_db)
        await running.lifecycle.begin_shutdown()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await waiter
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _details(caught.value)[0].reason == "SERVER_SHUTTING_DOWN"


async def wait_for_listener(dsn: str) -> None:
    """The waiter is parked once its LISTEN connection is idle in the server."""
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name LIKE 'schema-service-wait %' AND state = 'idle'"
        )
        if await fetchval(dsn, query):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("WaitForVersion never started listening")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda stub: stub.WaitForVersion(pb.WaitForVersionRequest(version=-1), timeout=5), "version"),
        (lambda stub: _drain(stub.Migrate(pb.MigrateRequest(target_version=-2), timeout=5)), "target_version"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    empty_db: str, tmp_path: Path, call: object, field: str
) -> None:
    async with migration_server(empty_db, write_migrations(tmp_path, THREE)) as running:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(running.stub)  # type: ignore[operator]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = _details(caught.value)
    assert info.reason == "INVALID_ARGUMENT"
    assert bad is not None and [v.field for v in bad.field_violations] == [field]


async def test_verify_and_lint_rpcs(migrated_db: str) -> None:
    from schema_service.config import PACKAGE_MIGRATIONS

    async with migration_server(migrated_db, PACKAGE_MIGRATIONS) as running:
        assert (await running.stub.VerifySchema(pb.VerifySchemaRequest(), timeout=30)).matches
        await fetchval(migrated_db, "ALTER TABLE users DROP COLUMN last_login_at")
        drift = await running.stub.VerifySchema(pb.VerifySchemaRequest(), timeout=30)
        clean = await running.stub.LintMigrations(pb.LintMigrationsRequest(), timeout=30)
    assert not drift.matches
    assert [(d.object_kind, d.object_name, d.kind) for d in drift.differences] == [
        ("column", "public.users.last_login_at", pb.DIFFERENCE_KIND_MISSING)
    ]
    assert (list(clean.findings), clean.summary) == ([], "no findings")
    async with migration_server(migrated_db, FIXTURES / "lint_bad") as running:
        bad = await running.stub.LintMigrations(pb.LintMigrationsRequest(), timeout=30)
    assert {f.rule for f in bad.findings} >= {"transaction-control", "no-transaction-not-rerunnable"}
    assert all(f.line >= 1 and f.severity != pb.LINT_SEVERITY_UNSPECIFIED for f in bad.findings)
    assert bad.summary.startswith(f"{len(bad.findings)} findings: ")


async def test_unreachable_database_is_unavailable_with_retry_info(tmp_path: Path) -> None:
    dsn = "postgresql://postgres@127.0.0.1:1/none"
    async with migration_server(dsn, write_migrations(tmp_path, THREE)) as running:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _details(caught.value)[0].reason == "DATABASE_UNAVAILABLE"


async def test_database_refusals_carry_their_sqlstate_never_unknown(migrated_db: str, tmp_path: Path) -> None:
    async with restricted_role(migrated_db) as live:
        async with migration_server(live, write_migrations(tmp_path, THREE)) as running:
            with pytest.raises(grpc.aio.AioRpcError) as status_error:
                await running.stub.GetStatus(pb.GetStatusRequest(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as migrate_error:
                await _drain(running.stub.Migrate(pb.MigrateRequest(), timeout=10))
    for caught, operation in ((status_error, "GetStatus"), (migrate_error, "Migrate")):
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
        info, _ = _details(caught.value)
        assert info.reason == "DATABASE_REFUSED"
        cause = "InsufficientPrivilegeError"
        assert dict(info.metadata) == {"sqlstate": "42501", "cause": cause, "operation": operation}
        # The SQLSTATE and class name the failure; the server's own text stays in the log.
        message = caught.value.details() or ""
        assert "42501" in message and cause in message and "permission denied" not in message


async def test_verify_uses_the_configured_scratch_server(migrated_db: str, pg_admin_dsn: str) -> None:
    from schema_service.config import PACKAGE_MIGRATIONS

    async with restricted_role(migrated_db, *READ_HISTORY) as live:
        async with migration_server(live, PACKAGE_MIGRATIONS) as running:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await running.stub.VerifySchema(pb.VerifySchemaRequest(), timeout=30)
        scratch = with_database(pg_admin_dsn, "postgres")
        async with migration_server(live, PACKAGE_MIGRATIONS, scratch_url=scratch) as running:
            await fetchval(migrated_db, "ALTER TABLE users DROP COLUMN last_login_at")
            drift = await running.stub.VerifySchema(pb.VerifySchemaRequest(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _details(caught.value)[0].reason == "SCRATCH_DATABASE_UNAVAILABLE"
    assert [(d.object_name, d.kind) for d in drift.differences] == [
        ("public.users.last_login_at", pb.DIFFERENCE_KIND_MISSING)
    ]


@pytest.mark.parametrize(
    ("squawk", "reason"),
    [("missing", "SQUAWK_MISSING"), ("#!/bin/sh\necho 'squawk: panic' >&2\nexit 2\n", "SQUAWK_FAILED")],
)
async def test_lint_without_a_working_squawk_is_failed_precondition(
    empty_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, squawk: str, reason: str
) -> None:
    binary = tmp_path / "squawk"
    if squawk != "missing":
        binary.write_text(squawk)
        binary.chmod(0o755)
    monkeypatch.setenv("SCHEMA_SERVICE_SQUAWK", str(binary))
    async with migration_server(empty_db, write_migrations(tmp_path / "m", THREE)) as running:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.LintMigrations(pb.LintMigrationsRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _details(caught.value)[0].reason == reason
