"""schemaservice.v1.UsageService servicer: proto in, usage domain call, proto out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import grpc

from schema_service.api import from_proto, to_proto
from schema_service.api.boundary import BOUNDARY
from schema_service.app import App
from schema_service.usage import records
from schema_service.usage.ledger import LedgerWriter
from schema_service.usage.queries import at_page, query_usage
from schema_service.usage.reconcile import reconcile_query
from schemaservice.v1 import usage_service_pb2 as pb
from schemaservice.v1 import usage_service_pb2_grpc
from servicekit.auth import PermissionDenied, caller_holds, current_caller
from servicekit.boundary import bind_request_id

SERVICE = pb.DESCRIPTOR.services_by_name["UsageService"].full_name
READ_ALL = "usage.read_all"


class UsageServicer(usage_service_pb2_grpc.UsageServiceServicer):
    """schemaservice.v1.UsageService."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.writer = LedgerWriter(app.require_write_pool, micro_times=True)

    async def RecordUsage(
        self, request: pb.RecordUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordUsageResponse:
        bind_request_id(context)
        async with BOUNDARY(context, "RecordUsage"):
            now = datetime.now(UTC)
            batch = records.parse_batch(request, current_caller(), self.app.settings.usage, now)
            done = await self.writer.write(batch, timeout_s=context.time_remaining())
        return pb.RecordUsageResponse(
            written_count=done.written,
            duplicate_count=done.duplicates,
            summary=records.summary(done.written, done.duplicates),
        )

    async def QueryUsage(
        self, request: pb.QueryUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryUsageResponse:
        bind_request_id(context)
        async with BOUNDARY(context, "QueryUsage"):
            asked = from_proto.usage_query(request, self.app.settings.usage.max_query_days, datetime.now(UTC))
            query = at_page(replace(asked, filters=_scoped(asked.filters)), request.page_token)
            timeout_s = self.app.settings.usage.query_timeout_s
            page = await query_usage(self.app.require_pool(), query, timeout_s=timeout_s)
            checked = await reconcile_query(self.app.require_pool(), query, timeout_s=timeout_s)
        response = to_proto.usage_response(query, page)
        if checked is not None:
            response.reconciliation.CopyFrom(to_proto.reconciliation(checked))
        return response


def _scoped(filters: dict[str, str]) -> dict[str, str]:
    if caller_holds(READ_ALL):
        return filters
    own = current_caller()
    if filters.get("caller", own) != own:
        raise PermissionDenied(f"reading another caller's usage needs the role {READ_ALL}", metadata={"role": READ_ALL})
    return {**filters, "caller": own}
