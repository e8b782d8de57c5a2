"""The `usage:` section: how the gateway's usage records reach the schema service's ledger (docs/usage.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

from gateway_service.config.base import Flag, Frozen, NonNegativeFloat, PositiveFloat, PositiveInt, Text

MAX_BATCH_RECORDS = 1000  # what RecordUsage takes in one call


class UsageFeedSettings(Frozen):
    """Usage records (one per attempt) sent to UsageService/RecordUsage; only used with `schema_service`."""

    enabled: Flag = True
    """Send a usage record for every attempt (needs `schema_service` and the role `usage.write` there)."""
    buffer_size: PositiveInt = 100_000
    """Records held in memory, queued or in flight; beyond it new ones are dropped, counted and logged."""
    batch_size: Annotated[int, Strict(), Field(ge=1, le=MAX_BATCH_RECORDS)] = 500
    """Records per RecordUsage call (the schema service takes at most 1,000)."""
    flush_interval_s: NonNegativeFloat = 0.5
    """Longest wait before a partial batch is sent."""
    retry_initial_s: PositiveFloat = 0.5
    """First wait before a failed batch is sent again; it doubles on each failure (with jitter)."""
    retry_max_s: PositiveFloat = 30.0
    """Longest wait between two tries of a batch (a RetryInfo from the schema service may ask for more)."""
    retry_for_s: PositiveFloat = 86_400.0
    """How long a batch is retried before it is dropped (counted, reason `expired`; kept in the spool)."""
    shutdown_flush_s: NonNegativeFloat = 5.0
    """On shutdown, how long what waits may take to be sent (what is left stays in the spool, if any)."""
    spool_dir: Text | None = None
    """A directory where records are written (fsync per batch) before they count as accepted, replayed at
    start-up and deleted once the schema service acknowledged them; none: memory only."""
    spool_max_bytes: PositiveInt = 256 * 1024 * 1024
    """Largest size of the spool's files; a record that does not fit is dropped, counted and logged."""
