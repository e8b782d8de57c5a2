"""schemaservice.v1 requests -> the domain's queries (no grpc import here), as the gateway's api/from_proto.py; the
other direction is to_proto.py. Ranges are checked here (queries.check_ranges), naming the field.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from schema_service.errors import InvalidRequest
from schema_service.metrics import queries
from schema_service.usage.queries import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, UsageQuery
from schemaservice.v1 import metrics_service_pb2 as mpb
from schemaservice.v1 import usage_service_pb2 as upb
from servicekit.errors import FieldViolation

AGGREGATE_NAMES = {
    mpb.AGGREGATE_COUNT: "count",
    mpb.AGGREGATE_SUM: "sum",
    mpb.AGGREGATE_MIN: "min",
    mpb.AGGREGATE_MAX: "max",
    mpb.AGGREGATE_AVG: "avg",
    mpb.AGGREGATE_P50: "p50",
    mpb.AGGREGATE_P95: "p95",
    mpb.AGGREGATE_P99: "p99",
}
DEFAULT_QUERY_RANGE = timedelta(hours=1)


def metric_query(request: mpb.QueryMetricsRequest, caller: str | None) -> queries.MetricQuery:
    """Unset end_time means now; unset start_time means an hour before the end; `caller` is whose series
    (None: every writer's), as the servicer resolved it from request.caller."""
    queries.check_ranges(
        {"start_time": request.start_time, "end_time": request.end_time, "bucket_width": request.bucket_width}
    )
    end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else datetime.now(UTC)
    start = (
        request.start_time.ToDatetime(UTC)
        if request.HasField("start_time")
        else max(end, queries.EARLIEST + DEFAULT_QUERY_RANGE) - DEFAULT_QUERY_RANGE
    )
    return queries.MetricQuery(
        name=request.name,
        labels=dict(request.labels),
        start=start,
        end=end,
        bucket=request.bucket_width.ToTimedelta() if request.HasField("bucket_width") else None,
        aggregates=frozenset(
            AGGREGATE_NAMES.get(a, f"#{a}") for a in request.aggregates if a != mpb.AGGREGATE_UNSPECIFIED
        ),
        caller=caller,
    )


def anomalies_since(request: mpb.ListAnomaliesRequest) -> datetime:
    queries.check_ranges({"start_time": request.start_time})
    if request.HasField("start_time"):
        return request.start_time.ToDatetime(UTC)
    return datetime.min.replace(tzinfo=UTC)  # -infinity to PostgreSQL


# UsageService

DIMENSIONS = {
    upb.USAGE_DIMENSION_CALLER: "caller",
    upb.USAGE_DIMENSION_USER: "user",
    upb.USAGE_DIMENSION_PROVIDER: "provider",
    upb.USAGE_DIMENSION_MODEL: "model",
    upb.USAGE_DIMENSION_DAY: "day",
}
FILTERS = {"caller": "caller", "user_id": "user", "provider": "provider", "model": "model"}


def usage_query(request: upb.QueryUsageRequest, max_days: int, now: datetime) -> UsageQuery:
    """The domain query for a QueryUsage request, as asked: the servicer scopes its filters to the caller's own rows
    (unless it holds usage.read_all) and applies the page token."""
    problems: list[FieldViolation] = []
    start = _usage_time(request.start_time, "start_time") if request.HasField("start_time") else None
    end = _usage_time(request.end_time, "end_time") if request.HasField("end_time") else now
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
    groups = tuple(g for g in group_by if g)
    return UsageQuery(
        start, end, groups, filters, request.page_size or DEFAULT_PAGE_SIZE, open_end=not request.HasField("end_time")
    )


def _usage_time(stamp: timestamp_pb2.Timestamp, name: str) -> datetime:
    if not -62135596800 <= stamp.seconds <= 253402300799:
        raise InvalidRequest(
            f"{name} out of range", field_violations=[FieldViolation(name, "must lie in years 1-9999")]
        )
    return stamp.ToDatetime(tzinfo=UTC)
