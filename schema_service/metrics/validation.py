"""Validation of a write batch, turned into COPY records in the same pass.

A batch with any bad metric is refused whole: every bad field is named with its index
(`metrics[17].value`), up to MAX_LISTED_VIOLATIONS (servicekit.errors) so the error fits in gRPC trailers;
the rest are counted.
Name, unit and labels are checked once per distinct series and remembered across batches, per writing
caller (the caller is part of a series' identity, see metrics/series.py).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError

from schema_service.config import MetricsSettings
from schema_service.database import PG_EPOCH_US
from schema_service.errors import BatchTooLarge, InvalidRequest
from schema_service.metrics.digest import Record, batch_digest
from schema_service.metrics.series import Series, make_series
from schema_service.metrics.wire import Received, WireBatch, WireMetric, label_items
from schemaservice.v1 import metrics_service_pb2 as pb
from servicekit.errors import MAX_LISTED_VIOLATIONS, FieldViolation
from servicekit.ids import ID_RULE, valid_id

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:/-]{0,199}")
LABEL_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_UNIT_CHARS = 32
MAX_LABELS = 16
MAX_LABEL_VALUE_CHARS = 256
MAX_METADATA_BYTES = 4096
MAX_METADATA_FIELDS = 32
MAX_CACHED_SERIES = 100_000
MAX_CACHED_CALLERS = 16  # writers of metrics are few (the gateway, a service or two); past that, start over
DAY_US = 86_400 * 1_000_000
EPOCH_DAY = date(1970, 1, 1)
# PostgreSQL text and jsonb cannot hold U+0000: refused here, or the database would refuse the whole batch.
NUL = "\x00"
NO_NUL = "must not contain NUL (U+0000) characters"

SeriesKey = tuple[str, str, tuple[object, ...]]
Row = tuple[tuple[int], int, float, str | None]


@dataclass
class Batch:
    """A valid batch: COPY rows (time, series_id, value, metadata), the series they use, and the digest of
    its content (see metrics/digest.py).

    `rows` hold each time as asyncpg's tuple form, (microseconds since 2000-01-01 UTC,), for a connection that
    exchanges times so (database.micro_times_codec); `records` are the same rows with datetimes, for any other.
    `micros` are the times as integer microseconds since the Unix epoch, in row order.
    """

    request_id: str
    rows: list[Row]
    micros: list[int]
    series: dict[int, Series]
    digest: bytes
    caller: str = ""

    @property
    def records(self) -> list[Record]:
        # A float of seconds names each microsecond exactly below 2**53 us (year 2255; error under 0.2 us),
        # so fromtimestamp's rounding gives the microsecond sent, 1.5x faster than epoch + timedelta.
        from_ts = datetime.fromtimestamp
        rows = zip(self.micros, self.rows, strict=True)
        return [(from_ts(us / 1e6, UTC), series_id, value, metadata) for us, (_, series_id, value, metadata) in rows]

    def days(self) -> set[date]:
        """UTC days the batch has values on (the batch is never empty)."""
        first, last = min(self.micros) // DAY_US, max(self.micros) // DAY_US
        numbers = range(first, last + 1) if last - first <= 1 else {us // DAY_US for us in self.micros}
        return {EPOCH_DAY + timedelta(days=n) for n in numbers}


@dataclass
class _Violations:
    listed: list[FieldViolation] = field(default_factory=list)
    total: int = 0

    def add(self, path: str, description: str) -> None:
        self.total += 1
        if len(self.listed) < MAX_LISTED_VIOLATIONS:
            self.listed.append(FieldViolation(path, description))


class BatchParser:
    """Checks batches against the limits of MetricsSettings; remembers series that passed."""

    def __init__(self, settings: MetricsSettings) -> None:
        self.settings = settings
        bound = settings.max_abs_value
        self.value_rule = f"must be a finite number, in absolute value at most {bound:g} (max_abs_value)"
        # Per writing caller, keyed by name, unit and labels as received (raw map entries, or pairs in the
        # columnar form). parse() never awaits, so it can point _series and _caller at the batch's caller.
        self._by_caller: dict[str, dict[SeriesKey, Series]] = {}
        self._series: dict[SeriesKey, Series] = {}
        self._caller = ""

    def parse(self, received: Received, *, caller: str = "", now: datetime | None = None) -> Batch:
        """The batch of `caller` (the authenticated writer) as records, or InvalidRequest / BatchTooLarge
        naming every bad field."""
        request = received.batch
        self._check_envelope(request, received.size)
        self._use_caller(caller)
        now = now or datetime.now(UTC)
        low = int((now - timedelta(days=self.settings.retention_days)).timestamp())
        high = int(now.timestamp() + self.settings.max_time_ahead_s)
        bad = _Violations()
        rows: list[Row] = []
        micros: list[int] = []
        used: dict[int, Series] = {}
        self._rows(request.metrics, (low, high), bad, (rows, micros), used)
        if request.HasField("columns"):
            self._columns(request.columns, (low, high), bad, (rows, micros), used)
        if bad.total:
            raise InvalidRequest(
                f"{bad.total} invalid field(s) in the batch",
                field_violations=bad.listed,
                omitted_violations=bad.total - len(bad.listed),
            )
        return Batch(request.request_id, rows, micros, used, batch_digest(micros, rows), caller)

    def _use_caller(self, caller: str) -> None:
        if caller not in self._by_caller and len(self._by_caller) >= MAX_CACHED_CALLERS:
            self._by_caller.clear()
        self._series = self._by_caller.setdefault(caller, {})
        self._caller = caller

    def _check_envelope(self, request: WireBatch, size: int) -> None:
        check_size(size, self.settings.max_batch_bytes)
        if not valid_id(request.request_id):
            raise InvalidRequest(
                "request_id is required" if not request.request_id else f"request_id: {ID_RULE}",
                field_violations=[FieldViolation("request_id", f"{ID_RULE}, unique per batch")],
            )
        count = len(request.metrics) + len(request.columns.values)
        limit = self.settings.max_batch_metrics
        if count == 0:
            raise InvalidRequest("empty batch", field_violations=[FieldViolation("metrics", "at least one metric")])
        if count > limit:
            raise BatchTooLarge(
                f"batch of {count} metrics exceeds the limit max_batch_metrics={limit}",
                metadata={"limit": "max_batch_metrics", "max": str(limit), "actual": str(count)},
                field_violations=[FieldViolation("metrics", f"at most max_batch_metrics={limit} per batch")],
            )

    def _rows(
        self,
        metrics: Sequence[WireMetric],
        window: tuple[int, int],
        bad: _Violations,
        out: tuple[list[Row], list[int]],
        used: dict[int, Series],
    ) -> None:
        low, high = window
        append, append_us = out[0].append, out[1].append
        cached, bound = self._series.get, self.settings.max_abs_value
        for i, m in enumerate(metrics):
            key = (m.name, m.unit, tuple(m.labels))
            series = cached(key) or self._new_series(key, _decoded_labels(m.labels), f"metrics[{i}]", bad)
            value = m.value
            # Also false for NaN; infinities are over the bound.
            if not -bound <= value <= bound:
                bad.add(f"metrics[{i}].value", self.value_rule)
            stamp = m.time
            seconds, nanos = stamp.seconds, stamp.nanos
            if not low <= seconds <= high:
                bad.add(f"metrics[{i}].time", self._time_rule() if m.HasField("time") else "is required")
            elif not 0 <= nanos < 1_000_000_000:
                bad.add(f"metrics[{i}].time.nanos", "must be 0-999,999,999")
            raw_metadata = m.metadata
            metadata = _metadata(raw_metadata, f"metrics[{i}].metadata", bad) if raw_metadata else None
            if series is not None and not bad.total:  # a bad batch is refused: no row is made
                used[series_id := series.series_id] = series
                micros = seconds * 1_000_000 + nanos // 1000
                append_us(micros)
                append(((micros - PG_EPOCH_US,), series_id, value, metadata))

    def _columns(
        self,
        columns: pb.MetricColumns,
        window: tuple[int, int],
        bad: _Violations,
        out: tuple[list[Row], list[int]],
        used: dict[int, Series],
    ) -> None:
        values, indexes, times = list(columns.values), list(columns.series_indexes), list(columns.times_unix_nanos)
        series = [
            self._series.get(k) or self._new_series(k, list(s.labels.items()), f"columns.series[{j}]", bad)
            for j, s in enumerate(columns.series)
            for k in [(s.name, s.unit, tuple(s.labels.items()))]
        ]
        parallel = (("series_indexes", indexes), ("times_unix_nanos", times))
        ragged = [(name, column) for name, column in parallel if len(column) != len(values)]
        for name, column in ragged:
            bad.add(f"columns.{name}", f"must have one entry per value ({len(values)}), got {len(column)}")
        if ragged:
            return
        low, high = window[0] * 1_000_000_000, (window[1] + 1) * 1_000_000_000
        # Both at C speed: isfinite catches NaN, which max() may pass over.
        bound = self.settings.max_abs_value
        if values and not (all(map(math.isfinite, values)) and max(map(abs, values)) <= bound):
            for i in (i for i, v in enumerate(values) if not -bound <= v <= bound):
                bad.add(f"columns.values[{i}]", self.value_rule)
        if values and (min(times) < low or max(times) >= high):
            for i in (i for i, t in enumerate(times) if not low <= t < high):
                bad.add(f"columns.times_unix_nanos[{i}]", self._time_rule())
        if values and max(indexes) >= len(series):
            for i in (i for i, j in enumerate(indexes) if j >= len(series)):
                bad.add(f"columns.series_indexes[{i}]", f"must be below the number of series ({len(series)})")
        if bad.total:
            return
        ids = [s.series_id if s is not None else 0 for s in series]
        used.update((s.series_id, s) for s in series if s is not None)
        micros = [t // 1000 for t in times]
        stamps = [(us - PG_EPOCH_US,) for us in micros]
        out[0].extend(zip(stamps, [ids[j] for j in indexes], values, [None] * len(values), strict=True))
        out[1].extend(micros)

    def _time_rule(self) -> str:
        ahead, days = self.settings.max_time_ahead_s, self.settings.retention_days
        return f"must be within the last {days} days (retention_days) and at most {ahead:g} s ahead"

    def _new_series(
        self, key: SeriesKey, labels: list[tuple[str, str]] | None, path: str, bad: _Violations
    ) -> Series | None:
        """Check a series seen for the first time (labels None: undecodable); remember it when valid."""
        name, unit = key[0], key[1]
        before = bad.total
        if not NAME_RE.fullmatch(name):
            bad.add(f"{path}.name", "1-200 characters of [A-Za-z0-9_.:/-], starting with a letter")
        if len(unit) > MAX_UNIT_CHARS:
            bad.add(f"{path}.unit", f"at most {MAX_UNIT_CHARS} characters")
        elif NUL in unit:
            bad.add(f"{path}.unit", NO_NUL)
        if labels is None:
            bad.add(f"{path}.labels", "not a valid map<string, string> (strings must be UTF-8)")
        else:
            _check_labels(labels, f"{path}.labels", bad)
        if bad.total > before or labels is None:
            return None
        if len(self._series) >= MAX_CACHED_SERIES:
            self._series.clear()
        series = self._series[key] = make_series(name, unit, labels, self._caller)
        return series


def _decoded_labels(entries: Sequence[bytes]) -> list[tuple[str, str]] | None:
    try:
        return label_items(entries)
    except DecodeError:
        return None


def _check_labels(items: list[tuple[str, str]], path: str, bad: _Violations) -> None:
    if len(items) > MAX_LABELS:
        bad.add(path, f"at most {MAX_LABELS} labels")
    for key, value in items:
        if not LABEL_KEY_RE.fullmatch(key):
            bad.add(f"{path}[{key[:64]!r}]", "label keys are 1-64 characters of [A-Za-z0-9_.-], not starting a digit")
        if len(value) > MAX_LABEL_VALUE_CHARS:
            bad.add(f"{path}[{key[:64]!r}]", f"label values are at most {MAX_LABEL_VALUE_CHARS} characters")
        elif NUL in value:
            bad.add(f"{path}[{key[:64]!r}]", f"label values {NO_NUL}")


def _metadata(raw: bytes, path: str, bad: _Violations) -> str | None:
    """Serialized Struct metadata as JSON text (None when empty), or a violation."""
    if len(raw) > MAX_METADATA_BYTES:
        bad.add(path, f"at most {MAX_METADATA_BYTES} bytes")
        return None
    try:
        metadata = struct_pb2.Struct.FromString(raw)
        if len(metadata.fields) > MAX_METADATA_FIELDS:
            bad.add(path, f"at most {MAX_METADATA_FIELDS} top-level fields")
            return None
        # Sorted keys: the digest of a re-encoded retry must not depend on the order of map entries.
        text = json.dumps(json_format.MessageToDict(metadata), allow_nan=False, separators=(",", ":"), sort_keys=True)
        # json.dumps escapes U+0000 as \u0000; look closer only then (a literal backslash-u0000 is not NUL).
        if "\\u0000" in text and _has_nul(json.loads(text)):
            bad.add(path, f"keys and strings {NO_NUL}")
            return None
        return text
    except DecodeError:
        bad.add(path, "not a valid google.protobuf.Struct")
    except ValueError:
        bad.add(path, "numbers must be finite")
    return None


def check_size(size: int, max_bytes: int) -> None:
    """BatchTooLarge naming max_batch_bytes: checked before the batch waits for a slot or is looked at."""
    if size > max_bytes:
        raise BatchTooLarge(
            f"batch of {size} bytes exceeds the limit max_batch_bytes={max_bytes}",
            metadata={"limit": "max_batch_bytes", "max": str(max_bytes), "actual": str(size)},
            field_violations=[FieldViolation("metrics", f"at most max_batch_bytes={max_bytes} per batch")],
        )


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(NUL in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False
