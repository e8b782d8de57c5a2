"""Validation of a RecordUsage batch, turned into ledger rows in the same pass.

A batch with any bad record is refused whole: every bad field is named with its index
(`records[3].cost_usd`), up to MAX_LISTED_VIOLATIONS (servicekit.errors) so the error fits in gRPC trailers;
the rest are counted. Cost is a decimal string parsed into a `Decimal` (never a float), at most
COST_DIGITS digits before the point and COST_SCALE after it, the shape of the column (numeric(24, 12)).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from operator import attrgetter

from schema_service.config import UsageSettings
from schema_service.database import PG_EPOCH_US
from schema_service.errors import BatchTooLarge, InvalidRequest
from schemaservice.v1 import usage_service_pb2 as pb
from servicekit.errors import MAX_LISTED_VIOLATIONS, FieldViolation
from servicekit.ids import ID_RULE, MAX_ID_CHARS, valid_id

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
TEXT_FIELDS = ("provider", "model", "key_id", "failure_reason", "price_version")
REQUIRED_TEXTS = (0, 1)  # provider and model, by position in TEXT_FIELDS
MAX_ATTEMPT = 1000
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
EARLIEST_US = int(EARLIEST.timestamp()) * 1_000_000
DAY_US = 86_400 * 1_000_000
CHUNK = 250  # records parsed while the chunk before is being stored (see ledger.py)
EPOCH_DAY = date(1970, 1, 1)
_ATTEMPT, _OUTCOME, _COST_TEXT = attrgetter("attempt"), attrgetter("outcome"), attrgetter("cost_usd")
_START, _DURATION = attrgetter("start_time"), attrgetter("duration")
_IDS = re.compile(r"(?:[\x21-\x7e]{1,%d}\n)*[\x21-\x7e]{1,%d}" % (MAX_ID_CHARS, MAX_ID_CHARS))
_OPTIONAL_IDS = re.compile(r"(?:[\x21-\x7e]{0,%d}\n)*[\x21-\x7e]{0,%d}" % (MAX_ID_CHARS, MAX_ID_CHARS))
_COST_PATTERN = r"[0-9]{1,%d}(?:\.[0-9]{1,%d})?" % (COST_DIGITS, COST_SCALE)
_COST = re.compile(_COST_PATTERN)
_COSTS = re.compile(r"(?:%s\n)*%s" % (_COST_PATTERN, _COST_PATTERN))
COST_RULE = f"a decimal string of at most {COST_DIGITS} digits, a point and at most {COST_SCALE} decimals (`0.008`)"
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


class UsageBatch:
    """A RecordUsage batch on its way into ledger rows (COLUMNS order), parsed CHUNK records at a time, so that
    the writer can COPY one chunk while the next is parsed; refused whole, naming every bad field, as soon as
    any chunk holds one (check() for all of it at once).

    Rows hold the start time in asyncpg's tuple form, (microseconds since 2000-01-01 UTC,), for a connection that
    exchanges times so (database.micro_times_codec); with `micro_times=False` they hold datetimes, for any other.
    `micros` are the start times as integer microseconds since the Unix epoch, in record order.

    Each chunk takes the fast path: each field read once per record into a column, and each column checked as a
    whole (one regular expression over the joined ids, min and max of the numbers). Only a batch that fails
    there is checked record by record, to name every bad field.
    """

    def __init__(self, records: Sequence[pb.UsageRecord], writer: str, latest: datetime) -> None:
        # One wrapper per record, kept for every column: walking the container again makes them anew each time.
        self._records = list(records)
        self._writer, self._latest = writer, latest
        # An unset start_time reads as 1970, before EARLIEST: refused here without asking HasField.
        self.micros = [t.seconds * 1_000_000 + t.nanos // 1000 for t in map(_START, self._records)]
        self._chunks: list[list[Row]] = []
        if not EARLIEST_US <= min(self.micros) or max(self.micros) > latest.timestamp() * 1e6:
            raise self._refusal()  # before days() names a partition for a time that is never stored

    def __len__(self) -> int:
        return len(self._records)

    def days(self) -> set[date]:
        first, last = min(self.micros) // DAY_US, max(self.micros) // DAY_US
        numbers = range(first, last + 1) if last - first <= 1 else {us // DAY_US for us in self.micros}
        return {EPOCH_DAY + timedelta(days=n) for n in numbers}

    def chunks(self, *, micro_times: bool = True) -> Iterator[list[Row]]:
        """The rows, CHUNK records at a time, each parsed when asked for (and kept); InvalidRequest at the
        first chunk holding a bad field."""
        for index, start in enumerate(range(0, len(self._records), CHUNK)):
            if index == len(self._chunks):
                end = start + CHUNK
                rows = _rows(self._records[start:end], self.micros[start:end], self._writer)
                if rows is None:
                    raise self._refusal()
                self._chunks.append(rows)
            yield self._chunks[index] if micro_times else _with_datetimes(self._chunks[index])

    def rows(self, *, micro_times: bool = True) -> list[Row]:
        """Every row (InvalidRequest as chunks())."""
        return [row for chunk in self.chunks(micro_times=micro_times) for row in chunk]

    def check(self) -> None:
        """InvalidRequest naming every bad field, if the batch has one."""
        for _ in self.chunks():
            pass

    def _refusal(self) -> InvalidRequest:
        latest = self._latest
        problems = [v for i, record in enumerate(self._records) for v in _check(record, f"records[{i}]", latest)]
        # The two checks state the same rules; should they ever disagree at an edge, refuse rather than store.
        problems = problems or [_v("records", "a record breaks a rule of the ledger (see docs/usage.md)")]
        listed = problems[:MAX_LISTED_VIOLATIONS]
        return InvalidRequest(
            f"{len(problems)} bad field(s) in the batch; nothing was stored",
            field_violations=listed,
            omitted_violations=len(problems) - len(listed),
        )


def parse_batch(request: pb.RecordUsageRequest, writer: str, settings: UsageSettings, now: datetime) -> UsageBatch:
    """The batch written by `writer`, to be parsed into ledger rows as it is written; InvalidRequest or
    BatchTooLarge at once for a batch empty, too large, or with a start time out of range."""
    count = len(request.records)
    if count == 0:
        raise InvalidRequest("a batch needs at least one record", field_violations=[_v("records", "is empty")])
    if count > settings.max_batch_records:
        raise BatchTooLarge(
            f"{count} records in one batch; at most {settings.max_batch_records}",
            metadata={"limit": "max_batch_records", "max": str(settings.max_batch_records)},
            field_violations=[_v("records", f"has {count} records; at most {settings.max_batch_records}")],
        )
    return UsageBatch(request.records, writer, now + timedelta(seconds=settings.max_time_ahead_s))


def _rows(records: list[pb.UsageRecord], micros: list[int], writer: str) -> list[Row] | None:
    """The ledger rows of valid records (start times checked already), or None when any field of any is bad."""
    ids, callers, users = (list(map(attrgetter(name), records)) for name in ("request_id", "caller", "user_id"))
    texts = [list(map(attrgetter(name), records)) for name in TEXT_FIELDS]
    attempts, outcomes = list(map(_ATTEMPT, records)), list(map(_OUTCOME, records))
    tokens = [list(map(attrgetter(name), records)) for name in TOKEN_FIELDS]
    cost_texts = list(map(_COST_TEXT, records))
    durations = [d.seconds + d.nanos * 1e-9 for d in map(_DURATION, records)]
    ttfts = list(map(_seconds_or_none, records))
    checks = (
        _IDS.fullmatch("\n".join(ids)) is not None,
        _OPTIONAL_IDS.fullmatch("\n".join(callers + users)) is not None,
        all(max(map(len, column)) <= MAX_TEXT_CHARS and "".join(column).isprintable() for column in texts),
        all(min(map(len, texts[i])) > 0 for i in REQUIRED_TEXTS),
        1 <= min(attempts) and max(attempts) <= MAX_ATTEMPT,
        set(outcomes) <= OUTCOMES.keys(),
        all(0 <= min(column) and max(column) <= MAX_TOKENS for column in tokens),
        _COSTS.fullmatch("\n".join(cost_texts)) is not None,
        0 <= min(durations) and max(durations) <= MAX_DURATION_S,
        all(t is None or 0 <= t <= MAX_DURATION_S for t in ttfts),
    )
    if not all(checks):
        return None
    times = [(us - PG_EPOCH_US,) for us in micros]
    provider, model, key_id, reason, version = texts
    flags = [list(map(attrgetter(name), records)) for name in ("estimated", "failover", "hedge")]
    outcome_names = list(map(OUTCOMES.__getitem__, outcomes))
    costs = list(map(Decimal, cost_texts))
    columns: list[Sequence[object]] = [times, callers, ids, attempts, users, provider, model, key_id, outcome_names]
    columns += [reason, *tokens, costs, version, flags[0], ttfts, durations, flags[1], flags[2], [writer] * len(ids)]
    return list(zip(*columns, strict=True))


def _with_datetimes(rows: list[Row]) -> list[Row]:
    # A float of seconds names each microsecond exactly (error under 0.3 us until 2255) and fromtimestamp
    # rounds to the nearest: the microsecond sent, at half the cost of epoch + timedelta.
    from_ts = datetime.fromtimestamp
    return [(from_ts((row[0][0] + PG_EPOCH_US) / 1e6, UTC), *row[1:]) for row in rows]  # type: ignore[index]


def _seconds_or_none(record: pb.UsageRecord) -> float | None:
    if not record.HasField("time_to_first_token"):
        return None
    ttft = record.time_to_first_token
    return ttft.seconds + ttft.nanos * 1e-9


def parse_cost(text: str) -> Decimal | None:
    """A decimal string in the column's shape (COST_RULE), or None."""
    return Decimal(text) if _COST.fullmatch(text) else None


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
    elif not EARLIEST <= _time(record) <= latest:
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
    if not 1 <= record.attempt <= MAX_ATTEMPT:
        found.append(_v(f"{at}.attempt", f"must be 1 to {MAX_ATTEMPT}"))
    return found


def _texts(record: pb.UsageRecord, at: str) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    for name in TEXT_FIELDS:
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
        found.append(_v(f"{at}.cost_usd", f"must be {COST_RULE}"))
    for name in ("time_to_first_token", "duration"):
        if record.HasField(name) and not 0 <= getattr(record, name).ToTimedelta().total_seconds() <= MAX_DURATION_S:
            found.append(_v(f"{at}.{name}", f"must be 0 to {MAX_DURATION_S:.0f} seconds"))
    return found


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
