"""metrics/wire.py reads the contract's bytes: its private descriptor is the contract's, two fields retyped."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from schema_service.metrics import wire
from schemaservice.v1 import metrics_service_pb2 as pb

pytestmark = pytest.mark.timeout(10)


def full_request(cls: type[pb.WriteMetricsRequest] | type[pb.StreamMetricsRequest]) -> pb.WriteMetricsRequest:
    metadata = struct_pb2.Struct()
    metadata.update({"trace": "t-1", "n": 2})
    metric = pb.Metric(
        name="llm.latency",
        value=1.5,
        unit="s",
        time=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5),
        labels={"provider": "openai", "model": "gpt"},
        metadata=metadata,
    )
    columns = pb.MetricColumns(series_indexes=[0, 0], times_unix_nanos=[1, 2])
    return cls(request_id="req-1", metrics=[metric], columns=columns)  # type: ignore[return-value]


@pytest.mark.parametrize("cls", [pb.WriteMetricsRequest, pb.StreamMetricsRequest])
def test_every_field_of_the_contract_reads_back(cls: type[pb.WriteMetricsRequest]) -> None:
    sent = full_request(cls)
    got = wire.received(sent)
    assert got.size == sent.ByteSize()
    assert (got.batch.request_id, got.batch.columns) == (sent.request_id, sent.columns)
    (metric,) = got.batch.metrics
    original = sent.metrics[0]
    assert (metric.name, metric.value, metric.unit, metric.time) == (
        original.name,
        original.value,
        original.unit,
        original.time,
    )
    assert dict(wire.label_items(metric.labels)) == dict(original.labels)
    assert struct_pb2.Struct.FromString(metric.metadata) == original.metadata


def test_the_private_descriptor_has_the_contracts_fields() -> None:
    batch = type(wire.received(pb.WriteMetricsRequest()).batch).DESCRIPTOR
    metric = batch.fields_by_name["metrics"].message_type
    for ours, contract in ((batch, pb.WriteMetricsRequest.DESCRIPTOR), (metric, pb.Metric.DESCRIPTOR)):
        assert [(f.name, f.number, f.is_repeated) for f in ours.fields] == [
            (f.name, f.number, f.is_repeated) for f in contract.fields
        ]
    assert [f.name for f in metric.fields if f.type == f.TYPE_BYTES] == ["labels", "metadata"]
