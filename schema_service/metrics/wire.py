"""Write batches read straight from their wire bytes, in a shape that is cheap to walk in Python.

The contract's `Metric.labels` is a map; on the wire a map is a repeated message of (key, value)
entries. Reading the batch with a private descriptor that declares those entries as `repeated bytes`
(and `metadata` as bytes) turns the per-metric label lookup into one C-level tuple of bytes,
instead of a walk through the map container that costs about 1 us per metric (see bench/metrics_ingest.py).
Label entries and metadata are decoded only for a series not seen before, and for metadata present.
The wire format is the contract's: any client, grpcurl included, sends the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from schemaservice.v1 import metrics_service_pb2 as pb

_PACKAGE = "schema_service.metrics.wire"
_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="schema_service/metrics/wire.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[timestamp_pb2.DESCRIPTOR.name, pb.DESCRIPTOR.name],
    )
    metric = file.message_type.add(name="Metric")  # field numbers of schemaservice.v1.Metric
    metric.field.add(name="name", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    metric.field.add(name="value", number=2, type=_F.TYPE_DOUBLE, label=_F.LABEL_OPTIONAL)
    metric.field.add(name="unit", number=3, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    metric.field.add(
        name="time", number=4, type=_F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp", label=_F.LABEL_OPTIONAL
    )
    metric.field.add(name="labels", number=5, type=_F.TYPE_BYTES, label=_F.LABEL_REPEATED)
    metric.field.add(name="metadata", number=6, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    batch = file.message_type.add(name="Batch")  # field numbers of Write/StreamMetricsRequest
    batch.field.add(name="request_id", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    batch.field.add(
        name="metrics", number=2, type=_F.TYPE_MESSAGE, type_name=f".{_PACKAGE}.Metric", label=_F.LABEL_REPEATED
    )
    batch.field.add(
        name="columns",
        number=3,
        type=_F.TYPE_MESSAGE,
        type_name=".schemaservice.v1.MetricColumns",
        label=_F.LABEL_OPTIONAL,
    )
    entry = file.message_type.add(name="LabelEntry")  # a map<string, string> entry
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    return file


_pool = descriptor_pool.Default()
_pool.Add(_file())
_Batch = message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{_PACKAGE}.Batch"))
_LabelEntry = message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{_PACKAGE}.LabelEntry"))


class WireMetric(Protocol):
    """schemaservice.v1.Metric with labels as raw map entries and metadata as raw Struct bytes."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def unit(self) -> str: ...
    @property
    def time(self) -> timestamp_pb2.Timestamp: ...
    @property
    def labels(self) -> Sequence[bytes]: ...
    @property
    def metadata(self) -> bytes: ...
    def HasField(self, field_name: str) -> bool: ...  # noqa: N802 - protobuf's name


class WireBatch(Protocol):
    """WriteMetricsRequest / StreamMetricsRequest read with WireMetric metrics."""

    @property
    def request_id(self) -> str: ...
    @property
    def metrics(self) -> Sequence[WireMetric]: ...
    @property
    def columns(self) -> pb.MetricColumns: ...
    def HasField(self, field_name: str) -> bool: ...  # noqa: N802 - protobuf's name


@dataclass(frozen=True, slots=True)
class Received:
    """A batch as received, with its size on the wire."""

    batch: WireBatch
    size: int


def parse_batch(raw: bytes) -> Received:
    """The request deserializer of WriteMetrics and StreamMetrics."""
    return Received(cast(WireBatch, _Batch.FromString(raw)), len(raw))


def size_limited_parser(max_bytes: int) -> Callable[[bytes], Received]:
    """parse_batch, except that a message over `max_bytes` is not parsed at all: it is refused by its size
    (validation.check_size, before it waits for a write slot), so it never costs the memory of its parsed form."""

    def parse(raw: bytes) -> Received:
        if len(raw) > max_bytes:
            return Received(cast(WireBatch, _Batch()), len(raw))
        return parse_batch(raw)

    return parse


def received(request: pb.WriteMetricsRequest | pb.StreamMetricsRequest) -> Received:
    """The same for a caller holding a parsed request (tests, in-process callers)."""
    return parse_batch(request.SerializeToString())


def label_items(entries: Sequence[bytes]) -> list[tuple[str, str]]:
    """Decode raw map entries; a repeated key keeps its last value, as for a map. DecodeError on bad bytes."""
    decoded: dict[str, str] = {}
    for raw in entries:
        entry = _LabelEntry.FromString(raw)
        decoded[entry.key] = entry.value  # type: ignore[attr-defined]
    return list(decoded.items())
