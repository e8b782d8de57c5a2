"""Validation of metrics batches: every field, the batch limits, and nothing written when refused."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from schema_service.config import MetricsSettings, Settings
from schema_service.errors import BatchTooLarge, ConfigError, InvalidRequest
from schema_service.metrics.validation import MAX_LISTED_VIOLATIONS, BatchParser
from schema_service.metrics.wire import parse_batch, received
from schemaservice.v1 import metrics_service_pb2 as pb
from servicekit.settings import build
from tests.schema.metrics_helpers import count_rows, details, metric, metrics_server, violations

# The real clock: `metric()` stamps its rows with it unless told otherwise, and the parser checks against NOW.
NOW = datetime.now(UTC)


def refused(request: pb.WriteMetricsRequest, **limits: int) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        BatchParser(MetricsSettings(**limits)).parse(received(request), now=NOW)
    return {v.field: v.description for v in caught.value.field_violations}


def batch(*metrics: pb.Metric) -> pb.WriteMetricsRequest:
    return pb.WriteMetricsRequest(request_id="r-1", metrics=metrics)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (metric(name=""), "metrics[1].name"),
        (metric(name="x" * 201), "metrics[1].name"),
        (metric(name="9starts_with_digit"), "metrics[1].name"),
        (metric(name="has space"), "metrics[1].name"),
        (metric(value=math.nan), "metrics[1].value"),
        (metric(value=math.inf), "metrics[1].value"),
        (metric(value=-math.inf), "metrics[1].value"),
        (metric(unit="u" * 33), "metrics[1].unit"),
        (metric(labels={f"k{i}": "v" for i in range(17)}), "metrics[1].labels"),
        (metric(labels={"bad key": "v"}), "metrics[1].labels['bad key']"),
        (metric(labels={"k": "v" * 257}), "metrics[1].labels['k']"),
        (metric(metadata={"blob": "x" * 5000}), "metrics[1].metadata"),
        (metric(metadata={f"k{i}": i for i in range(33)}), "metrics[1].metadata"),
        (metric(metadata={"x": math.nan}), "metrics[1].metadata"),
        (metric(at=NOW + timedelta(days=400)), "metrics[1].time"),
        (metric(at=NOW - timedelta(days=31)), "metrics[1].time"),
        (pb.Metric(name="no.time", value=1.0), "metrics[1].time"),
    ],
)
def test_each_bad_field_is_named_with_its_index(bad: pb.Metric, field: str) -> None:
    found = refused(batch(metric(at=NOW), bad, metric(at=NOW)))
    assert list(found) == [field]
    if field.endswith(".time") and bad.HasField("time"):
        assert "30 days" in found[field]


def test_a_valid_batch_becomes_records_with_series_stored_once() -> None:
    request = batch(*(metric(i, at=NOW, labels={"provider": p}) for i in range(6) for p in ("a", "b")))
    parsed = BatchParser(MetricsSettings()).parse(received(request), now=NOW)
    assert len(parsed.records) == 12 and len(parsed.series) == 2
    assert [r[2] for r in parsed.records] == [float(i) for i in range(6) for _ in "ab"]
    assert parsed.records[0][0] == NOW and all(r[3] is None for r in parsed.records)


def test_times_keep_every_microsecond() -> None:
    m = metric(at=NOW)
    m.time.nanos = 123_456_789
    columns = pb.MetricColumns(
        series=[pb.MetricSeries(name="c")],
        series_indexes=[0, 0],
        times_unix_nanos=[m.time.seconds * 10**9 + 999_999_999, m.time.seconds * 10**9 + 1_999],
        values=[1.0, 2.0],
    )
    parsed = BatchParser(MetricsSettings()).parse(
        received(pb.WriteMetricsRequest(request_id="t", metrics=[m], columns=columns)), now=NOW
    )
    base = NOW.replace(microsecond=0)
    assert [r[0] for r in parsed.records] == [base + timedelta(microseconds=us) for us in (123_456, 999_999, 1)]
    generator = random.Random(4)
    nanos = [int(NOW.timestamp()) * 10**9 - generator.randrange(25 * 86_400 * 10**9) for _ in range(5_000)]
    columns = pb.MetricColumns(
        series=[pb.MetricSeries(name="c")],
        series_indexes=[0] * len(nanos),
        times_unix_nanos=nanos,
        values=[0.0] * len(nanos),
    )
    parsed = BatchParser(MetricsSettings()).parse(
        received(pb.WriteMetricsRequest(request_id="r", columns=columns)), now=NOW
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert [r[0] for r in parsed.records] == [epoch + timedelta(microseconds=n // 1000) for n in nanos]


def test_label_order_does_not_change_the_series() -> None:
    parser = BatchParser(MetricsSettings())
    one = parser.parse(received(batch(metric(at=NOW, labels={"a": "1", "b": "2"}))), now=NOW)
    other = parser.parse(received(batch(metric(at=NOW, labels={"b": "2", "a": "1"}))), now=NOW)
    assert one.series.keys() == other.series.keys()


def raw_batch_with_label_entries(*entries: bytes) -> bytes:
    """A WriteMetricsRequest on the wire whose one metric carries these raw map entries as labels."""
    m = pb.Metric(name="n", value=1.0)
    m.time.FromDatetime(NOW)
    wire_metric = m.SerializeToString() + b"".join(b"\x2a" + bytes([len(e)]) + e for e in entries)
    return b"\x0a\x01r\x12" + bytes([len(wire_metric)]) + wire_metric


def test_label_entries_and_metadata_are_decoded_from_the_wire() -> None:
    m = metric(at=NOW, labels={"z": "1", "a": "2"}, metadata={"attempt": 2, "tags": ["x"]})
    parsed = BatchParser(MetricsSettings()).parse(received(batch(m)), now=NOW)
    (series,) = parsed.series.values()
    assert series.labels_json == '{"a":"2","z":"1"}'
    assert json.loads(parsed.records[0][3] or "") == {"attempt": 2, "tags": ["x"]}
    # A key repeated on the wire keeps its last value, as protobuf's own map parsing does.
    raw = raw_batch_with_label_entries(b"\n\x01k\x12\x011", b"\n\x01k\x12\x012")
    assert pb.WriteMetricsRequest.FromString(raw).metrics[0].labels == {"k": "2"}
    (series,) = BatchParser(MetricsSettings()).parse(parse_batch(raw), now=NOW).series.values()
    assert series.labels_json == '{"k":"2"}'
    with pytest.raises(InvalidRequest) as caught:  # a label value that is not UTF-8
        BatchParser(MetricsSettings()).parse(parse_batch(raw_batch_with_label_entries(b"\n\x01k\x12\x02\xff\xfe")))
    assert [v.field for v in caught.value.field_violations] == ["metrics[0].labels"]


def test_request_id_is_required() -> None:
    assert refused(pb.WriteMetricsRequest(metrics=[metric(at=NOW)])) == {
        "request_id": "1-128 visible ASCII characters (! to ~, no spaces), unique per batch"
    }


def test_columnar_fields_are_checked() -> None:
    columns = pb.MetricColumns(
        series=[pb.MetricSeries(name="ok", unit="ms"), pb.MetricSeries(name="", unit="ms")],
        series_indexes=[0, 0, 5],
        times_unix_nanos=[int(NOW.timestamp() * 1e9)] * 2 + [0],
        values=[1.0, math.nan, 2.0],
    )
    found = refused(pb.WriteMetricsRequest(request_id="c", columns=columns))
    assert set(found) == {
        "columns.series[1].name",
        "columns.values[1]",
        "columns.times_unix_nanos[2]",
        "columns.series_indexes[2]",
    }
    columns.values.append(3.0)
    assert "columns.series_indexes" in refused(pb.WriteMetricsRequest(request_id="c", columns=columns))


def test_violations_listed_are_capped_so_the_error_fits_in_trailers() -> None:
    request = batch(*(metric(math.nan, at=NOW) for _ in range(500)))
    with pytest.raises(InvalidRequest) as caught:
        BatchParser(MetricsSettings()).parse(received(request), now=NOW)
    assert len(caught.value.field_violations) == MAX_LISTED_VIOLATIONS
    assert caught.value.message.startswith("500 invalid field(s)")


def test_count_and_byte_limits_name_the_limit() -> None:
    parser = BatchParser(MetricsSettings(max_batch_metrics=3, max_batch_bytes=400))
    with pytest.raises(BatchTooLarge, match="max_batch_metrics=3"):
        parser.parse(received(batch(*(metric(at=NOW) for _ in range(4)))), now=NOW)
    with pytest.raises(BatchTooLarge, match="max_batch_bytes=400"):
        parser.parse(received(batch(*(metric(at=NOW, name="n" * 150) for _ in range(3)))), now=NOW)


def test_settings_keep_the_byte_limit_below_the_transport_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="'metrics.max_batch_bytes' .* must be below the transport limit"):
        build(Settings, max_message_bytes=64 * 1024 * 1024, metrics=MetricsSettings(max_batch_bytes=64 * 1024 * 1024))
    monkeypatch.setenv("SCHEMA_SERVICE_METRICS_MAX_BATCH_METRICS", "500")
    monkeypatch.setenv("SCHEMA_SERVICE_METRICS_ANOMALY_Z_SCORE", "3.5")
    assert build(MetricsSettings) == MetricsSettings(max_batch_metrics=500, anomaly_z_score=3.5)
    monkeypatch.setenv("SCHEMA_SERVICE_METRICS_RETENTION_DAYS", "soon")
    with pytest.raises(ConfigError, match="retention_days' .*SCHEMA_SERVICE_METRICS_RETENTION_DAYS.* an integer"):
        build(MetricsSettings)


async def test_a_bad_batch_is_refused_whole_over_grpc(migrated_db: str) -> None:
    metrics = [metric(float(i)) for i in range(20)]
    metrics[3].value = math.nan
    metrics[17].name = ""
    async with metrics_server(migrated_db) as running:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.WriteMetrics(pb.WriteMetricsRequest(request_id="bad", metrics=metrics))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(caught.value)) == {"metrics[3].value", "metrics[17].name"}
    assert details(caught.value)["ErrorInfo"].reason == "INVALID_ARGUMENT"  # type: ignore[attr-defined]
    assert await count_rows(migrated_db) == 0
    assert await count_rows(migrated_db, "metric_write_requests") == 0


async def test_oversized_batches_get_invalid_argument_naming_the_limit(migrated_db: str) -> None:
    async with metrics_server(migrated_db, max_batch_metrics=10, max_batch_bytes=2_000) as running:
        for request, limit in [
            (pb.WriteMetricsRequest(request_id="many", metrics=[metric() for _ in range(11)]), "max_batch_metrics"),
            (pb.WriteMetricsRequest(request_id="big", metrics=[metric(name="n" * 190)] * 10), "max_batch_bytes"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await running.stub.WriteMetrics(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            info = details(caught.value)["ErrorInfo"]
            assert info.reason == "BATCH_TOO_LARGE" and info.metadata["limit"] == limit  # type: ignore[attr-defined]
            assert limit in (caught.value.details() or "")
    assert await count_rows(migrated_db) == 0
