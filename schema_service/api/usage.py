"""schemaservice.v1.UsageService servicer: proto in, usage domain call, proto out."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import grpc
from google.protobuf import timestamp_pb2

from schema_service.api.boundary import BOUNDARY
from schema_service.app import App
from schema_service.errors import InvalidRequest
from schema_service.usage import records
from schema_service.usage.ledger import LedgerWriter
from schema_service.usage.queries import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    UsagePage,
    UsageQuery,
    UsageSum,
    at_page,
    page_token,
    query_usage,
)
from schema_service.usage.reconcile import Reconciliation, reconcile_query
from schemaservice.v1 import usage_service_pb2 as pb
from schemaservice.v1 import usage_service_pb2_grpc
from servicekit.auth import PermissionDenied, caller_holds, current_caller
from servicekit.boundary import bind_request_id
from servicekit.errors import FieldViolation

SERVICE = pb.DESCRIPTOR.services_by_name["UsageService"].full_name
READ_ALL = "usage.read_all"
DIMENSIONS = {
    pb.USAGE_DIMENSION_CALLER: "caller",
    pb.USAGE_DIMENSION_USER: "user",
    pb.USAGE_DIMENSION_PROVIDER: "provider",
    pb.USAGE_DIMENSION_MODEL: "model",
    pb.USAGE_DIMENSION_DAY: "day",
}
FILTERS = {"caller": "caller", "user_id": "user", "provider": "provider", "model": "model"}


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
            query = usage_query(request, self.app.settings.usage.max_query_days, datetime.now(UTC))
            timeout_s = self.app.settings.usage.query_timeout_s
            page = await query_usage(self.app.require_pool(), query, timeout_s=timeout_s)
            checked = await reconcile_query(self.app.require_pool(), query, timeout_s=timeout_s)
        response = usage_response(query, page)
        if checked is not None:
            response.reconciliation.CopyFrom(reconciliation(checked))
        return response


def usage_query(request: pb.QueryUsageRequest, max_days: int, now: datetime) -> UsageQuery:
    """The domain query for a request, scoped to the caller's own rows unless it holds usage.read_all."""
    problems: list[FieldViolation] = []
    start = _time(request.start_time, "start_time") if request.HasField("start_time") else None
    end = _time(request.end_time, "end_time") if request.HasField("end_time") else now
    if start is None:
        problems.append(FieldViolation("start_time", "is required"))
    elif not start < end:
        problems.append(FieldViolation("end_time", "must be after start_time"))
    elif (end - start).days > max_days:
        problems.append(FieldViolation("end_time", f"the range may cover at most {max_days} days"))
    group_by = [DIMENSIONS.get(d) for d in request.group_by]
    if None in group_by or len(set(group_by)) != len(group_by):
        problems.append(FieldViolation("group_by", "each of CALLER, USER, PROVIDER, MODEL, DAY at most once"))
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        problems.append(FieldViolation("page_size", f"must be 0 to {MAX_PAGE_SIZE}"))
    filters = {name: getattr(request, f) for f, name in FILTERS.items() if getattr(request, f)}
    problems += [FieldViolation(f, "at most 256 characters") for f in FILTERS if len(getattr(request, f)) > 256]
    if problems or start is None:
        raise InvalidRequest("bad QueryUsage request", field_violations=problems)
    filters = _scoped(filters)
    groups = tuple(g for g in group_by if g)
    query = UsageQuery(
        start, end, groups, filters, request.page_size or DEFAULT_PAGE_SIZE, open_end=not request.HasField("end_time")
    )
    return at_page(query, request.page_token)


def _scoped(filters: dict[str, str]) -> dict[str, str]:
    if caller_holds(READ_ALL):
        return filters
    own = current_caller()
    if filters.get("caller", own) != own:
        raise PermissionDenied(f"reading another caller's usage needs the role {READ_ALL}", metadata={"role": READ_ALL})
    return {**filters, "caller": own}


def usage_response(query: UsageQuery, page: UsagePage) -> pb.QueryUsageResponse:
    total = _group(page.total)
    summary = (
        f"{page.group_count} group{'' if page.group_count == 1 else 's'}, ${_dollars(page.total.cost_usd)} over "
        f"{page.total.attempts} attempt{'' if page.total.attempts == 1 else 's'}"
        if page.total.attempts
        else "no usage in the range"
    )
    return pb.QueryUsageResponse(
        groups=[_group(g) for g in page.groups],
        total=total,
        group_count=page.group_count,
        next_page_token=page_token(query, page.next_offset) if page.next_offset is not None else "",
        summary=summary,
    )


def reconciliation(r: Reconciliation) -> pb.UsageReconciliation:
    return pb.UsageReconciliation(
        ledger_input_tokens=r.ledger_input,
        ledger_output_tokens=r.ledger_output,
        metered_input_tokens=r.metered_input,
        metered_output_tokens=r.metered_output,
        input_drift_tokens=r.input_drift,
        output_drift_tokens=r.output_drift,
    )


def _group(s: UsageSum) -> pb.UsageGroup:
    keys = {"user_id" if k == "user" else k: v for k, v in s.keys.items()}
    return pb.UsageGroup(
        **keys,
        attempts=s.attempts,
        requests=s.requests,
        failed_attempts=s.failed_attempts,
        estimated_attempts=s.estimated_attempts,
        input_tokens=s.input_tokens,
        cached_input_tokens=s.cached_input_tokens,
        cache_write_tokens=s.cache_write_tokens,
        output_tokens=s.output_tokens,
        reasoning_tokens=s.reasoning_tokens,
        cost_usd=_dollars(s.cost_usd),
    )


def _time(stamp: timestamp_pb2.Timestamp, name: str) -> datetime:
    if not -62135596800 <= stamp.seconds <= 253402300799:
        raise InvalidRequest(
            f"{name} out of range", field_violations=[FieldViolation(name, "must lie in years 1-9999")]
        )
    return stamp.ToDatetime(tzinfo=UTC)


def _dollars(cost: Decimal) -> str:
    """`0.00252`, `0`: no trailing zeros and no exponent (a numeric(24, 12) zero reads back as 0E-12)."""
    return format(cost.normalize(), "f") if cost else "0"
