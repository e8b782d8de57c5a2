"""Validation of a RecordUsage batch, turned into ledger rows in the same pass.

A batch with any bad record is refused whole: every bad field is named with its index
(`records[3].cost_usd`), up to MAX_LISTED_VIOLATIONS (servicekit.errors) so the error fits in gRPC trailers;
the rest are counted. Cost is a decimal string parsed into a `Decimal` (never a float), at most
COST_DIGITS digits before the point and COST_SCALE after it, the shape of the column (numeric(24, 12)).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from schema_service.config import UsageSettings
from schema_service.errors import BatchTooLarge, InvalidRequest
from schemaservice.v1 import usage_service_pb2 as pb
from servicekit.errors import MAX_LISTED_VIOLATIONS, FieldViolation
from servicekit.ids import ID_RULE, valid_id

COST_SCALE = 12
COST_DIGITS = 12
MAX_TEXT_CHARS = 256
MAX_TOKENS = 10**12  # far above any context window; keeps sums far from bigint's end
MAX_DURATION_S = 86_400.0
OUTCOMES = {
    pb.USAGE_OUTCOME_SUCCEEDED: "succeeded",
    pb.USAGE_OUTCOME_FAILED: "failed",
    pb.USAGE_OUTCOME_CANCELLED: "cancelled",
}
TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
# The ledger's columns in COPY order; recorded_by and recorded_at are filled by the writer and the database.
COLUMNS = (
    "start_time",
    "caller",
    "request_id",
    "attempt",
    "user_id",
    "provider",
    "model",
    "key_id",
    "outcome",
    "failure_reason",
    *TOKEN_FIELDS,
    "cost_usd",
    "price_version",
    "estimated",
    "time_to_first_token_s",
    "duration_s",
    "failover",
    "hedge",
    "recorded_by",
)

Row = tuple[object, ...]


@dataclass(frozen=True)
class UsageBatch:
    """A valid batch: one ledger row per record, in COLUMNS order."""

    rows: list[Row]

    def days(self) -> set[date]:
        return {row[0].date() for row in self.rows}  # type: ignore[attr-defined]


def parse_batch(request: pb.RecordUsageRequest, writer: str, settings: UsageSettings, now: datetime) -> UsageBatch:
    """The batch as ledger rows written by `writer`, or InvalidRequest naming every bad field."""
    count = len(request.records)
    if count == 0:
        raise InvalidRequest("a batch needs at least one record", field_violations=[_v("records", "is empty")])
    if count > settings.max_batch_records:
        raise BatchTooLarge(
            f"{count} records in one batch; at most {settings.max_batch_records}",
            metadata={"limit": "max_batch_records", "max": str(settings.max_batch_records)},
            field_violations=[_v("records", f"has {count} records; at most {settings.max_batch_records}")],
        )
    rows: list[Row] = []
    problems: list[FieldViolation] = []
    latest = now + timedelta(seconds=settings.max_time_ahead_s)
    for index, record in enumerate(request.records):
        found = _check(record, f"records[{index}]", latest)
        if found:
            problems.extend(found)
        elif not problems:
            rows.append(_row(record, writer))
    if problems:
        listed = problems[:MAX_LISTED_VIOLATIONS]
        raise InvalidRequest(
            f"{len(problems)} bad field(s) in the batch; nothing was stored",
            field_violations=listed,
            omitted_violations=len(problems) - len(listed),
        )
    return UsageBatch(rows)


def parse_cost(text: str) -> Decimal | None:
    """A non-negative decimal string within the column's precision, or None."""
    if not text or len(text) > COST_DIGITS + COST_SCALE + 2:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0 or value.as_tuple().exponent < -COST_SCALE:  # type: ignore[operator]
        return None
    return value if value < Decimal(10) ** COST_DIGITS else None


def _check(record: pb.UsageRecord, at: str, latest: datetime) -> list[FieldViolation]:
    found = [
        *_ids(record, at),
        *_texts(record, at),
        *_numbers(record, at),
    ]
    if record.outcome not in OUTCOMES:
        found.append(_v(f"{at}.outcome", "must be SUCCEEDED, FAILED or CANCELLED"))
    if not record.HasField("start_time"):
        found.append(_v(f"{at}.start_time", "is required"))
    elif not datetime(2000, 1, 1, tzinfo=UTC) <= _time(record) <= latest:
        found.append(_v(f"{at}.start_time", "must lie between 2000-01-01 and max_time_ahead_s from now"))
    return found


def _ids(record: pb.UsageRecord, at: str) -> list[FieldViolation]:
    found = [] if valid_id(record.request_id) else [_v(f"{at}.request_id", f"must be {ID_RULE}")]
    # Empty caller: a gateway serving without a callers file (development); empty user: the request named none.
    found += [
        _v(f"{at}.{name}", f"must be empty or {ID_RULE}")
        for name in ("caller", "user_id")
        if getattr(record, name) and not valid_id(getattr(record, name))
    ]
    if record.attempt < 1 or record.attempt > 1000:
        found.append(_v(f"{at}.attempt", "must be 1 to 1000"))
    return found


def _texts(record: pb.UsageRecord, at: str) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    for name in ("provider", "model", "key_id", "failure_reason", "price_version"):
        value: str = getattr(record, name)
        if len(value) > MAX_TEXT_CHARS or "\x00" in value or not value.isprintable():
            found.append(_v(f"{at}.{name}", f"must be at most {MAX_TEXT_CHARS} printable characters"))
    found += [_v(f"{at}.{name}", "is required") for name in ("provider", "model") if not getattr(record, name)]
    return found


def _numbers(record: pb.UsageRecord, at: str) -> list[FieldViolation]:
    found = [
        _v(f"{at}.{name}", f"must be 0 to {MAX_TOKENS}")
        for name in TOKEN_FIELDS
        if not 0 <= getattr(record, name) <= MAX_TOKENS
    ]
    if parse_cost(record.cost_usd) is None:
        found.append(
            _v(f"{at}.cost_usd", f"must be a non-negative decimal string with at most {COST_SCALE} decimal places")
        )
    for name in ("time_to_first_token", "duration"):
        if record.HasField(name) and not 0 <= getattr(record, name).ToTimedelta().total_seconds() <= MAX_DURATION_S:
            found.append(_v(f"{at}.{name}", f"must be 0 to {MAX_DURATION_S:.0f} seconds"))
    return found


def _row(record: pb.UsageRecord, writer: str) -> Row:
    ttft = record.time_to_first_token.ToTimedelta().total_seconds() if record.HasField("time_to_first_token") else None
    return (
        _time(record),
        record.caller,
        record.request_id,
        record.attempt,
        record.user_id,
        record.provider,
        record.model,
        record.key_id,
        OUTCOMES[record.outcome],
        record.failure_reason,
        *(getattr(record, name) for name in TOKEN_FIELDS),
        parse_cost(record.cost_usd),
        record.price_version,
        record.estimated,
        ttft,
        record.duration.ToTimedelta().total_seconds(),
        record.failover,
        record.hedge,
        writer,
    )


def _time(record: pb.UsageRecord) -> datetime:
    seconds, nanos = record.start_time.seconds, record.start_time.nanos
    if not -62135596800 <= seconds <= 253402300799:  # outside datetime's years 1-9999
        return datetime(1, 1, 1, tzinfo=UTC)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanos // 1000)


def _v(field: str, description: str) -> FieldViolation:
    return FieldViolation(field, description)


def summary(written: int, duplicates: int) -> str:
    """The outcome in words."""
    stored = f"stored {written} usage record{'' if written == 1 else 's'}"
    if not duplicates:
        return stored
    return f"{stored}, {duplicates} {'was' if duplicates == 1 else 'were'} stored before"
