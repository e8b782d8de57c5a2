"""schemaservice.v1.MigrationService servicer: proto in, migration engine, proto out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from schema_service.api import to_proto
from schema_service.api.boundary import BOUNDARY
from schema_service.app import App
from schema_service.drift.verify import verify
from schema_service.errors import InvalidRequest
from schema_service.migrate import RunOptions, migrate
from schema_service.migrate.lint import lint_dir
from schema_service.migrate.ops import status
from schema_service.migrate.wait import wait_for_version
from schemaservice.v1 import migration_service_pb2 as pb
from schemaservice.v1 import migration_service_pb2_grpc
from servicekit.boundary import bind_request_id
from servicekit.drain import ServerShuttingDown
from servicekit.errors import FieldViolation
from servicekit.server import Lifecycle

# Margin kept from the caller's deadline so we answer DEADLINE_EXCEEDED with details ourselves.
_DEADLINE_MARGIN_S = 0.05


class MigrationServicer(migration_service_pb2_grpc.MigrationServiceServicer):
    """schemaservice.v1.MigrationService."""

    def __init__(self, app: App, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def Migrate(
        self, request: pb.MigrateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.MigrateResponse]:
        bind_request_id(context)
        async with BOUNDARY(context, "Migrate"):
            if request.target_version < 0:
                raise _invalid("target_version", "must be >= 0 (0 applies everything)")
            settings = self.app.settings.migration
            if request.allow_out_of_order:
                settings = settings.model_copy(update={"allow_out_of_order": True})
            options = RunOptions(settings=settings, target=request.target_version or None, dry_run=request.dry_run)
            async for event in migrate(self.app.dsn, options):
                yield to_proto.migrate_event(event)

    async def GetStatus(self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext) -> pb.GetStatusResponse:
        bind_request_id(context)
        async with BOUNDARY(context, "GetStatus"):
            report = await status(self.app.dsn, self.app.settings.migration)
        return to_proto.status_response(report)

    async def VerifySchema(
        self, request: pb.VerifySchemaRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifySchemaResponse:
        bind_request_id(context)
        settings = self.app.settings.migration
        async with BOUNDARY(context, "VerifySchema"):
            differences = await verify(self.app.dsn, settings, scratch_url=settings.scratch_dsn)
        return to_proto.verify_response(differences)

    async def LintMigrations(
        self, request: pb.LintMigrationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.LintMigrationsResponse:
        bind_request_id(context)
        async with BOUNDARY(context, "LintMigrations"):
            migration = self.app.settings.migration
            findings = await lint_dir(migration.migrations_dir, migration.file_format)
        return to_proto.lint_response(findings)

    async def WaitForVersion(
        self, request: pb.WaitForVersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.WaitForVersionResponse:
        bind_request_id(context)
        remaining = context.time_remaining()
        timeout = None if remaining is None else max(0.0, remaining - _DEADLINE_MARGIN_S)
        async with BOUNDARY(context, "WaitForVersion"):
            if request.version < 0:
                raise _invalid("version", "must be >= 0")
            current = await self._wait_unless_stopping(request.version, timeout)
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
