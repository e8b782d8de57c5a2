"""schemaservice.v1 requests -> the domain's queries (no grpc import here), as the gateway's api/from_proto.py; the
other direction is to_proto.py. Ranges are checked here (queries.check_ranges), naming the field.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schema_service.metrics import queries
from schemaservice.v1 import metrics_service_pb2 as mpb

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
