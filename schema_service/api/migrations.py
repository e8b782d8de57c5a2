"""schemaservice.v1.MigrationService servicer: proto in, migration engine, proto out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import code_pb2

from schema_service.app import App
from schema_service.dberrors import database_errors
from schema_service.errors import InvalidRequest, SchemaServiceError
from schema_service.lint import lint_dir
from schema_service.migrate import RunOptions, migrate
from schema_service.migrate import events as ev
from schema_service.migrate.lock import LockHolder
from schema_service.migrate.ops import status
from schema_service.migrate.wait import wait_for_version
from schema_service.verify import verify
from schemaservice.v1 import migration_service_pb2 as pb
from schemaservice.v1 import migration_service_pb2_grpc
from servicekit.boundary import abort, bind_request_id
from servicekit.drain import ServerShuttingDown
from servicekit.errors import FieldViolation, ServiceError
from servicekit.server import Lifecycle

# Margin kept from the caller's deadline so we answer DEADLINE_EXCEEDED with details ourselves.
_DEADLINE_MARGIN_S = 0.05


log = logging.getLogger(__name__)


class _Internal(SchemaServiceError):
    """A bug: reported as INTERNAL (never UNKNOWN), details in the log only."""

    code = code_pb2.INTERNAL
    reason = "INTERNAL"


class _Failed(Exception):
    """Carries a domain error out of the translating context manager to the abort."""

    def __init__(self, error: ServiceError) -> None:
        self.error = error


@contextlib.contextmanager
def _domain_errors(operation: str) -> Iterator[None]:
    """Every failure leaves as a typed status, never UNKNOWN: domain errors pass through, database
    failures are mapped by schema_service.dberrors (SQLSTATE in the metadata, RetryInfo when retryable)."""
    try:
        with database_errors(operation):
            yield
    except ServiceError as exc:
        raise _Failed(exc) from exc
    except Exception as exc:
        log.exception("MigrationService call failed")
        raise _Failed(_Internal(f"internal error ({type(exc).__name__}); see the service log")) from exc


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def _holder(holder: LockHolder | None) -> pb.LockHolder | None:
    if holder is None:
        return None
    since = timestamp_pb2.Timestamp()
    if holder.since is not None:
        since.FromDatetime(holder.since)
    return pb.LockHolder(
        backend_pid=holder.backend_pid,
        application_name=holder.application_name,
        client_addr=holder.client_addr,
        since=since,
    )


def _planned(item: ev.PlannedItem) -> pb.PlannedMigration:
    return pb.PlannedMigration(
        version=item.version,
        name=item.name,
        checksum=item.checksum,
        transactional=item.transactional,
        statement_count=item.statement_count,
    )


def event_to_proto(event: ev.Event) -> pb.MigrateResponse:
    if isinstance(event, ev.PlanReady):
        plan = pb.Plan(current_version=event.current_version, migrations=[_planned(i) for i in event.items])
        return pb.MigrateResponse(plan=plan)
    if isinstance(event, ev.LockWaiting):
        return pb.MigrateResponse(lock_waiting=pb.LockWaiting(holder=_holder(event.holder)))
    if isinstance(event, ev.MigrationStarted):
        started = pb.MigrationStarted(version=event.version, name=event.name, statement_count=event.statement_count)
        return pb.MigrateResponse(migration_started=started)
    if isinstance(event, ev.StatementFinished):
        finished = pb.StatementFinished(
            version=event.version,
            statement_index=event.index,
            statement_count=event.count,
            duration=_duration(event.duration_s),
            resumed=event.resumed,
        )
        return pb.MigrateResponse(statement_finished=finished)
    if isinstance(event, ev.MigrationFinished):
        done = pb.MigrationFinished(
            version=event.version, name=event.name, duration=_duration(event.duration_s), checksum=event.checksum
        )
        return pb.MigrateResponse(migration_finished=done)
    return pb.MigrateResponse(
        done=pb.MigrateDone(current_version=event.current_version, applied_count=event.applied_count)
    )


class MigrationServicer(migration_service_pb2_grpc.MigrationServiceServicer):
    """schemaservice.v1.MigrationService."""

    def __init__(self, app: App, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def Migrate(  # noqa: N802 - gRPC method name
        self, request: pb.MigrateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.MigrateResponse]:
        bind_request_id(context)
        if request.target_version < 0:
            await abort(context, _invalid("target_version", "must be >= 0 (0 applies everything)"))
        settings = self.app.settings.migration
        if request.allow_out_of_order:
            settings = replace(settings, allow_out_of_order=True)
        options = RunOptions(settings=settings, target=request.target_version or None, dry_run=request.dry_run)
        try:
            with _domain_errors("Migrate"):
                async for event in migrate(self.app.dsn, options):
                    yield event_to_proto(event)
        except _Failed as failed:
            await abort(context, failed.error)

    async def GetStatus(  # noqa: N802
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
        bind_request_id(context)
        try:
            with _domain_errors("GetStatus"):
                report = await status(self.app.dsn, self.app.settings.migration)
        except _Failed as failed:
            await abort(context, failed.error)
        applied = []
        for row in report.applied:
            at = timestamp_pb2.Timestamp()
            at.FromDatetime(row.applied_at)
            applied.append(
                pb.AppliedMigration(
                    version=row.version,
                    name=row.name,
                    checksum=row.checksum,
                    applied_at=at,
                    execution_time=_duration(row.execution_ms / 1000),
                    applied_by=row.applied_by,
                    success=row.success,
                )
            )
        return pb.GetStatusResponse(
            current_version=report.current_version,
            applied=applied,
            pending=[_planned(i) for i in report.pending],
            lock_holder=_holder(report.lock_holder),
            problems=report.problems,
        )

    async def VerifySchema(  # noqa: N802
        self, request: pb.VerifySchemaRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifySchemaResponse:
        bind_request_id(context)
        try:
            with _domain_errors("VerifySchema"):
                settings = self.app.settings.migration
                differences = await verify(self.app.dsn, settings, scratch_url=settings.scratch_url)
        except _Failed as failed:
            await abort(context, failed.error)
        kinds = {
            "missing": pb.DIFFERENCE_KIND_MISSING,
            "unexpected": pb.DIFFERENCE_KIND_UNEXPECTED,
            "changed": pb.DIFFERENCE_KIND_CHANGED,
        }
        return pb.VerifySchemaResponse(
            matches=not differences,
            differences=[
                pb.SchemaDifference(
                    object_kind=d.object_kind,
                    object_name=d.object_name,
                    kind=kinds[d.kind],
                    expected=d.expected,
                    actual=d.actual,
                )
                for d in differences
            ],
        )

    async def LintMigrations(  # noqa: N802
        self, request: pb.LintMigrationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.LintMigrationsResponse:
        bind_request_id(context)
        try:
            with _domain_errors("LintMigrations"):
                migration = self.app.settings.migration
                findings = await lint_dir(migration.migrations_dir, migration.file_format)
        except _Failed as failed:
            await abort(context, failed.error)
        severity = {"warning": pb.LINT_SEVERITY_WARNING, "error": pb.LINT_SEVERITY_ERROR}
        return pb.LintMigrationsResponse(
            findings=[
                pb.LintFinding(
                    file=f.file,
                    line=f.line,
                    column=f.column,
                    rule=f.rule,
                    message=f.message,
                    severity=severity[f.severity],
                )
                for f in findings
            ]
        )

    async def WaitForVersion(  # noqa: N802
        self, request: pb.WaitForVersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.WaitForVersionResponse:
        bind_request_id(context)
        if request.version < 0:
            await abort(context, _invalid("version", "must be >= 0"))
        remaining = context.time_remaining()
        timeout = None if remaining is None else max(0.0, remaining - _DEADLINE_MARGIN_S)
        try:
            with _domain_errors("WaitForVersion"):
                current = await self._wait_unless_stopping(request.version, timeout)
        except _Failed as failed:
            await abort(context, failed.error)
        return pb.WaitForVersionResponse(current_version=current)

    async def _wait_unless_stopping(self, version: int, timeout: float | None) -> int:
        """A waiter is a long-lived call: at shutdown it ends at once (UNAVAILABLE) instead of holding the drain."""
        waiting = asyncio.ensure_future(wait_for_version(self.app.dsn, version, timeout_s=timeout))
        stopping = asyncio.ensure_future(self.lifecycle.stopping.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
        if waiting.cancelled():
            raise ServerShuttingDown("the server is shutting down; ask another replica", retry_after_s=1.0)
        return waiting.result()


def _invalid(field: str, description: str) -> InvalidRequest:
    return InvalidRequest(f"{field} {description}", field_violations=[FieldViolation(field, description)])
