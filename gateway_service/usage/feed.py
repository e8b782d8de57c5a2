"""One UsageRecord per attempt made (succeeded, failed or cut), queued off the request path.

`record` (the failover's per-attempt hook, through chat/reporting.py) turns a LedgerEntry into the proto
record and puts it in a bounded BufferedSender, the one telemetry uses: batches of `usage.batch_size`,
retried with backoff while the schema service or its database is away, and what has no room is dropped,
counted (`llm_gateway_usage_dropped_records_total{reason}`) and logged with the number lost.

A record's identity in the ledger is (caller, request_id, attempt, start_time); it is made once, when the
attempt ends, and every retry sends those same bytes, so a batch stored whose answer was lost is
acknowledged as duplicates, never written twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from google.protobuf import duration_pb2, timestamp_pb2

from gateway_service.accounting import Tokens
from gateway_service.api.to_proto import REASONS
from gateway_service.chat.records import LedgerEntry
from gateway_service.config import UsageFeedSettings
from gateway_service.domain.failures import FailureKind
from gateway_service.sender import BufferedSender, SenderSettings
from llmgateway.v1 import chat_service_pb2
from schemaservice.v1 import usage_service_pb2 as upb

Send = Callable[[upb.RecordUsageRequest], Awaitable[None]]


def usage_record(entry: LedgerEntry) -> upb.UsageRecord:
    """The ledger's row for one attempt: the five disjoint token counts, the cost as a decimal string."""
    record, request = entry.record, entry.request
    usage = record.usage
    message = upb.UsageRecord(
        request_id=request.request_id,
        attempt=record.attempt,
        caller=request.caller,
        user_id=request.user_id,
        provider=record.provider,
        model=record.model,
        key_id=entry.key_id,
        outcome=_outcome(entry),
        failure_reason=failure_reason(record.outcome) if isinstance(record.outcome, FailureKind) else "",
        failover=entry.failover,
        hedge=False,  # attempts run one at a time (no hedging yet)
        start_time=timestamp_pb2.Timestamp(
            seconds=entry.start_time_ns // 1_000_000_000, nanos=entry.start_time_ns % 1_000_000_000
        ),
        duration=_duration(record.duration_s),
    )
    if entry.first_token_s is not None:
        message.time_to_first_token.CopyFrom(_duration(entry.first_token_s))
    if usage is not None:
        tokens = Tokens.of(usage)  # the disjoint counts prices apply to
        message.input_tokens = tokens.input
        message.cached_input_tokens = tokens.cached_input
        message.cache_write_tokens = tokens.cache_write
        message.output_tokens = tokens.output
        message.reasoning_tokens = tokens.reasoning
        message.cost_usd = format(usage.cost_usd, "f")
        message.price_version = usage.price_version
        message.estimated = usage.estimated
    else:
        message.cost_usd = "0"
    return message


def failure_reason(kind: FailureKind) -> str:
    """The FailureReason name callers see in ErrorInfo (`FAILURE_REASON_RATE_LIMITED`)."""
    reason = REASONS.get(kind, chat_service_pb2.FAILURE_REASON_UNSPECIFIED)
    if reason == chat_service_pb2.FAILURE_REASON_UNSPECIFIED:
        return f"FAILURE_REASON_{kind.name}"  # a kind with no enum value of its own (content filtered)
    return chat_service_pb2.FailureReason.Name(reason)


def _outcome(entry: LedgerEntry) -> upb.UsageOutcome:
    if entry.record.outcome is not None:
        return upb.USAGE_OUTCOME_FAILED
    return upb.USAGE_OUTCOME_CANCELLED if entry.cancelled else upb.USAGE_OUTCOME_SUCCEEDED


def _duration(seconds: float) -> duration_pb2.Duration:
    nanos = max(int(seconds * 1e9), 0)
    return duration_pb2.Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


class UsageFeed:
    """Usage records to the schema service; `send` is None without one (or with `usage.enabled` false)."""

    def __init__(self, settings: UsageFeedSettings, send: Send | None) -> None:
        self.settings = settings
        self.send = send if settings.enabled else None
        self.sender: BufferedSender[upb.UsageRecord] = BufferedSender(
            "usage records", sender_settings(settings), self._write
        )

    @property
    def enabled(self) -> bool:
        return self.send is not None

    def record(self, entry: LedgerEntry) -> None:
        """Queue one attempt's record; dropped (counted and logged) rather than wait when the buffer is full."""
        if self.send is not None:
            self.sender.put([usage_record(entry)])

    async def run(self) -> None:
        """Send batches until cancelled."""
        await self.sender.run()

    async def close(self) -> None:
        """What waits gets `usage.shutdown_flush_s` to be sent; the rest is dropped and counted."""
        if self.send is not None:
            await self.sender.close(self.settings.shutdown_flush_s)

    async def _write(self, request_id: str, records: Sequence[upb.UsageRecord]) -> None:
        # The batch's request_id is not needed: each record carries its own identity.
        assert self.send is not None
        await self.send(upb.RecordUsageRequest(records=records))


def sender_settings(settings: UsageFeedSettings) -> SenderSettings:
    return SenderSettings(
        buffer_size=settings.buffer_size,
        batch_size=settings.batch_size,
        flush_interval_s=settings.flush_interval_s,
        retry_initial_s=settings.retry_initial_s,
        retry_max_s=settings.retry_max_s,
        retry_for_s=settings.retry_for_s,
    )
