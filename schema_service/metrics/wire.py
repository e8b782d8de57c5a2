"""Write batches read straight from their wire bytes, in a shape that is cheap to walk in Python.

The contract's `Metric.labels` is a map; on the wire a map is a repeated message of (key, value)
entries. Reading the batch with a private descriptor that declares those entries as `repeated bytes`
(and `metadata` as bytes) turns the per-metric label lookup into one C-level tuple of bytes,
instead of a walk through the map container that costs about 1 us per metric (see bench/metrics_ingest.py).
Label entries and metadata are decoded only for a series not seen before, and for metadata present.
The private descriptor is built from the contract's own (every field, number and type as compiled from
the .proto), with only those two fields retyped: the wire format is the contract's, any client, grpcurl
included, sends the same bytes, and a field added to the contract is read here without a change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from schemaservice.v1 import metrics_service_pb2 as pb

_PACKAGE = "schema_service.metrics.wire"
_F = descriptor_pb2.FieldDescriptorProto
# The contract's own fields, retyped: the labels map's entries and the metadata Struct stay raw bytes.
_RAW = {"labels", "metadata"}


def _copy(descriptor: Any, name: str) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(message)
    message.name = name
    return message


def _file() -> descriptor_pb2.FileDescriptorProto:
    """The contract's Metric and WriteMetricsRequest, copied from its descriptor, with raw labels and metadata."""
    write, stream = pb.WriteMetricsRequest.DESCRIPTOR, pb.StreamMetricsRequest.DESCRIPTOR
    if _copy(write, "Batch") != _copy(stream, "Batch"):
        raise RuntimeError("WriteMetricsRequest and StreamMetricsRequest differ: wire.py reads both as one Batch")
    metric = _copy(pb.Metric.DESCRIPTOR, "Metric")
    entry = _copy(pb.Metric.DESCRIPTOR.fields_by_name["labels"].message_type, "LabelEntry")
    entry.ClearField("options")  # a plain message with the map entry's fields (key = 1, value = 2)
    del metric.nested_type[:]
    for field in metric.field:
        if field.name in _RAW:
            field.type = _F.TYPE_BYTES
            field.ClearField("type_name")
    batch = _copy(write, "Batch")
    batch.field[[f.name for f in batch.field].index("metrics")].type_name = f".{_PACKAGE}.Metric"
    return descriptor_pb2.FileDescriptorProto(
        name="schema_service/metrics/wire.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[timestamp_pb2.DESCRIPTOR.name, pb.DESCRIPTOR.name],
        message_type=[metric, batch, entry],
    )


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
    def HasField(self, field_name: str) -> bool: ...


class WireBatch(Protocol):
    """WriteMetricsRequest / StreamMetricsRequest read with WireMetric metrics."""

    @property
    def request_id(self) -> str: ...
    @property
    def metrics(self) -> Sequence[WireMetric]: ...
    @property
    def columns(self) -> pb.MetricColumns: ...
    def HasField(self, field_name: str) -> bool: ...


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
