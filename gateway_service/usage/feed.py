"""One UsageRecord per attempt made (succeeded, failed or cut), queued off the request path.

`record` (the failover's per-attempt hook, through chat/reporting.py) turns a LedgerEntry into the proto
record and puts it in a bounded BufferedSender, the one telemetry uses: batches of `usage.batch_size`,
retried with backoff while the schema service or its database is away, and what has no room is dropped,
counted (`llm_gateway_usage_dropped_records_total{reason}`) and logged with the number lost.

A record's identity in the ledger is (caller, request_id, attempt, start_time); it is made once, when the
attempt ends, and every retry sends those same bytes, so a batch stored whose answer was lost is
acknowledged as duplicates, never written twice. With `usage.spool_dir` the records are on disk before they
count as accepted (spool.py), and a restart replays them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import duration_pb2, timestamp_pb2

from gateway_service.accounting import Tokens
from gateway_service.chat.records import LedgerEntry
from gateway_service.config import UsageFeedSettings
from gateway_service.domain.failures import FailureKind
from gateway_service.sender import BufferedSender, SenderSettings
from gateway_service.usage.spool import Replayed, Spool, SpoolFull
from schemaservice.v1 import usage_service_pb2 as upb

log = logging.getLogger(__name__)

Send = Callable[[upb.RecordUsageRequest], Awaitable[None]]
MAX_FRAME_RECORDS = 1000  # records per spool frame (one fsync each)


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
        hedge=record.hedge,
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
    """The FailureReason name callers see in ErrorInfo (`FAILURE_REASON_RATE_LIMITED`); a kind with no enum
    value of its own (content filtered) is named the same way. Made from the kind's name, not from api/'s
    table, so that the feed (which app.py builds) does not import the gRPC face that imports app.py."""
    return f"FAILURE_REASON_{kind.name}"


def _outcome(entry: LedgerEntry) -> upb.UsageOutcome:
    if entry.record.outcome is not None:
        return upb.USAGE_OUTCOME_FAILED
    return upb.USAGE_OUTCOME_CANCELLED if entry.cancelled else upb.USAGE_OUTCOME_SUCCEEDED


def _duration(seconds: float) -> duration_pb2.Duration:
    nanos = max(int(seconds * 1e9), 0)
    return duration_pb2.Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


@dataclass(frozen=True)
class Spooled:
    """A queued record and the spool segment it is on disk in (0: no spool)."""

    record: upb.UsageRecord
    segment: int = 0


class UsageFeed:
    """Usage records to the schema service; `send` is None without one (or with `usage.enabled` false).

    With `usage.spool_dir` a record is first written to the spool (fsync per batch, spool.py) and only then
    queued; the spool is replayed when `run` starts, and a segment is deleted once all its records were
    acknowledged. Room in the queue is reserved for the records on their way to disk, so a record the spool
    accepted always finds room in memory.
    """

    def __init__(self, settings: UsageFeedSettings, send: Send | None) -> None:
        self.settings = settings
        self.send = send if settings.enabled else None
        self.sender: BufferedSender[Spooled] = BufferedSender(
            "usage records", sender_settings(settings), self._write, on_drop=self._given_up
        )
        directory = settings.spool_dir
        self.spool = Spool(Path(directory), settings.spool_max_bytes) if directory and self.send else None
        self.replayed = 0  # records read back from the spool at start-up
        self._unspooled: list[upb.UsageRecord] = []  # accepted in memory, on their way to disk
        self._outstanding: Counter[int] = Counter()  # spool segment -> records not yet acknowledged
        self._wake = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self.send is not None

    def record(self, entry: LedgerEntry) -> None:
        """Queue one attempt's record; dropped (counted and logged) rather than wait when the buffer is full."""
        if self.send is None:
            return
        if self.spool is None:
            self.sender.put([Spooled(usage_record(entry))])
        elif self.sender.room - len(self._unspooled) < 1:
            self.sender.drop("buffer_full", 1)
        else:
            self._unspooled.append(usage_record(entry))
            self._wake.set()

    async def run(self) -> None:
        """Replay the spool, then send batches (and keep the spool) until cancelled."""
        if self.spool is None:
            await self.sender.run()
            return
        replayed = await asyncio.to_thread(self.spool.replay)
        for segment in replayed:
            self._outstanding[segment.segment] = len(segment.records)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.sender.run())
            tasks.create_task(self._keep_spool())
            tasks.create_task(self._replay(replayed))

    async def close(self) -> None:
        """What waits gets `usage.shutdown_flush_s` to be sent; the rest is dropped and counted, or with a
        spool stays on disk for the next start."""
        if self.send is None:
            return
        if self.spool is None:
            await self.sender.close(self.settings.shutdown_flush_s)
            return
        await self._spool_step()  # what was accepted goes to disk first
        left = await self.sender.close(self.settings.shutdown_flush_s, keep_left=True)
        await self._spool_step()
        await asyncio.to_thread(self.spool.close)
        if left:
            log.info("usage records left in the spool for the next start", extra={"records": left})

    async def _keep_spool(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._spool_step()

    async def _spool_step(self) -> None:
        """Write what waits to the spool and queue it; delete the segments every record of which is done."""
        assert self.spool is not None
        while self._unspooled:
            records = self._unspooled[:MAX_FRAME_RECORDS]
            del self._unspooled[:MAX_FRAME_RECORDS]
            try:
                segment = await asyncio.to_thread(self.spool.append, records)
            except (SpoolFull, OSError) as exc:
                self.sender.drop("spool_full", len(records), str(exc))
                continue
            self._outstanding[segment] += len(records)
            self.sender.put([Spooled(record, segment) for record in records])
        for segment in [s for s in self.spool.sizes if self._outstanding[s] <= 0]:
            self._outstanding.pop(segment, None)
            await asyncio.to_thread(self.spool.remove, segment)

    async def _replay(self, replayed: list[Replayed]) -> None:
        """The spool's records into the queue, as room allows (live records get what the replay leaves)."""
        for segment in replayed:
            pending = segment.records
            while pending:
                await self.sender.until(lambda: self.sender.room - len(self._unspooled) > 0)
                count = min(self.sender.room - len(self._unspooled), len(pending))
                self.sender.put([Spooled(record, segment.segment) for record in pending[:count]])
                self.replayed += count
                pending = pending[count:]
        if replayed:
            log.info("usage spool replayed", extra={"records": self.replayed, "segments": len(replayed)})
            self._wake.set()  # segments with nothing left to send are deleted

    def _settle(self, items: Sequence[Spooled]) -> None:
        """These records are done with (acknowledged, or refused for good): their segments may go."""
        if self.spool is None:
            return
        for item in items:
            self._outstanding[item.segment] -= 1
        if any(self._outstanding[item.segment] <= 0 for item in items):
            self._wake.set()

    def _given_up(self, reason: str, items: Sequence[Spooled]) -> None:
        if reason == "rejected":  # no retry can store them; an expired batch stays on disk for the next start
            self._settle(items)

    async def _write(self, request_id: str, items: Sequence[Spooled]) -> None:
        # The batch's request_id is not needed: each record carries its own identity.
        assert self.send is not None
        await self.send(upb.RecordUsageRequest(records=[item.record for item in items]))
        self._settle(items)


def sender_settings(settings: UsageFeedSettings) -> SenderSettings:
    return SenderSettings(
        buffer_size=settings.buffer_size,
        batch_size=settings.batch_size,
        flush_interval_s=settings.flush_interval_s,
        retry_initial_s=settings.retry_initial_s,
        retry_max_s=settings.retry_max_s,
        retry_for_s=settings.retry_for_s,
    )
