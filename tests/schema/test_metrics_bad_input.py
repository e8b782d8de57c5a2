"""Findings of the review: reused request ids, NUL characters, query ranges, unmapped database errors, oversized
batches while every write slot is taken. Each case is refused with a named field or a mapped status, never UNKNOWN."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from pydantic import ValidationError

from schema_service.config import MetricsSettings
from schema_service.errors import InvalidRequest
from schema_service.metrics.jobs import Housekeeping
from schema_service.metrics.validation import BatchParser
from schema_service.metrics.wire import parse_batch, received, size_limited_parser
from schemaservice.v1 import metrics_service_pb2 as pb
from tests.pg import database_of
from tests.schema.metrics_helpers import (
    count_rows,
    details,
    metric,
    metrics_server,
    violations,
    wait_for_lock_waiters,
)

NOW = datetime.now(UTC).replace(microsecond=0)  # the real clock: some batches go through the server


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (payload shorter than 128 bytes)."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def _refused(request: pb.WriteMetricsRequest) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        BatchParser(MetricsSettings()).parse(received(request), now=NOW)
    return {v.field: v.description for v in caught.value.field_violations}


@pytest.mark.parametrize(
    "other",
    [
        [metric(1.0, at=NOW), metric(2.5, at=NOW)],  # another value
        [metric(1.0, at=NOW), metric(2.0, at=NOW, name="llm.tokens")],  # another name
        [metric(1.0, at=NOW), metric(2.0, at=NOW, labels={"provider": "gemini"})],  # other labels
        [metric(1.0, at=NOW), metric(2.0, at=NOW + timedelta(microseconds=1))],  # another time
        [metric(1.0, at=NOW), metric(2.0, at=NOW, metadata={"attempt": 2})],  # metadata
    ],
)
async def test_a_request_id_reused_for_other_metrics_of_the_same_count_is_refused(
    migrated_db: str, other: list[pb.Metric]
) -> None:
    first = pb.WriteMetricsRequest(request_id="same", metrics=[metric(1.0, at=NOW), metric(2.0, at=NOW)])
    async with metrics_server(migrated_db, retention_days=3650) as running:
        await running.stub.WriteMetrics(first)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="same", metrics=other))
        retry = await running.stub.WriteMetrics(first)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)["ErrorInfo"].reason == "REQUEST_ID_REUSED"  # type: ignore[attr-defined]
    assert "request_id" in violations(caught.value)
    assert (retry.written_count, retry.duplicate) == (2, True)
    conn = await asyncpg.connect(migrated_db)
    try:
        stored = await conn.fetch("SELECT value, metadata FROM system_performance_metrics ORDER BY value")
    finally:
        await conn.close()
    assert [(r["value"], r["metadata"]) for r in stored] == [(1.0, None), (2.0, None)]


def test_the_same_metrics_re_encoded_have_the_same_digest() -> None:
    """Label entries in another order (as Go and grpcurl may send them) and the columnar form are the same batch."""
    parser = BatchParser(MetricsSettings())
    base = metric(3.0, at=NOW, labels={}).SerializeToString()
    a, b = (pb.Metric(labels={k: v}).SerializeToString() for k, v in (("model", "m"), ("provider", "p")))
    one, other = (_field(1, b"id") + _field(2, base + x + y) for x, y in ((a, b), (b, a)))
    assert one != other
    columns = pb.MetricColumns(
        series=[pb.MetricSeries(name="llm.latency_ms", unit="ms", labels={"model": "m", "provider": "p"})],
        series_indexes=[0],
        times_unix_nanos=[int(NOW.timestamp()) * 1_000_000_000],
        values=[3.0],
    )
    columnar = received(pb.WriteMetricsRequest(request_id="id", columns=columns))
    digests = {parser.parse(r, now=NOW).digest for r in (parse_batch(one), parse_batch(other), columnar)}
    assert len(digests) == 1
    assert parser.parse(received(pb.WriteMetricsRequest(request_id="id", metrics=[metric(3.5, at=NOW)])), now=NOW)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (metric(at=NOW, labels={"k": "a\x00b"}), "metrics[1].labels['k']"),
        (metric(at=NOW, unit="m\x00s"), "metrics[1].unit"),
        (metric(at=NOW, metadata={"note": "x\x00"}), "metrics[1].metadata"),
        (metric(at=NOW, metadata={"k\x00": "x"}), "metrics[1].metadata"),
        (metric(at=NOW, metadata={"nested": {"list": ["ok", "\x00"]}}), "metrics[1].metadata"),
        (metric(at=NOW, labels={"k\x00": "v"}), "metrics[1].labels['k\\x00']"),
    ],
)
def test_nul_characters_are_refused_in_every_text_field(bad: pb.Metric, field: str) -> None:
    assert list(_refused(pb.WriteMetricsRequest(request_id="r", metrics=[metric(at=NOW), bad]))) == [field]


def test_a_metric_time_with_nanos_out_of_range_is_refused() -> None:
    bad = metric(at=NOW)
    bad.time.nanos = 1_000_000_000
    negative = metric(at=NOW)
    negative.time.nanos = -1
    request = pb.WriteMetricsRequest(request_id="r", metrics=[metric(at=NOW), bad, negative])
    assert list(_refused(request)) == ["metrics[1].time.nanos", "metrics[2].time.nanos"]


def test_nul_characters_are_refused_in_columnar_series_and_a_literal_backslash_u0000_is_kept() -> None:
    series = pb.MetricSeries(name="n", unit="\x00", labels={"k": "\x00"})
    columns = pb.MetricColumns(series=[series], series_indexes=[0], times_unix_nanos=[0], values=[1.0])
    assert {"columns.series[0].unit", "columns.series[0].labels['k']"} <= set(
        _refused(pb.WriteMetricsRequest(request_id="c", columns=columns))
    )
    literal = metric(at=NOW, metadata={"path": "C:\\u0000"})
    parsed = BatchParser(MetricsSettings()).parse(received(pb.WriteMetricsRequest(request_id="r", metrics=[literal])))
    assert parsed.records[0][3] == '{"path":"C:\\\\u0000"}'


async def test_nul_characters_over_grpc_are_invalid_argument_and_nothing_is_written(migrated_db: str) -> None:
    metrics = [metric(float(i)) for i in range(5)]
    metrics[3].labels["k"] = "v\x00"
    metrics[4].metadata.update({"note": "\x00"})
    async with metrics_server(migrated_db) as running:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="nul", metrics=metrics))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(caught.value)) == {"metrics[3].labels['k']", "metrics[4].metadata"}
    assert await count_rows(migrated_db) == 0


def _query(start: datetime | None = None, end: datetime | None = None, **fields: object) -> pb.QueryMetricsRequest:
    request = pb.QueryMetricsRequest(name="llm.latency_ms", **fields)  # type: ignore[arg-type]
    if start is not None:
        request.start_time.FromDatetime(start)
    if end is not None:
        request.end_time.FromDatetime(end)
    return request


FIRST, LAST = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


async def test_query_ranges_are_checked_and_the_widest_allowed_range_works(migrated_db: str) -> None:
    huge = pb.QueryMetricsRequest(name="llm.latency_ms")
    huge.start_time.seconds = 2**62
    negative_nanos = _query(NOW, NOW + timedelta(hours=1))
    negative_nanos.end_time.nanos = -1
    cases = [
        (_query(FIRST, LAST), "start_time"),
        (_query(NOW, LAST), "end_time"),
        (huge, "start_time"),
        (negative_nanos, "end_time"),
        (_query(NOW, NOW - timedelta(seconds=1)), "end_time"),
        (_query(NOW, NOW + timedelta(days=1), bucket_width={"nanos": 1000}), "bucket_width"),
        (_query(NOW, NOW + timedelta(days=1), bucket_width={"seconds": -5}), "bucket_width"),
        (_query(NOW, NOW + timedelta(days=1), bucket_width={"seconds": 2**62}), "bucket_width"),
        (_query(NOW, NOW + timedelta(days=1), labels={"k": "\x00"}), "labels['k']"),
    ]
    async with metrics_server(migrated_db) as running:
        await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="q", metrics=[metric(4.0)]))
        for request, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await running.stub.QueryMetrics(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert field in violations(caught.value)
        widest = await running.stub.QueryMetrics(
            _query(FIRST + timedelta(seconds=1), LAST - timedelta(seconds=1), aggregates=[pb.AGGREGATE_SUM])
        )
    assert [(b.count, b.sum) for b in widest.buckets] == [(1, 4.0)]


async def test_list_rpcs_check_name_and_start_time(migrated_db: str) -> None:
    early = pb.ListAnomaliesRequest()
    early.start_time.FromDatetime(FIRST)
    async with metrics_server(migrated_db) as running:
        for call, field in [
            (running.stub.ListAnomalies(early), "start_time"),
            (running.stub.ListAnomalies(pb.ListAnomaliesRequest(name="a\x00")), "name"),
            (running.stub.ListBaselines(pb.ListBaselinesRequest(name="a\x00")), "name"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in violations(caught.value)
        later = pb.ListAnomaliesRequest()
        later.start_time.FromDatetime(FIRST + timedelta(seconds=1))
        assert list((await running.stub.ListAnomalies(later)).anomalies) == []


async def test_a_database_not_migrated_as_expected_gives_failed_precondition_with_the_sqlstate(
    migrated_db: str,
) -> None:
    conn = await asyncpg.connect(migrated_db)
    try:
        await conn.execute("ALTER TABLE metric_series RENAME COLUMN labels TO labels_old")
    finally:
        await conn.close()
    async with metrics_server(migrated_db) as running:
        for call in (
            running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="x", metrics=[metric()])),
            running.stub.QueryMetrics(_query()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            info = details(caught.value)["ErrorInfo"]
            assert info.reason == "DATABASE_SCHEMA_MISMATCH"  # type: ignore[attr-defined]
            assert info.metadata["sqlstate"] == "42703"  # type: ignore[attr-defined]


def test_an_oversized_message_is_not_parsed() -> None:
    raw = pb.WriteMetricsRequest(request_id="big", metrics=[metric()] * 10).SerializeToString()
    skipped = size_limited_parser(len(raw) - 1)(raw)
    assert (skipped.size, skipped.batch.request_id, len(skipped.batch.metrics)) == (len(raw), "", 0)
    assert size_limited_parser(len(raw))(raw).batch.request_id == "big"


async def test_an_oversized_batch_is_refused_by_its_size_while_every_write_slot_is_taken(migrated_db: str) -> None:
    admin = await asyncpg.connect(migrated_db)
    oversized = pb.WriteMetricsRequest(request_id="big", metrics=[metric(name="n" * 190)] * 10)
    try:
        # A long admission wait: without the size check first, the oversized call would wait, then be refused
        # as RESOURCE_EXHAUSTED rather than INVALID_ARGUMENT.
        async with metrics_server(
            migrated_db, max_in_flight_batches=1, admission_wait_s=30, max_batch_bytes=1_000
        ) as running:
            blocker = admin.transaction()
            await blocker.start()
            await admin.execute("LOCK TABLE metric_write_requests IN EXCLUSIVE MODE")
            first = asyncio.ensure_future(
                running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="first", metrics=[metric()]))
            )
            await wait_for_lock_waiters(admin, database_of(migrated_db), 1)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await running.stub.WriteMetrics(oversized, timeout=5)
            await blocker.rollback()
            assert (await first).written_count == 1
    finally:
        await admin.close()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)["ErrorInfo"].metadata["limit"] == "max_batch_bytes"  # type: ignore[attr-defined]


async def test_a_request_id_recorded_before_digests_existed_is_compared_by_count(migrated_db: str) -> None:
    conn = await asyncpg.connect(migrated_db)
    try:
        await conn.execute("INSERT INTO metric_write_requests (request_id, written_count) VALUES ('old', 2)")
    finally:
        await conn.close()
    async with metrics_server(migrated_db) as running:
        again = await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="old", metrics=[metric()] * 2))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="old", metrics=[metric()]))
    assert (again.written_count, again.duplicate) == (2, True)
    assert details(caught.value)["ErrorInfo"].reason == "REQUEST_ID_REUSED"  # type: ignore[attr-defined]
    assert await count_rows(migrated_db) == 0


OUT_OF_RANGE_SECONDS = [253_402_300_800, -62_135_596_801, 2**63 - 1, -(2**63)]  # year 10000, year 0, int64 ends


def _at_seconds(seconds: int) -> pb.Metric:
    bad = metric(at=NOW)
    bad.time.seconds = seconds
    return bad


async def _write_both_ways(running: object, request: pb.WriteMetricsRequest) -> list[grpc.aio.AioRpcError]:
    """The same batch through WriteMetrics and StreamMetrics; both must fail."""
    stub = running.stub  # type: ignore[attr-defined]
    failures = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.WriteMetrics(request)
    failures.append(caught.value)
    streamed = pb.StreamMetricsRequest(request_id=request.request_id, metrics=request.metrics, columns=request.columns)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamMetrics(iter([streamed])):
            pass
    failures.append(caught.value)
    return failures


async def test_times_outside_years_1_to_9999_are_invalid_argument_naming_the_field(migrated_db: str) -> None:
    nanos = [2**63 - 1, -(2**63)]  # int64 nanoseconds reach only years 1677-2262: the ends are the extremes
    columns = pb.MetricColumns(
        series=[pb.MetricSeries(name="n")], series_indexes=[0] * 2, times_unix_nanos=nanos, values=[1.0] * 2
    )
    async with metrics_server(migrated_db) as running:
        for seconds in OUT_OF_RANGE_SECONDS:
            request = pb.WriteMetricsRequest(request_id="t", metrics=[metric(at=NOW), _at_seconds(seconds)])
            for failure in await _write_both_ways(running, request):
                assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT, (seconds, failure.details())
                assert list(violations(failure)) == ["metrics[1].time"]
        for failure in await _write_both_ways(running, pb.WriteMetricsRequest(request_id="c", columns=columns)):
            assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.details()
            assert list(violations(failure)) == ["columns.times_unix_nanos[0]", "columns.times_unix_nanos[1]"]
    assert await count_rows(migrated_db) == 0


async def test_values_too_large_to_aggregate_are_refused_in_both_forms(migrated_db: str) -> None:
    huge = [1e200, -1e200, 1.0000001e100]
    per_metric = pb.WriteMetricsRequest(request_id="v", metrics=[metric(v, at=NOW) for v in [1e100, *huge]])
    stamp = int(NOW.timestamp()) * 1_000_000_000
    columns = pb.MetricColumns(
        series=[pb.MetricSeries(name="n")], series_indexes=[0] * 4, times_unix_nanos=[stamp] * 4, values=[-1e100, *huge]
    )
    async with metrics_server(migrated_db) as running:
        for failure in await _write_both_ways(running, per_metric):
            assert failure.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert list(violations(failure)) == ["metrics[1].value", "metrics[2].value", "metrics[3].value"]
            assert "at most 1e+100" in violations(failure)["metrics[1].value"]
        for failure in await _write_both_ways(running, pb.WriteMetricsRequest(request_id="c", columns=columns)):
            assert list(violations(failure)) == ["columns.values[1]", "columns.values[2]", "columns.values[3]"]
    assert await count_rows(migrated_db) == 0


async def test_one_series_holding_a_huge_value_does_not_stop_baselines_of_the_others(migrated_db: str) -> None:
    """A value stored before writes were bounded (put here with SQL) must not fail the housekeeping run."""
    now = datetime.now(UTC)
    metrics = [
        metric(100.0 + i % 7, at=now - timedelta(seconds=i + 1), labels={"provider": p})
        for p in ("openai", "gemini")
        for i in range(40)
    ]
    settings = MetricsSettings(baseline_min_samples=30)
    async with metrics_server(migrated_db) as running:
        await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="b", metrics=metrics))
        conn = await asyncpg.connect(migrated_db)
        try:
            await conn.execute(
                "INSERT INTO system_performance_metrics (time, series_id, value) "
                "SELECT $1, series_id, v FROM metric_series, unnest($2::float8[]) AS v "
                "WHERE labels->>'provider' = 'gemini'",
                now - timedelta(seconds=1),
                [1e200, 1e200, -1e200, 1.7e308],
            )
        finally:
            await conn.close()
        run = await Housekeeping(settings).run_once(running.app.require_pool(), now=now)
        baselines = (await running.stub.ListBaselines(pb.ListBaselinesRequest())).baselines
    assert run.baselines.baselines == 2
    assert sorted((b.labels["provider"], b.sample_count) for b in baselines) == [("gemini", 40), ("openai", 40)]
    assert all(100.0 <= b.mean <= 107.0 for b in baselines)


def test_the_value_bound_is_a_setting_and_cannot_be_set_where_squares_overflow() -> None:
    request = pb.WriteMetricsRequest(request_id="r", metrics=[metric(10.0, at=NOW), metric(-10.5, at=NOW)])
    with pytest.raises(InvalidRequest) as caught:
        BatchParser(MetricsSettings(max_abs_value=10.0)).parse(received(request), now=NOW)
    assert [v.field for v in caught.value.field_violations] == ["metrics[1].value"]
    with pytest.raises(ValidationError, match="max_abs_value"):
        MetricsSettings(max_abs_value=1e200)
